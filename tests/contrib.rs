//! The scripts in contrib/: the demos, the sendmail wrapper, the ssh forced command and the
//! module graph.
//!
//! Each is run as an administrator would install it, with stub programs first in its search
//! path that record the words they were given, and (for the sendmail wrapper) once with the real
//! programs against the scripted SMTP server.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::site::Site;
use support::smtp::Script;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name)
}

/// A directory of stub programs that append "program [word] [word]..." to `calls`.
struct Stubs {
    dir: tempfile::TempDir,
}

impl Stubs {
    fn new() -> Stubs {
        let dir = tempfile::tempdir().expect("stub dir");
        for program in ["queue-run", "queue-enqueue", "mailq", "queue-admin"] {
            // Written by a child process: a file this process held open for writing would be
            // inherited by whatever another test thread forks meanwhile, and executing the stub
            // would then fail with "Text file busy" until that child had started its program.
            let written = Command::new("sh")
                .args(["-c", "printf '%s' \"$1\" >\"$2\" && chmod 755 \"$2\"", "sh"])
                .arg(
                    "#!/bin/sh\n\
                     { printf '%s' \"${0##*/}\"; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; } \
                     >>\"$STUB_CALLS\"\n",
                )
                .arg(dir.path().join(program))
                .status()
                .expect("write stub");
            assert!(written.success(), "cannot write the {program} stub");
        }
        Stubs { dir }
    }

    fn calls_path(&self) -> PathBuf {
        self.dir.path().join("calls")
    }

    /// The calls made so far, one line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.calls_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// PATH with the stubs first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

struct Ran {
    code: i32,
    stderr: String,
}

fn sendmail(stubs: &Stubs, name: &str, args: &[&str]) -> Ran {
    // Installed under another name (mailq) through a link, as administrators do.
    let link_dir = tempfile::tempdir().expect("link dir");
    let link = link_dir.path().join(name);
    std::os::unix::fs::symlink(script("sendmail"), &link).expect("symlink");
    let output = Command::new(&link)
        .args(args)
        .env("ETRNQ_BINDIR", stubs.dir.path())
        .env("STUB_CALLS", stubs.calls_path())
        .output()
        .expect("run the sendmail wrapper");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn sendmail_wrapper_maps_each_mode_onto_a_program() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("sendmail", &["-q"], "queue-run [-q]"),
        (
            "sendmail",
            &["-q", "-R", "NCR.com"],
            "queue-run [-q] [-R] [NCR.com]",
        ),
        ("sendmail", &["-qRNCR.com"], "queue-run [-qRNCR.com]"),
        ("sendmail", &["-qR", "NCR.com"], "queue-run [-qR] [NCR.com]"),
        ("sendmail", &["-qf"], "queue-run [-qf]"),
        ("sendmail", &["-q30m"], "queue-run [-q30m]"),
        (
            "sendmail",
            &["-v", "-qIabc", "-odq", "-O", "LogLevel=9"],
            "queue-run [-v] [-qIabc]",
        ),
        ("sendmail", &["-bp"], "mailq"),
        (
            "sendmail",
            &["-bp", "-qRcustomer.test"],
            "mailq [-qRcustomer.test]",
        ),
        ("mailq", &["-v"], "mailq [-v]"),
        // sendmail's quarantine: -qQ lists it, -Qreason holds, -Q alone releases.
        ("sendmail", &["-qQ"], "mailq [--held]"),
        ("mailq", &["-qQ", "-v"], "mailq [--held] [-v]"),
        (
            "sendmail",
            &["-bp", "-qQ", "-qRcustomer.test"],
            "mailq [--held] [-qRcustomer.test]",
        ),
        (
            "sendmail",
            &["-Qspam run", "-qIabc"],
            "queue-admin [hold] [-qIabc]",
        ),
        (
            "sendmail",
            &["-v", "-qSbob", "-Qflood", "-odq", "-O", "LogLevel=9"],
            "queue-admin [hold] [-qSbob]",
        ),
        (
            "sendmail",
            &["-Q", "-qR", "customer.test"],
            "queue-admin [release] [-qR] [customer.test]",
        ),
        (
            "sendmail",
            &["-t", "-i", "-f", "frank@sender.test", "-odq"],
            "queue-enqueue [-t] [-i] [-f] [frank@sender.test] [-odq]",
        ),
        (
            "sendmail",
            &["-oi", "a@b.test"],
            "queue-enqueue [-oi] [a@b.test]",
        ),
        // An option's value is never taken for a mode.
        (
            "sendmail",
            &["-f", "-bp", "a@b.test"],
            "queue-enqueue [-f] [-bp] [a@b.test]",
        ),
        // Words with spaces and shell syntax arrive as the same single words.
        (
            "sendmail",
            &["-F", "Frank $(id) `id` ; *", "a@b.test"],
            "queue-enqueue [-F] [Frank $(id) `id` ; *] [a@b.test]",
        ),
    ];
    for (name, args, expected) in cases {
        let stubs = Stubs::new();
        let ran = sendmail(&stubs, name, args);
        assert_eq!(ran.code, 0, "{name} {args:?}: {}", ran.stderr);
        assert_eq!(stubs.calls(), [expected.to_string()], "{name} {args:?}");
    }
}

