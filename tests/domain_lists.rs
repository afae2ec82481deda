//! `hold_domains` and `relay_domains` in files, end to end: queue-smtpd on a loopback port
//! taking mail for ten thousand domains from a file and noticing a new file without a restart,
//! queue-run holding the domains of a hold file, and every program refusing a file it cannot
//! use with exit 78 and one line.
//!
//! Each test has its own site (queue, configuration, log, list files) and ports, and stops the
//! daemons it starts. Waits poll, bounded by the support module's patience.

mod support;

use std::path::{Path, PathBuf};

use support::daemon::*;
use support::site::{SENDER, Site, message};
use support::smtp::{Script, Server};

/// The reply queue-smtpd gives a recipient whose domain it does not take, as it has always
/// worded it.
fn denied(to: &str) -> String {
    format!("554 5.7.1 <{to}>: Relay access denied")
}

/// A list file of `count` customer domains, `site0.test` to `site{count-1}.test`, written as
/// the source of a Postfix map: a second column, comments and blank lines.
fn customers(count: usize) -> String {
    let mut text = String::from("# customer domains of the backup MX\n\n");
    for n in 0..count {
        text.push_str(&format!("site{n}.test\tOK\n"));
    }
    text
}

/// Replaces `path` with `text` as an administrator does: a new file renamed into place.
fn replace(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write the new list");
    std::fs::rename(&new, path).expect("rename the new list into place");
}

/// A site whose relay domains are the file `relay` in its directory, holding `text`.
fn relay_file_site(text: &str) -> (Site, PathBuf) {
    let site = Site::with_text("");
    let path = site.file("relay", text);
    site.configure(&format!(
        "hostnames = [\"mx2.isp.test\"]\nrelay_domains = {:?}\n",
        path.display().to_string()
    ));
    (site, path)
}

/// The reply to `RCPT TO:<to>` in a session of its own, MAIL first.
fn rcpt(daemon: &Daemon, to: &str) -> (u16, String) {
    let mut s = daemon.session();
    s.hello();
    s.expect("MAIL FROM:<alice@example.test>", 250);
    let reply = s.command(&format!("RCPT TO:<{to}>"));
    s.expect("QUIT", 221);
    reply
}

#[test]
fn ten_thousand_relay_domains_from_a_file_take_the_listed_and_refuse_the_rest() {
    let (site, _) = relay_file_site(&customers(10_000));
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    for to in [
        "user@site0.test",
        "user@SITE4321.test",
        "user@site9999.test",
    ] {
        let (code, text) = s.message(to, b"Subject: listed\r\n\r\nin the file");
        assert_eq!(code, 250, "{to}: {text}");
    }
    s.expect("MAIL FROM:<alice@example.test>", 250);
    for to in [
        "user@site10000.test",
        "user@sub.site1.test",
        "user@test",
        "user@ok",
    ] {
        let (code, text) = s.command(&format!("RCPT TO:<{to}>"));
        assert_eq!((code, text), (554, denied(to)));
    }
    s.expect("QUIT", 221);
    assert_eq!(site.queued_ids().len(), 3);
}

#[test]
fn a_file_replaced_by_rename_or_rewritten_is_read_without_a_restart() {
    let (site, path) = relay_file_site("one.test\ntwo.test\n");
    let daemon = site.start(&[]);
    assert_eq!(rcpt(&daemon, "u@one.test").0, 250);
    assert_eq!(rcpt(&daemon, "u@three.test").1, denied("u@three.test"));

    replace(&path, "one.test\nthree.test\n");
    poll_until("queue-smtpd to take the renamed list", || {
        rcpt(&daemon, "u@three.test").0 == 250
    });
    assert_eq!(rcpt(&daemon, "u@two.test").1, denied("u@two.test"));
    assert_eq!(rcpt(&daemon, "u@one.test").0, 250);
    assert!(
        site.log()
            .contains("relay_domains read again: 2 domains (was 2)"),
        "{}",
        site.log()
    );

    std::fs::write(&path, "one.test\nthree.test\nfour.test\n").expect("rewrite in place");
    poll_until("queue-smtpd to take the list rewritten in place", || {
        rcpt(&daemon, "u@four.test").0 == 250
    });
    assert_eq!(rcpt(&daemon, "u@three.test").0, 250);
}

#[test]
fn a_broken_replacement_keeps_the_last_good_list_and_the_log_says_why() {
    let (site, path) = relay_file_site("one.test\n");
    let daemon = site.start(&[]);
    replace(&path, "one.test\ntwo.test\nnot@a.domain\n");
    let complaint = format!(
        "warning: relay_domains: {}:3: \"not@a.domain\"",
        path.display()
    );
    poll_until("queue-smtpd to find the broken list", || {
        let _ = rcpt(&daemon, "u@one.test");
        site.log().contains(&complaint)
    });
    assert!(
        site.log()
            .contains("; the 1 domains read before stay in use"),
        "{}",
        site.log()
    );
    assert_eq!(rcpt(&daemon, "u@one.test").0, 250, "the old list serves");
    assert_eq!(rcpt(&daemon, "u@two.test").1, denied("u@two.test"));

    std::fs::remove_file(&path).expect("remove the list");
    poll_until("queue-smtpd to find the list gone", || {
        let _ = rcpt(&daemon, "u@one.test");
        site.log().contains("No such file or directory")
    });
    assert_eq!(rcpt(&daemon, "u@one.test").0, 250, "the old list serves");

    replace(&path, "two.test\n");
    poll_until("queue-smtpd to take the mended list", || {
        rcpt(&daemon, "u@two.test").0 == 250
    });
    assert_eq!(rcpt(&daemon, "u@one.test").1, denied("u@one.test"));
    assert_eq!(site.log().matches(&complaint).count(), 1, "said once");
    assert_eq!(site.queued_ids().len(), 0);
}

