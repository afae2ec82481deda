//! queue-admin end to end: each verb and each selection form over a real queue, with real queue
//! runs against the scripted SMTP server and queue-smtpd for ETRN.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::daemon::{bounded, poll_until};
use support::site::{Outcome, SENDER, Site, message, now};
use support::smtp::{End, Script, Server};

/// queue-admin with `args`, `stdin` on its standard input.
fn admin(site: &Site, args: &[&str], stdin: &str) -> Outcome {
    let output = site
        .command("queue-admin")
        .args(args)
        .write_stdin(stdin.as_bytes().to_vec())
        .output()
        .expect("queue-admin runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A site whose other.test goes to `sink` (or nowhere), and whose customer.test is an ETRN
/// domain held for `-R` and ETRN, routed to the same place.
fn site_to(port: u16) -> Site {
    let route = format!("[127.0.0.1]:{port}");
    Site::new(&format!(
        "relay_domains = [\"customer.test\"]\n\
         hold_domains = [\"customer.test\"]\n\
         [routes]\n\
         \"customer.test\" = {route:?}\n\
         \"other.test\" = {route:?}\n\
         \"sender.test\" = {route:?}\n"
    ))
}

fn enqueue(site: &Site, sender: &str, recipients: &[&str], subject: &str) -> String {
    let mut args = vec!["-f", sender];
    args.extend_from_slice(recipients);
    site.enqueue(&args, &message(subject, "body\n"))
}

/// `queue_name` of each message `mailq --json` lists, by id.
fn places(site: &Site) -> BTreeMap<String, String> {
    site.mailq()
        .iter()
        .map(|m| {
            (
                m["queue_id"].as_str().expect("id").to_string(),
                m["queue_name"].as_str().expect("queue_name").to_string(),
            )
        })
        .collect()
}

/// Every file under the queue directory, with its bytes, and every directory.
fn snapshot(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read queue dir") {
            let path = entry.expect("entry").path();
            let name = path
                .strip_prefix(root)
                .expect("inside")
                .display()
                .to_string();
            if path.is_dir() {
                out.insert(name, None);
                stack.push(path);
            } else {
                out.insert(name, Some(std::fs::read(&path).expect("read queue file")));
            }
        }
    }
    out
}

fn ids_in_lines(stdout: &str) -> Vec<String> {
    let mut ids: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_once(':').map(|(id, _)| id.to_string()))
        .collect();
    ids.sort();
    ids
}

#[test]
fn nothing_selected_is_a_usage_error_that_touches_nothing() {
    let site = Site::new("");
    for args in [
        &["delete"][..],
        &["hold", "-n"],
        &["show"],
        &["retry", "--wait", "5"],
    ] {
        let out = admin(&site, args, "");
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(out.stderr.contains("nothing selected"), "{out:?}");
        assert!(out.stdout.is_empty());
    }
    assert!(!site.queue_dir().exists(), "not even the queue was created");
    for args in [&["purge", "--all"][..], &[]] {
        let out = admin(&site, args, "");
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
    }
}

#[test]
fn each_selection_form_takes_exactly_its_messages() {
    let site = site_to(support::daemon::free_port());
    let old = enqueue(&site, SENDER, &["u@customer.test"], "old");
    site.age(&old, 3 * 86400);
    let bob = enqueue(&site, "bob@example.test", &["v@other.test"], "bob");
    let held = enqueue(&site, SENDER, &["w@other.test"], "held");
    let out = admin(&site, &["hold", &held], "");
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, &*format!("{held}: held"))
    );
    let cases: Vec<(Vec<&str>, Vec<&String>)> = vec![
        (vec!["-R", "customer.test"], vec![&old]),
        (vec!["-qRcustomer.test"], vec![&old]),
        (vec!["-R", "@other.test"], vec![&bob, &held]),
        (vec!["-S", "BOB@"], vec![&bob]),
        (vec!["-I", &bob[4..12]], vec![&bob]),
        (vec!["--held"], vec![&held]),
        (vec!["--older-than", "2d"], vec![&old]),
        (vec!["--older-than", "4d"], vec![]),
        (vec!["--all"], vec![&old, &bob, &held]),
        (vec!["-S", "frank", "--held"], vec![&held]),
        (vec!["-S", "frank", "-R", "other.test"], vec![&held]),
        (vec![&old, &held], vec![&old, &held]),
        (vec![&old, "-S", "bob"], vec![]),
    ];
    let before = snapshot(&site.queue_dir());
    for (args, expected) in cases {
        let mut command = vec!["delete", "--dry-run"];
        command.extend(&args);
        let out = admin(&site, &command, "");
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        let mut expected: Vec<String> = expected.into_iter().cloned().collect();
        expected.sort();
        assert_eq!(ids_in_lines(&out.stdout), expected, "{args:?}: {out:?}");
        assert!(
            out.stdout.lines().all(|l| l.ends_with("would be deleted")),
            "{out:?}"
        );
    }
    assert_eq!(snapshot(&site.queue_dir()), before);
}