#[test]
fn sendmail_wrapper_refuses_modes_it_does_not_provide() {
    for mode in ["-bd", "-bs", "-bt", "-bv", "-bi"] {
        let stubs = Stubs::new();
        let ran = sendmail(&stubs, "sendmail", &[mode, "-q30m"]);
        assert_eq!(ran.code, 64, "{mode}");
        assert!(ran.stderr.contains(mode), "{mode}: {}", ran.stderr);
        assert!(stubs.calls().is_empty(), "{mode}: nothing ran");
    }
}

#[test]
fn an_old_crontab_line_flushes_a_domain_through_the_wrapper() {
    let mta = Script::default().start();
    let site = Site::new(&format!(
        "hold_domains = [\"ncr.com\"]\n[routes]\n\"ncr.com\" = {:?}\n",
        mta.route()
    ));
    let bin = assert_cmd::cargo::cargo_bin("queue-run");
    let bindir = bin.parent().expect("target dir");
    let wrapper = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut child = Command::new(script("sendmail"))
            .args(args)
            .env("ETRNQ_BINDIR", bindir)
            .env("ETRNQ_CONFIG", site.config_path())
            .env_remove("ETRNQ_QUEUE_DIR")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("wrapper runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("input");
        let output = child.wait_with_output().expect("wrapper ends");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = wrapper(
        &["-t", "-i", "-f", "frank@sender.test", "-odq"],
        b"To: ops@NCR.com\nSubject: from an old script\n\nhello\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, listing, stderr) = wrapper(&["-bp"], b"");
    assert_eq!(code, 0, "{stderr}");
    assert!(listing.contains("ops@NCR.com"), "{listing}");
    assert!(listing.contains("Total requests: 1"), "{listing}");
    let (code, stdout, stderr) = wrapper(&["-q"], b"");
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert_eq!(
        mta.message_count(),
        0,
        "a plain run leaves the held domain alone"
    );
    let (code, stdout, stderr) = wrapper(&["-q", "-R", "NCR.com"], b"");
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let messages = mta.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients, ["ops@NCR.com"]);
    assert!(site.ids().is_empty());
}

#[test]
fn sendmail_quarantine_holds_lists_and_releases_through_the_wrapper() {
    let mta = Script::default().start();
    let site = Site::new(&format!("[routes]\n\"ncr.com\" = {:?}\n", mta.route()));
    let bindir = assert_cmd::cargo::cargo_bin("queue-admin");
    let bindir = bindir.parent().expect("target dir").to_path_buf();
    let wrapper = |name: &str, args: &[&str]| {
        let link_dir = tempfile::tempdir().expect("link dir");
        let link = link_dir.path().join(name);
        std::os::unix::fs::symlink(script("sendmail"), &link).expect("symlink");
        let output = Command::new(&link)
            .args(args)
            .env("ETRNQ_BINDIR", &bindir)
            .env("ETRNQ_CONFIG", site.config_path())
            .env_remove("ETRNQ_QUEUE_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("wrapper runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let id = site.enqueue(
        &["-f", "frank@sender.test", "ops@ncr.com"],
        b"Subject: quarantined\n\nhello\n",
    );
    let (code, _, stderr) = wrapper("sendmail", &["-Qsuspicious"]);
    assert_eq!(code, 64, "no selection is no quarantine: {stderr}");
    let (code, stdout, stderr) = wrapper("sendmail", &["-Qsuspicious", &format!("-qI{id}")]);
    assert_eq!(
        (code, stdout.trim()),
        (0, &*format!("{id}: held")),
        "{stderr}"
    );
    let (code, listing, _) = wrapper("mailq", &["-qQ"]);
    assert_eq!(code, 0);
    assert!(listing.contains(&format!("{id}!")), "{listing}");
    assert!(listing.contains("Total requests: 1"), "{listing}");
    let (code, _, stderr) = wrapper("sendmail", &["-qf"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mta.message_count(), 0, "quarantined mail is not delivered");
    let (code, stdout, stderr) = wrapper("sendmail", &["-Q", "-qR", "ncr.com"]);
    assert_eq!(
        (code, stdout.trim()),
        (0, &*format!("{id}: released")),
        "{stderr}"
    );
    let (code, listing, _) = wrapper("sendmail", &["-bp", "-qQ"]);
    assert_eq!(code, 0);
    assert!(listing.contains("Total requests: 0"), "{listing}");
    let (code, _, stderr) = wrapper("sendmail", &["-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mta.message_count(), 1);
    assert!(site.ids().is_empty());
}

fn flush(stubs: &Stubs, key_args: &[&str], original: Option<&str>) -> Ran {
    let mut command = Command::new(script("etrnq-flush"));
    command
        .args(key_args)
        .env("PATH", stubs.path())
        .env("STUB_CALLS", stubs.calls_path());
    match original {
        Some(text) => command.env("SSH_ORIGINAL_COMMAND", text),
        None => command.env_remove("SSH_ORIGINAL_COMMAND"),
    };
    let output = command.output().expect("run etrnq-flush");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn flush_wrapper_runs_exactly_the_one_allowed_command() {
    let stubs = Stubs::new();
    let ran = flush(
        &stubs,
        &["customer.example"],
        Some("queue-run -R customer.example"),
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(stubs.calls(), ["queue-run [-R] [customer.example]"]);
}

#[test]
fn flush_wrapper_refuses_everything_else() {
    let marker = tempfile::tempdir().expect("marker dir");
    let victim = marker.path().join("still-here");
    std::fs::write(&victim, "x").expect("marker");
    let touch = marker.path().join("touched");
    let attempts = [
        String::new(),
        "queue-run -R other.example".to_string(),
        "queue-run -R @customer.example".to_string(),
        "queue-run -R customer.example.evil.example".to_string(),
        "queue-run -R Customer.example -v".to_string(),
        "queue-run -R customer.example -C /tmp/evil.toml".to_string(),
        "queue-run -R customer.example --queue-dir /".to_string(),
        "queue-run".to_string(),
        "queue-run -f".to_string(),
        "mailq".to_string(),
        "sh".to_string(),
        format!("queue-run -R customer.example; rm -rf {}", victim.display()),
        format!("queue-run -R customer.example && touch {}", touch.display()),
        format!("queue-run -R $(touch {})", touch.display()),
        format!("queue-run -R `touch {}`", touch.display()),
        "queue-run -R customer.example\ntouch /tmp/x".to_string(),
        "queue-run  -R customer.example".to_string(),
        " queue-run -R customer.example".to_string(),
        "queue-run -R customer.example ".to_string(),
        "queue-run\t-R\tcustomer.example".to_string(),
        "queue-run -R customer.*".to_string(),
        "/usr/local/bin/queue-run -R customer.example".to_string(),
    ];
    for attempt in &attempts {
        let stubs = Stubs::new();
        let ran = flush(&stubs, &["customer.example"], Some(attempt));
        assert_eq!(ran.code, 77, "{attempt:?} must be refused: {}", ran.stderr);
        assert!(
            ran.stderr
                .contains("refused: this key may only run: queue-run -R customer.example"),
            "{attempt:?}: {}",
            ran.stderr
        );
        assert!(
            stubs.calls().is_empty(),
            "{attempt:?} ran {:?}",
            stubs.calls()
        );
    }
    let stubs = Stubs::new();
    let ran = flush(&stubs, &["customer.example"], None);
    assert_eq!(ran.code, 77, "no command at all (an interactive login)");
    assert!(stubs.calls().is_empty());
    assert!(victim.exists(), "nothing was removed");
    assert!(!touch.exists(), "nothing the client wrote was run");
}

#[test]
fn flush_wrapper_needs_one_plain_domain_from_authorized_keys() {
    for key_args in [
        &[][..],
        &["a.example", "b.example"][..],
        &["customer example"][..],
        &["$(id)"][..],
        &["..example"][..],
        &[""][..],
    ] {
        let stubs = Stubs::new();
        let ran = flush(&stubs, key_args, Some("queue-run -R customer.example"));
        assert_eq!(ran.code, 64, "{key_args:?}: {}", ran.stderr);
        assert!(stubs.calls().is_empty(), "{key_args:?}");
    }
}

/// The library's modules form no cycle, between folders nor between the files of a folder; and
/// the script does find one when there is one.
#[test]
fn the_module_graph_has_no_cycle() {
    for depth in ["1", "2"] {
        let out = Command::new(script("module-graph"))
            .args(["--depth", depth])
            .output()
            .expect("run contrib/module-graph (needs python3)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.starts_with("no cycle among "),
            "depth {depth}: {stderr}"
        );
    }

    let src = tempfile::tempdir().expect("temporary src");
    std::fs::write(src.path().join("lib.rs"), "pub mod a;\npub mod b;\n").expect("lib.rs");
    std::fs::write(src.path().join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("a.rs");
    std::fs::write(src.path().join("b.rs"), "use crate::a::A;\npub struct B;\n").expect("b.rs");
    let out = Command::new(script("module-graph"))
        .arg(src.path())
        .output()
        .expect("run contrib/module-graph");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "cycle: a <-> b\n");
}

/// Binds 127.0.0.1:`port` when it is free, as another mail server on the machine would; `None`
/// when something already has it, which is the same situation for the demo.
fn occupy(port: u16) -> Option<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
    listener.set_nonblocking(true).expect("nonblocking");
    Some(listener)
}

/// The README's first command passes whatever the machine already runs on the ports mail
/// software likes: the ETRN round picks free ports and leaves 2525 and 2526 alone.
#[test]
fn the_demo_passes_with_2525_and_2526_taken() {
    if !support::has_program("swaks", "swaks") || !support::has_program("smtp-sink", "postfix") {
        return;
    }
    let taken: Vec<_> = [2525, 2526].into_iter().filter_map(occupy).collect();
    let bindir = support::site::bin("queue-run");
    let output = Command::new(script("demo.sh"))
        .env("ETRNQ_BIN", bindir.parent().expect("target dir"))
        .env_remove("ISP_PORT")
        .env_remove("SITE_PORT")
        .env_remove("ETRNQ_CONFIG")
        .env_remove("ETRNQ_QUEUE_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run contrib/demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("etrn-demo: the site has all 3 messages"),
        "the whole round ran: {stdout}"
    );
    for listener in &taken {
        assert!(
            listener
                .accept()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "the demo connected to {:?}, which was not its own",
            listener.local_addr()
        );
    }
}

/// A port the user names that is taken stops the demo with one line naming it; the server it
/// would have started is not left behind.
#[test]
fn the_etrn_demo_names_a_taken_port_once() {
    if !support::has_program("swaks", "swaks") || !support::has_program("smtp-sink", "postfix") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = listener.local_addr().expect("address").port();
    let bindir = support::site::bin("queue-run");
    let output = Command::new(script("etrn-demo.sh"))
        .env("ETRNQ_BIN", bindir.parent().expect("target dir"))
        .env("ISP_PORT", port.to_string())
        .env_remove("SITE_PORT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run contrib/etrn-demo.sh");
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "etrn-demo: something already listens on 127.0.0.1:{port}; choose another ISP_PORT or unset it\n"
        )
    );
}

/// A daemon that cannot listen says why in one line, the OS's reason once.
#[test]
fn queue_smtpd_names_a_taken_address_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let addr = listener.local_addr().expect("address");
    let site = Site::new("");
    let output = site
        .command("queue-smtpd")
        .args(["--listen", &addr.to_string()])
        .output()
        .expect("queue-smtpd runs");
    let reason = std::io::Error::from_raw_os_error(nix::libc::EADDRINUSE).to_string();
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("queue-smtpd: cannot listen on {addr}: {reason}\n")
    );
}