#[test]
fn inetd_sessions_read_the_file_as_it_is_now() {
    let (site, path) = relay_file_site("one.test\n");
    let session = |to: &str| {
        let output = site
            .command("queue-smtpd")
            .arg("--inetd")
            .write_stdin(format!(
                "EHLO client.test\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<{to}>\r\nQUIT\r\n"
            ))
            .output()
            .expect("run queue-smtpd --inetd");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(session("u@one.test").contains("250 2.1.5 Ok"));
    replace(&path, "two.test\n");
    assert!(session("u@two.test").contains("250 2.1.5 Ok"));
    assert!(session("u@one.test").contains(&denied("u@one.test")));
}

/// A site holding the domains of a hold file (`held.test` among a thousand others), all
/// routed to `mta`.
fn hold_file_site(mta: &Server) -> Site {
    let site = Site::with_text("");
    let path = site.file(
        "hold",
        &format!("{}held.test  # since May\n", customers(1000)),
    );
    site.configure(&format!(
        "hostnames = [\"mx2.isp.test\"]\nhold_domains = {:?}\n{}",
        path.display().to_string(),
        mta.routes(&["held.test", "sub.held.test", "other.test"])
    ));
    site
}

#[test]
fn queue_run_holds_the_domains_of_a_hold_file_until_a_run_names_them() {
    let mta = Script::default().start();
    let site = hold_file_site(&mta);
    let held = site.enqueue(
        &["-f", SENDER, "h@held.test", "s@sub.held.test"],
        &message("held", "waits for ETRN\n"),
    );
    site.enqueue(&["-f", SENDER, "o@other.test"], &message("o", "goes\n"));
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rcpts = |mta: &Server| -> Vec<String> {
        mta.commands()
            .into_iter()
            .filter(|c| c.to_ascii_uppercase().starts_with("RCPT TO:"))
            .collect()
    };
    assert_eq!(rcpts(&mta), ["RCPT TO:<o@other.test>"]);
    assert!(site.entry(&held).is_some(), "held mail stays");

    let run = site.run(&["-R", "held.test"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        rcpts(&mta),
        ["RCPT TO:<o@other.test>", "RCPT TO:<h@held.test>"]
    );
    let run = site.run(&["-R", "@held.test"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(site.entry(&held).is_none(), "delivered, subdomain and all");
    assert_eq!(site.queued_ids().len(), 0);
}

#[test]
fn a_list_file_that_cannot_be_used_is_exit_78_with_one_line() {
    let site = Site::with_text("");
    let bad = site.file("bad", "one.test\nbad!domain OK\n");
    let dir = site.dir.path().display().to_string();
    let cases = [
        (
            format!("relay_domains = \"{dir}/missing\""),
            format!("relay_domains: {dir}/missing: No such file or directory"),
        ),
        (
            format!("hold_domains = [\"a.test\", \"{dir}\"]"),
            format!("hold_domains: {dir}: not a regular file"),
        ),
        (
            format!("relay_domains = [\"{}\"]", bad.display()),
            format!("relay_domains: {}:2: \"bad!domain\"", bad.display()),
        ),
    ];
    for (key, wanted) in cases {
        site.configure(&key);
        for (program, args) in [
            ("queue-smtpd", &["--listen", "127.0.0.1:1"][..]),
            ("queue-run", &[][..]),
            ("mailq", &[][..]),
        ] {
            let out = site.command(program).args(args).output().expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{program} {key}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{program}: {stderr}");
            assert!(stderr.contains(&wanted), "{program}: {stderr}");
            assert!(
                stderr.contains(&site.config_path().display().to_string()),
                "{stderr}"
            );
        }
    }
    assert!(!site.queue_dir().join("env").exists(), "nothing started");
}

#[test]
fn a_repeating_queue_run_reads_a_changed_hold_file_before_its_next_pass() {
    let mta = Script::default().start();
    let site = hold_file_site(&mta);
    let hold = site.dir.path().join("hold");
    site.enqueue(&["-f", SENDER, "h@held.test"], &message("held", "x\n"));
    site.enqueue(&["-f", SENDER, "o@other.test"], &message("other", "y\n"));
    let mut runner = Running(
        site.std_command("queue-run")
            .arg("-q1s")
            .spawn()
            .expect("start queue-run -q1s"),
    );
    let delivered = |to: &str| {
        mta.commands()
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&format!("RCPT TO:<{to}>")))
    };
    poll_until("a pass to deliver other.test", || delivered("o@other.test"));
    assert!(!delivered("h@held.test"), "held by the file");

    replace(&hold, &customers(1000));
    poll_until("a pass to deliver held.test, no longer held", || {
        delivered("h@held.test")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM queue-run");
    assert!(runner.0.wait().expect("queue-run ends").success());
    assert!(
        site.log()
            .contains("hold_domains read again: 1000 domains (was 1001)"),
        "{}",
        site.log()
    );
}

/// A program the test started, killed when the test ends early.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