#[test]
fn a_dry_run_leaves_the_queue_byte_for_byte_the_same() {
    let site = site_to(support::daemon::free_port());
    let a = enqueue(&site, SENDER, &["u@customer.test", "v@other.test"], "a");
    let b = enqueue(&site, "", &["w@other.test"], "b");
    admin(&site, &["hold", &b], "");
    site.run(&["-f"]);
    // A listing of a queue that stood still writes the index: it must stay as it is too.
    std::thread::sleep(Duration::from_millis(1100));
    site.mailq();
    assert!(site.queue_dir().join("index").exists());
    let before = snapshot(&site.queue_dir());
    for verb in ["hold", "release", "delete", "bounce", "retry"] {
        let out = admin(&site, &[verb, "-n", "--all"], "");
        assert_eq!(out.code, 0, "{verb}: {out:?}");
        assert_eq!(out.stdout.lines().count(), 2, "{verb}: {out:?}");
        assert!(
            out.stdout.contains(&a) && out.stdout.contains(&b),
            "{out:?}"
        );
        assert_eq!(snapshot(&site.queue_dir()), before, "{verb}");
    }
    let out = admin(&site, &["bounce", "-n", &a], "");
    assert_eq!(
        out.stdout.trim(),
        format!("{a}: would be bounced (2 recipients open)")
    );
    let log = site.log();
    assert_eq!(
        log.matches("by the administrator").count(),
        1,
        "only the hold: {log}"
    );
}

#[test]
fn hold_survives_forced_runs_domain_runs_and_etrn_and_release_delivers() {
    let sink = Server::start(Script::default());
    let site = site_to(sink.port());
    let plain = enqueue(&site, SENDER, &["a@other.test"], "plain held");
    let etrn = enqueue(&site, SENDER, &["b@customer.test"], "etrn held");
    let free = enqueue(&site, SENDER, &["c@customer.test"], "etrn free");
    let out = admin(&site, &["hold", &plain, &etrn], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr.trim(), "queue-admin: hold: 2 done", "{out:?}");

    assert_eq!(site.run(&["-f"]).code, 0);
    assert_eq!(site.run(&["-R", "other.test"]).code, 0);
    assert_eq!(site.run(&["-I", &plain]).code, 0);
    assert_eq!(sink.message_count(), 0, "nothing held was attempted");

    // ETRN starts queue-run -R customer.test: the free message goes, the held one stays.
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.command("ETRN customer.test");
    assert!((250..=253).contains(&code), "{code} {text}");
    s.expect("QUIT", 221);
    poll_until("the ETRN run to end", || {
        site.log().contains("ended: exit status")
    });
    let got: Vec<String> = sink.messages().iter().map(|m| m.text()).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("Subject: etrn free"), "{}", got[0]);
    assert!(!site.ids().contains(&free));
    assert_eq!(
        places(&site),
        BTreeMap::from([
            (plain.clone(), "hold".into()),
            (etrn.clone(), "hold".into())
        ])
    );
    for held in [&plain, &etrn] {
        assert!(
            !site.log().contains(&format!("{held}: to=")),
            "{}",
            site.log()
        );
    }

    let out = admin(&site, &["release", "--held"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("{plain}: released\n{etrn}: released\n"));
    assert_eq!(site.run(&["-R", "customer.test"]).code, 0);
    assert_eq!(site.run(&[]).code, 0);
    let subjects: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert_eq!(subjects.len(), 3, "each once: {subjects:?}");
    assert!(site.queued_ids().is_empty());
    let log = site.log();
    assert!(
        log.contains(&format!("{plain}: placed on hold by the administrator ")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{etrn}: released from hold by the administrator ")),
        "{log}"
    );
}

#[test]
fn delete_skips_a_message_a_running_queue_run_is_delivering_and_it_goes_once() {
    let sink = Server::start(Script::default().per_message(Duration::from_secs(3)));
    let site = site_to(sink.port());
    let id = enqueue(&site, SENDER, &["a@other.test"], "in flight");
    let runner = site
        .std_command("queue-run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("queue-run starts");
    poll_until("the run to hold the message", || {
        site.entry(&id).is_some_and(|m| m["locked"] == true)
    });
    let out = admin(&site, &["delete", &id], "");
    assert_eq!(out.code, 75, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("{id}: busy: a queue run is delivering it; skipped (--wait waits for it)")
    );
    assert!(out.stderr.contains("1 busy"), "{out:?}");
    let run = bounded(runner, "queue-run");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(sink.message_count(), 1, "delivered once");
    assert!(site.queued_ids().is_empty());
    assert!(!site.log().contains("removed by the administrator"));
    let out = admin(&site, &["delete", &id], "");
    assert_eq!(out.code, 67, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("{id}: not in the queue"));
}

#[test]
fn wait_takes_a_busy_message_once_its_run_lets_go() {
    let sink = Server::start(
        Script::default()
            .per_message(Duration::from_secs(2))
            .end_of_data("Subject: slow", End::Reply("451 4.3.0 try later".into())),
    );
    let site = site_to(sink.port());
    let id = enqueue(&site, SENDER, &["a@other.test"], "slow");
    let runner = site
        .std_command("queue-run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("queue-run starts");
    poll_until("the run to hold the message", || {
        site.entry(&id).is_some_and(|m| m["locked"] == true)
    });
    let out = admin(&site, &["delete", "--wait", "120", &id], "");
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, &*format!("{id}: deleted")),
        "{out:?}"
    );
    let run = bounded(runner, "queue-run");
    assert_eq!(run.status.code(), Some(75), "the run deferred it: {run:?}");
    assert_eq!(sink.message_count(), 0);
    site.assert_untouched();
    assert!(
        site.log()
            .contains(&format!("{id}: removed by the administrator"))
    );
}

#[test]
fn bounce_gives_up_with_one_notice_to_the_sender() {
    let sink = Server::start(Script::default());
    let site = site_to(support::daemon::free_port());
    let id = enqueue(
        &site,
        SENDER,
        &["a@other.test", "b@customer.test"],
        "doomed",
    );
    site.run(&["-f"]);

    let out = admin(&site, &["bounce", "-R", "customer.test"], "");
    assert_eq!(out.code, 0, "{out:?}");
    let ids = site.ids();
    assert_eq!(ids.len(), 2, "the message and one notice: {ids:?}");
    let notice = ids.iter().find(|i| **i != id).expect("a notice").clone();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "{id}: bounced (1 recipient, notice {notice} to the sender); 1 recipient stay queued"
        )
    );
    let original = site.message(&id).envelope;
    assert_eq!(original.rcpts[0].status, "deferred");
    assert_eq!(original.rcpts[1].status, "failed");
    let dsn = site.message(&notice);
    assert_eq!(dsn.envelope.sender, "");
    assert_eq!(dsn.envelope.addresses(), [SENDER]);
    let text = String::from_utf8_lossy(&dsn.data).into_owned();
    assert!(
        text.contains("Final-Recipient: rfc822; b@customer.test\nAction: failed\nStatus: 5.0.0"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; a@other.test"),
        "{text}"
    );
    assert!(text.contains("cancelled by the administrator"), "{text}");

    // The rest, and a message from the null sender: no notice for that one.
    let silent = enqueue(&site, "", &["c@other.test"], "from nobody");
    let out = admin(&site, &["bounce", &id, &silent], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{silent}: bounced (1 recipient, no notice")),
        "{out:?}"
    );
    let left = site.ids();
    assert_eq!(left.len(), 2, "two notices and nothing else: {left:?}");
    assert!(!left.contains(&id) && !left.contains(&silent));

    // A held message is given up from hold: its notice is active mail like any other.
    let held = enqueue(&site, SENDER, &["d@other.test"], "held, then given up");
    admin(&site, &["hold", &held], "");
    let out = admin(&site, &["bounce", "--held"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("{held}: bounced (1 recipient, notice ")),
        "{out:?}"
    );
    assert!(site.files("hold").is_empty());
    assert_eq!(site.ids().len(), 3, "three notices");
    assert!(site.files("tmp").is_empty(), "nothing left over");

    // The notices go out like any mail: exactly three reach the sender's domain.
    site.configure(&format!(
        "hostnames = [\"mx2.isp.test\"]\n[routes]\n\"sender.test\" = \"{}\"\n",
        sink.route()
    ));
    assert_eq!(site.run(&[]).code, 0);
    assert_eq!(sink.message_count(), 3);
    assert!(site.queued_ids().is_empty());
}

#[test]
fn retry_makes_a_deferred_message_go_out_on_the_next_plain_run() {
    let site = site_to(support::daemon::free_port());
    let id = enqueue(&site, SENDER, &["a@other.test"], "deferred");
    assert_eq!(site.run(&[]).code, 75, "nobody listens: deferred");
    let next = site.message(&id).envelope.rcpts[0].next_attempt;
    assert!(next > now() + 600, "next attempt in about an hour");

    let sink = Server::start(Script::default());
    site.configure(&format!(
        "hostnames = [\"mx2.isp.test\"]\n[routes]\n\"other.test\" = \"{}\"\n",
        sink.route()
    ));
    assert_eq!(site.run(&[]).code, 0);
    assert_eq!(sink.message_count(), 0, "not due yet");
    let out = admin(&site, &["retry", "-R", "other.test"], "");
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, &*format!("{id}: due now (1 recipient)"))
    );
    assert_eq!(site.message(&id).envelope.rcpts[0].next_attempt, 0);
    assert_eq!(
        site.message(&id).envelope.rcpts[0].attempts,
        1,
        "attempts are kept"
    );
    assert_eq!(site.run(&[]).code, 0);
    assert_eq!(sink.message_count(), 1);
    assert!(site.queued_ids().is_empty());
}

#[test]
fn ids_are_read_from_a_pipe_with_listing_marks() {
    let site = site_to(support::daemon::free_port());
    let a = enqueue(&site, SENDER, &["a@other.test"], "a");
    let b = enqueue(&site, SENDER, &["b@other.test"], "b");
    let c = enqueue(&site, SENDER, &["c@other.test"], "c");
    admin(&site, &["hold", &b], "");
    // An empty pipe (a jq filter that matched nothing) deletes nothing.
    let out = admin(&site, &["delete", "-"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    assert_eq!(site.queued_ids().len(), 3);
    let out = admin(&site, &["delete", "-"], &format!("{a}\n  {b}!\n\n"));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, format!("{a}: deleted\n{b}: deleted\n"));
    assert_eq!(site.queued_ids(), std::slice::from_ref(&c));

    // An id argument and a pipe together; what is not in the queue is 67, the rest is done.
    let out = admin(&site, &["hold", "-", "nonsense"], &format!("{c} {a}\n"));
    assert_eq!(out.code, 67, "{out:?}");
    assert!(out.stdout.contains(&format!("{c}: held")), "{out:?}");
    assert!(
        out.stdout.contains(&format!("{a}: not in the queue")),
        "{out:?}"
    );
    assert!(out.stdout.contains("nonsense: not a queue id"), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "queue-admin: hold: 1 done, 2 not in the queue"
    );
}

#[test]
fn the_listings_never_show_a_stale_state_after_an_action() {
    let site = site_to(support::daemon::free_port());
    let id = enqueue(&site, SENDER, &["a@customer.test"], "watched");
    let listed = |args: &[&str]| -> String {
        let out = site.command("mailq").args(args).output().expect("mailq");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json_place = |args: &[&str]| -> Option<String> {
        let mut all = vec!["--json"];
        all.extend(args);
        listed(&all)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .find(|m| m["queue_id"] == id.as_str())
            .map(|m| m["queue_name"].as_str().expect("name").to_string())
    };
    for (verb, expected) in [
        ("hold", Some("hold")),
        ("retry", Some("hold")),
        ("release", Some("active")),
        ("hold", Some("hold")),
        ("delete", None),
    ] {
        // A queue that stood still is listed from its index: each action must retire it.
        std::thread::sleep(Duration::from_millis(1100));
        listed(&[]);
        assert!(site.queue_dir().join("index").exists());
        let out = admin(&site, &[verb, &id], "");
        assert_eq!(out.code, 0, "{verb}: {out:?}");
        assert_eq!(
            json_place(&[]).as_deref(),
            expected,
            "{verb}: whole listing"
        );
        assert_eq!(
            json_place(&["-R", "customer.test"]).as_deref(),
            expected,
            "{verb}: per-domain listing"
        );
        let mark = listed(&[]).contains(&format!("{id}!"));
        assert_eq!(mark, expected == Some("hold"), "{verb}: the ! mark");
    }
}

#[test]
fn show_prints_the_envelope_and_the_parts_asked_for() {
    let site = site_to(support::daemon::free_port());
    let id = site.enqueue(
        &["-f", SENDER, "a@other.test"],
        b"Subject: look\nX-Evil: \x1b[2Jcleared\n\nthe body\n",
    );
    site.run(&[]);
    let out = admin(&site, &["show", &id], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let text = out.stdout;
    assert!(
        text.starts_with(&format!("*** ENVELOPE {id} ***\nqueue:        active\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sender:       <{SENDER}>\n")),
        "{text}"
    );
    assert!(
        text.contains(
            "recipient:    <a@other.test>\n  status:     deferred, 1 attempts, next attempt "
        ),
        "{text}"
    );
    assert!(text.contains("  last reply: "), "{text}");
    assert!(text.contains("*** MESSAGE ***\nReceived: "), "{text}");
    assert!(text.contains("X-Evil: ?[2Jcleared\n"), "{text}");
    assert!(text.ends_with("\nthe body\n"), "{text}");
    let headers = admin(&site, &["show", "--headers", &id], "").stdout;
    assert!(headers.ends_with("X-Evil: ?[2Jcleared\n"), "{headers}");
    let body = admin(&site, &["show", "--body", &id], "").stdout;
    assert!(body.ends_with("*** MESSAGE ***\nthe body\n"), "{body}");
    let out = admin(&site, &["show", "--headers", "--body", &id], "");
    assert_eq!(out.code, 64, "{out:?}");
}

#[test]
fn an_unreadable_envelope_is_reported_and_moved_aside_never_changed() {
    let site = site_to(support::daemon::free_port());
    let good = enqueue(&site, SENDER, &["a@other.test"], "good");
    let bad = enqueue(&site, SENDER, &["b@other.test"], "bad");
    std::fs::write(site.envelope_path(&bad), b"garbage").expect("spoil");
    let out = admin(&site, &["hold", "--all"], "");
    assert_eq!(out.code, 75, "{out:?}");
    assert!(out.stdout.contains(&format!("{good}: held")), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{bad}: unreadable envelope (")),
        "{out:?}"
    );
    assert!(out.stdout.contains("moved to corrupt/"), "{out:?}");
    assert_eq!(
        site.files("corrupt"),
        [format!("{bad}.data"), format!("{bad}.env")]
    );
    assert_eq!(site.files("hold"), [good]);
}
