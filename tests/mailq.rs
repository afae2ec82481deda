//! mailq end to end: sendmail's layout byte for byte, the JSON lines and every selection.
//!
//! Also the per-domain summary, the selectors in both spellings, the locked and held marks,
//! corrupt envelopes, envelopes and an index that are not what they should be (a named pipe, an
//! endless line), a reader that stops early, and the advisory index: believed while the queue
//! stands still, never after it changed.
//!
//! Most queues here are written by hand in the documented envelope format, so that deferral
//! state, fixed arrival times and corrupt files can be set up without a queue run. Listings run
//! with TZ=UTC; 1795418591 is Mon Nov 23 07:23:11 2026 UTC.

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::queue_files::{Envelope, Rcpt};
use support::site::{Site, stderr_lines};

const ARRIVAL: i64 = 1_795_418_591;
const COLUMNS: &str =
    "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n";
const RCPT_INDENT: &str = "\t\t\t\t\t ";
const REASON_INDENT: &str = "                 ";

fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty(), "{:?}", stderr_lines(&output));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn listing(q: &Site, args: &[&str]) -> String {
    stdout_of(q.command("mailq").args(args))
}

fn header(q: &Site, n: usize) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!(
        "\t\t{} ({n} request{s})\n{COLUMNS}",
        q.queue_dir().display()
    )
}

fn plant(q: &Site, id: &str, arrival: i64, sender: &str, rcpts: Vec<Rcpt>) -> Envelope {
    let data = format!("Subject: {id}\n\nbody of {id}\n");
    let env = Envelope::new(id, arrival, data.len() as u64, sender, rcpts);
    q.plant(&env, data.as_bytes());
    env
}

#[test]
fn empty_queue() {
    let q = Site::new("");
    assert_eq!(
        listing(&q, &[]),
        format!(
            "{} is empty\n\t\tTotal requests: 0\n",
            q.queue_dir().display()
        )
    );
    assert_eq!(listing(&q, &["--json"]), "");
    assert_eq!(listing(&q, &["-bp"]), listing(&q, &[]));
}

#[test]
fn one_message_byte_for_byte() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "alice@example.test",
        vec![Rcpt::pending("user@customer.test")],
    );
    let expected = format!(
        "{}1xWNa000000001       48 Mon Nov 23 07:23 alice@example.test\n\
         {RCPT_INDENT}user@customer.test\n\
         \t\tTotal requests: 1\n",
        header(&q, 1)
    );
    assert_eq!(listing(&q, &[]), expected);
}

#[test]
fn several_messages_reasons_and_verbose() {
    let q = Site::new("");
    let long_reason = "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <b@customer.test>: mailbox busy, please try again later";
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL - 20 * 86400,
        "",
        vec![Rcpt::deferred(
            "user@customer.test",
            "Deferred: Connection refused by [127.0.0.1]",
        )],
    );
    plant(
        &q,
        "1xWNa000000002",
        ARRIVAL,
        "bob@example.test",
        vec![
            Rcpt::pending("a@customer.test"),
            Rcpt::deferred("b@customer.test", long_reason),
            Rcpt::pending("c@other.test"),
            Rcpt {
                status: "sent".into(),
                ..Rcpt::pending("done@other.test")
            },
            Rcpt {
                status: "failed".into(),
                reason: "550 no such user".into(),
                ..Rcpt::pending("gone@other.test")
            },
        ],
    );
    let big = "Subject: big\n\n".to_string() + &"x".repeat(3000) + "\n";
    q.plant(
        &Envelope::new(
            "1xWNa000000003",
            ARRIVAL + 3600,
            big.len() as u64,
            "carol@example.test",
            vec![Rcpt::pending("d@other.test")],
        ),
        big.as_bytes(),
    );
    let cut: String = long_reason.chars().take(60).collect();
    let body = |reason: &str| {
        format!(
            "1xWNa000000001       48 Tue Nov  3 07:23 MAILER-DAEMON\n\
             {REASON_INDENT}(Deferred: Connection refused by [127.0.0.1])\n\
             {RCPT_INDENT}user@customer.test\n\
             1xWNa000000002       48 Mon Nov 23 07:23 bob@example.test\n\
             {RCPT_INDENT}a@customer.test\n\
             {RCPT_INDENT}c@other.test\n\
             {REASON_INDENT}({reason})\n\
             {RCPT_INDENT}b@customer.test\n\
             1xWNa000000003     3015 Mon Nov 23 08:23 carol@example.test\n\
             {RCPT_INDENT}d@other.test\n\
             \t\tTotal requests: 3\n"
        )
    };
    assert_eq!(listing(&q, &[]), header(&q, 3) + &body(&cut));
    assert_eq!(listing(&q, &["-v"]), header(&q, 3) + &body(long_reason));
    assert_eq!(cut.chars().count(), 60);
}

#[test]
fn enqueued_messages_are_listed_as_stored() {
    let q = Site::new("");
    for (sender, rcpt) in [
        ("a@example.test", "x@customer.test"),
        ("b@example.test", "y@other.test"),
    ] {
        q.command("queue-enqueue")
            .args(["-f", sender, rcpt])
            .write_stdin("Subject: s\n\nbody\n")
            .assert()
            .success();
    }
    let ids = q.ids();
    let text = listing(&q, &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("\t\t{} (2 requests)", q.queue_dir().display())
    );
    for (n, id) in ids.iter().enumerate() {
        let m = q.message(id);
        let entry = lines[2 + 2 * n];
        assert!(
            entry.starts_with(&format!("{id} {:>8} ", m.data.len())),
            "{entry}"
        );
        assert!(
            entry.ends_with(&format!(" {}", m.envelope.sender)),
            "{entry}"
        );
        assert_eq!(
            lines[3 + 2 * n],
            format!("{RCPT_INDENT}{}", m.envelope.rcpts[0].address)
        );
    }
    assert_eq!(lines[6], "\t\tTotal requests: 2");
}

#[test]
fn locked_and_held_messages_are_marked() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "a@example.test",
        vec![Rcpt::pending("u@customer.test")],
    );
    plant(
        &q,
        "1xWNa000000002",
        ARRIVAL,
        "b@example.test",
        vec![Rcpt::pending("v@customer.test")],
    );
    let held = Envelope::new(
        "1xWNa000000003",
        ARRIVAL,
        2,
        "c@example.test",
        vec![Rcpt::pending("w@customer.test")],
    );
    fs::write(q.queue_dir().join("data").join(&held.id), b"x\n").unwrap();
    fs::write(q.queue_dir().join("hold").join(&held.id), held.render()).unwrap();

    // A runner's lock, taken the way runners take it: exclusive flock on data/ID.
    let lock = fs::File::open(q.queue_dir().join("data/1xWNa000000002")).unwrap();
    lock.lock().unwrap();
    let text = listing(&q, &[]);
    let entries: Vec<&str> = text.lines().filter(|l| l.starts_with("1xWN")).collect();
    assert_eq!(entries.len(), 3, "{text}");
    assert!(entries[0].starts_with("1xWNa000000001       48 "), "{text}");
    assert!(entries[1].starts_with("1xWNa000000002*      48 "), "{text}");
    assert!(entries[2].starts_with("1xWNa000000003!       2 "), "{text}");

    let json: Vec<serde_json::Value> = listing(&q, &["--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let locked: Vec<bool> = json
        .iter()
        .map(|m| m["locked"].as_bool().unwrap())
        .collect();
    assert_eq!(locked, [false, true, false]);
    assert_eq!(json[2]["queue_name"], "hold");

    drop(lock);
    listing_once_released(&q, "1xWNa000000002       48 ");
}

/// Lists until the listing shows `unmarked` after a lock was dropped. Another test thread that
/// forks at the wrong instant holds a copy of the descriptor, and so the lock, until its child
/// execs: the mark must go, soon if not at once.
fn listing_once_released(q: &Site, unmarked: &str) {
    let started = std::time::Instant::now();
    loop {
        let text = listing(q, &[]);
        if text.contains(unmarked) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "lock outlived its holder: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn json_lines_have_the_documented_fields() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "alice@example.test",
        vec![Rcpt::pending("user@customer.test")],
    );
    plant(
        &q,
        "1xWNa000000002",
        ARRIVAL + 8,
        "",
        vec![
            Rcpt::deferred(
                "a@customer.test",
                "connect to [127.0.0.1]:2525: Connection refused",
            ),
            Rcpt {
                status: "sent".into(),
                ..Rcpt::pending("b@customer.test")
            },
        ],
    );
    let text = listing(&q, &["--json"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let order = [
        "\"queue_name\"",
        "\"queue_id\"",
        "\"arrival_time\"",
        "\"message_size\"",
        "\"forced_expire\"",
        "\"sender\"",
        "\"locked\"",
        "\"recipients\"",
    ];
    for line in &lines {
        let at: Vec<usize> = order.iter().map(|k| line.find(k).expect(k)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "field order in {line}");
    }
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        first,
        serde_json::json!({
            "queue_name": "active", "queue_id": "1xWNa000000001", "arrival_time": ARRIVAL,
            "message_size": 48, "forced_expire": false, "sender": "alice@example.test",
            "locked": false,
            "recipients": [{"address": "user@customer.test", "status": "pending",
                            "attempts": 0, "next_attempt": 0}]
        })
    );
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(second["sender"], "");
    assert_eq!(
        second["recipients"],
        serde_json::json!([{"address": "a@customer.test",
            "delay_reason": "connect to [127.0.0.1]:2525: Connection refused",
            "status": "deferred", "attempts": 2, "next_attempt": 1_795_422_191}])
    );
}

#[test]
fn summary_counts_per_domain() {
    let q = Site::new("");
    let now = chrono::Utc::now().timestamp();
    let recent = now - 25 * 60 - 30;
    let old = now - 3 * 86400;
    let messages: [(&str, i64, &[&str]); 3] = [
        (
            "1xWNa000000001",
            old,
            &["u@customer.test", "v@customer.test"],
        ),
        (
            "1xWNa000000002",
            recent,
            &["u@customer.test", "w@other.test"],
        ),
        ("1xWNa000000003", recent, &["x@sub.customer.test"]),
    ];
    for (id, arrival, rcpts) in messages {
        let rcpts = rcpts.iter().map(|r| Rcpt::pending(r)).collect();
        plant(&q, id, arrival, "a@example.test", rcpts);
    }
    let text = listing(&q, &["--summary"]);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "domain", "msgs", "bytes", "oldest", "<5m", "<10m", "<20m", "<40m", "<80m", "<160m",
            "<320m", "<640m", "<1280m", "1280m+"
        ]
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name} row in {text}"))
            .clone()
    };
    // messages, bytes (48 each), oldest, then the ten age buckets
    for expected in [
        "TOTAL         3 144 3d0h 0 0 0 2 0 0 0 0 0 1",
        "customer.test 2  96 3d0h 0 0 0 1 0 0 0 0 0 1",
        "other.test    1  48  25m 0 0 0 1 0 0 0 0 0 0",
    ] {
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(row(expected[0]), expected);
    }
    assert_eq!(row("sub.customer.test")[1], "1");
    assert_eq!(rows.len(), 5, "{text}");
    // Busiest domain first, after the total.
    assert_eq!(rows[1][0], "TOTAL");
    assert_eq!(rows[2][0], "customer.test");

    let only = listing(&q, &["--summary", "-R", "other.test"]);
    let names: Vec<&str> = only
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["TOTAL", "other.test"]);
}

/// Messages for customer.test, xcustomer.test, sub.customer.test and other.test, from senders
/// that differ in case.
fn filter_queue() -> Site {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "Frank@Example.test",
        vec![Rcpt::pending("u@customer.test")],
    );
    plant(
        &q,
        "1xWNa000000002",
        ARRIVAL,
        "gina@example.test",
        vec![Rcpt::pending("u@xcustomer.test")],
    );
    plant(
        &q,
        "1xWNa000000003",
        ARRIVAL,
        "henry@example.test",
        vec![Rcpt::pending("u@sub.customer.test")],
    );
    plant(
        &q,
        "1xWNb000000004",
        ARRIVAL,
        "frank@other.test",
        vec![
            Rcpt::pending("u@other.test"),
            Rcpt::pending("v@CUSTOMER.TEST"),
        ],
    );
    q
}

fn listed_ids(q: &Site, args: &[&str]) -> Vec<String> {
    let text = listing(q, args);
    let ids: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("1xWN"))
        .map(|l| l[..14].to_string())
        .collect();
    let total = text.lines().last().unwrap();
    assert_eq!(
        total,
        format!("\t\tTotal requests: {}", ids.len()),
        "{text}"
    );
    let json: Vec<String> = listing(q, &[&["--json"], args].concat())
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["queue_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(json, ids, "text and JSON select alike for {args:?}");
    ids
}

/// Selections and the messages of [`filter_queue`] they list: -R is an exact domain (any
/// case) and `@` adds its subdomains; -S and -I select by substring, -S in any case and -I in
/// the id's own; selections of different kinds must all match.
const SELECTIONS: &[(&[&str], &[&str])] = &[
    (
        &["-R", "customer.test"],
        &["1xWNa000000001", "1xWNb000000004"],
    ),
    (
        &["-R", "Customer.Test"],
        &["1xWNa000000001", "1xWNb000000004"],
    ),
    (
        &["-R", "@customer.test"],
        &["1xWNa000000001", "1xWNa000000003", "1xWNb000000004"],
    ),
    (&["-R", "xcustomer.test"], &["1xWNa000000002"]),
    (&["-R", "customer"], &[]),
    (
        &["-R", "xcustomer.test", "-R", "other.test"],
        &["1xWNa000000002", "1xWNb000000004"],
    ),
    (&["-S", "FRANK"], &["1xWNa000000001", "1xWNb000000004"]),
    (&["-S", "other.TEST"], &["1xWNb000000004"]),
    (&["-I", "1xWNb"], &["1xWNb000000004"]),
    (&["-I", "1xwnb"], &[]),
    (
        &["-S", "frank", "-R", "customer.test", "-I", "0001"],
        &["1xWNa000000001"],
    ),
];

#[test]
fn each_selection_lists_exactly_its_messages() {
    let q = filter_queue();
    for (args, ids) in SELECTIONS {
        assert_eq!(listed_ids(&q, args), *ids, "{args:?}");
    }
}

#[test]
fn sendmail_selector_spellings() {
    let q = filter_queue();
    let plain = listing(&q, &["-R", "customer.test"]);
    assert_eq!(listing(&q, &["-qRcustomer.test"]), plain);
    assert_eq!(listing(&q, &["-qR", "customer.test"]), plain);
    assert_eq!(listing(&q, &["-bp", "-qRcustomer.test"]), plain);
    assert_eq!(listing(&q, &["-qSfrank"]), listing(&q, &["-S", "frank"]));
    assert_eq!(listing(&q, &["-qIb0"]), listing(&q, &["-I", "b0"]));
    let nothing = listing(&q, &["-qRnowhere.test"]);
    assert_eq!(
        nothing,
        format!(
            "{} is empty\n\t\tTotal requests: 0\n",
            q.queue_dir().display()
        )
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let q = Site::new("");
    for args in [
        &["-R", "bad domain"][..],
        &["--frobnicate"],
        &["-bs"],
        &["--json", "--summary"],
    ] {
        let output = q.command("mailq").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert_eq!(stderr_lines(&output).len(), 1, "{args:?}");
        assert!(output.stdout.is_empty());
    }
    let bad = Site::new("no_such_key = 1\n");
    let output = bad.command("mailq").output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr_lines(&output)[0].contains("no_such_key"));
}

#[test]
fn a_corrupt_envelope_is_reported_and_moved_aside() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "a@example.test",
        vec![Rcpt::pending("u@customer.test")],
    );
    let torn = plant(
        &q,
        "1xWNa000000002",
        ARRIVAL,
        "b@example.test",
        vec![Rcpt::pending("v@customer.test")],
    );
    plant(
        &q,
        "1xWNa000000003",
        ARRIVAL,
        "c@example.test",
        vec![Rcpt::pending("w@customer.test")],
    );
    let whole = torn.render();
    let cut = &whole[..whole.len() - 10];
    // Replaced by rename, as every envelope change is: a listing trusts an unchanged directory.
    let envelope = q.queue_dir().join("env/1xWNa000000002");
    fs::write(envelope.with_extension("new"), cut).unwrap();
    fs::rename(envelope.with_extension("new"), &envelope).unwrap();

    let output = q.command("mailq").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("\t\t{} (3 requests)", q.queue_dir().display())
    );
    let bad = lines
        .iter()
        .find(|l| l.starts_with("1xWNa000000002"))
        .expect("listed");
    assert!(
        bad.starts_with("1xWNa000000002X       - (unreadable envelope: "),
        "{bad}"
    );
    assert!(bad.ends_with("; moved to corrupt/)"), "{bad}");
    assert!(
        text.contains("1xWNa000000001 ") && text.contains("1xWNa000000003 "),
        "{text}"
    );
    let errors = stderr_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("mailq: 1xWNa000000002: unreadable envelope"),
        "{errors:?}"
    );

    assert_eq!(
        q.files("corrupt"),
        ["1xWNa000000002.data", "1xWNa000000002.env"]
    );
    assert_eq!(
        fs::read_to_string(q.queue_dir().join("corrupt/1xWNa000000002.env")).unwrap(),
        cut
    );
    assert_eq!(q.ids(), ["1xWNa000000001", "1xWNa000000003"]);
    assert_eq!(q.files("data"), ["1xWNa000000001", "1xWNa000000003"]);
    // Moved once: the next listing is clean.
    let again = q.command("mailq").output().unwrap();
    assert!(again.stderr.is_empty());
    assert!(
        String::from_utf8(again.stdout)
            .unwrap()
            .contains("(2 requests)")
    );
}

#[test]
fn corrupt_entries_in_json_and_missing_data() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "a@example.test",
        vec![Rcpt::pending("u@customer.test")],
    );
    fs::write(
        q.queue_dir().join("env/1xWNa000000002"),
        b"\xff\xfenot an envelope\n",
    )
    .unwrap();
    fs::write(q.queue_dir().join("data/1xWNa000000002"), b"data\n").unwrap();
    // An envelope whose data file is gone.
    let orphan = Envelope::new(
        "1xWNa000000003",
        ARRIVAL,
        5,
        "c@example.test",
        vec![Rcpt::pending("w@customer.test")],
    );
    fs::write(q.queue_dir().join("env/1xWNa000000003"), orphan.render()).unwrap();

    let output = q.command("mailq").arg("--json").output().unwrap();
    assert!(output.status.success());
    let json: Vec<serde_json::Value> = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 3);
    assert_eq!(json[0]["queue_name"], "active");
    for (entry, id) in json[1..].iter().zip(["1xWNa000000002", "1xWNa000000003"]) {
        assert_eq!(entry["queue_name"], "corrupt");
        assert_eq!(entry["queue_id"], id);
        assert!(entry["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(stderr_lines(&output).len(), 2);
    assert_eq!(
        q.files("corrupt"),
        [
            "1xWNa000000002.data",
            "1xWNa000000002.env",
            "1xWNa000000003.env"
        ]
    );
    assert_eq!(q.ids(), ["1xWNa000000001"]);
}

/// Three messages, the second an envelope that is a named pipe: an access problem, not damage.
fn queue_with_a_pipe() -> Site {
    let q = Site::new("");
    for (n, rcpt) in [
        (1, "u@customer.test"),
        (2, "v@customer.test"),
        (3, "w@other.test"),
    ] {
        plant(
            &q,
            &format!("1xWNa00000000{n}"),
            ARRIVAL,
            "a@example.test",
            vec![Rcpt::pending(rcpt)],
        );
    }
    let envelope = q.queue_dir().join("env/1xWNa000000002");
    fs::remove_file(&envelope).unwrap();
    nix::unistd::mkfifo(&envelope, nix::sys::stat::Mode::S_IRUSR).unwrap();
    q
}

#[test]
fn a_named_pipe_envelope_or_index_hangs_no_listing_and_is_left_in_place() {
    let q = queue_with_a_pipe();
    nix::unistd::mkfifo(&q.queue_dir().join("index"), nix::sys::stat::Mode::S_IRUSR).unwrap();
    let limit = std::time::Duration::from_secs(60);

    let output = q.command("mailq").timeout(limit).output().unwrap();
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(text.starts_with(&header(&q, 3)), "{text}");
    let bad = text
        .lines()
        .find(|l| l.starts_with("1xWNa000000002"))
        .expect("listed");
    assert!(
        bad.starts_with("1xWNa000000002X       - (unreadable envelope: "),
        "{bad}"
    );
    assert!(bad.ends_with(" is a named pipe, not a regular file; left in place)"));
    assert!(text.contains("1xWNa000000001 ") && text.contains("1xWNa000000003 "));
    let errors = stderr_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("mailq: 1xWNa000000002: unreadable envelope ("));
    assert!(errors[0].ends_with("; left in place"), "{errors:?}");

    let output = q
        .command("mailq")
        .arg("--json")
        .timeout(limit)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(75));
    let json: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 3);
    assert_eq!(json[1]["queue_name"], "active");
    assert_eq!(json[1]["queue_id"], "1xWNa000000002");
    assert_eq!(json[1]["unreadable"], "inaccessible");
    assert!(json[1]["error"].as_str().unwrap().contains("named pipe"));
    assert!(json[0].get("unreadable").is_none());

    assert!(
        q.files("corrupt").is_empty(),
        "an access problem is not moved"
    );
    assert_eq!(q.ids().len(), 3);
}

#[test]
fn an_index_of_one_endless_line_is_ignored_unread() {
    let q = Site::new("");
    plant(
        &q,
        "1xWNa000000001",
        ARRIVAL,
        "a@example.test",
        vec![Rcpt::pending("u@customer.test")],
    );
    // 4 GiB without a newline, sparse: the header line is cut at its limit, not read whole.
    fs::File::create(q.queue_dir().join("index"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let output = q
        .command("mailq")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("1xWNa000000001 "));
}

#[test]
fn unreadable_messages_are_reported_whatever_the_selection_unless_i_rules_them_out() {
    let q = queue_with_a_pipe();
    for args in [
        &["-R", "other.test"][..],
        &["-S", "nobody"],
        &["--json", "-R", "x.test"],
    ] {
        let output = q.command("mailq").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(75), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1xWNa000000002"),
            "{args:?}: whom it is for cannot be known, so it is shown"
        );
        assert_eq!(stderr_lines(&output).len(), 1, "{args:?}");
    }
    let output = q
        .command("mailq")
        .args(["-R", "other.test"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with(&header(&q, 2)), "{text}");
    assert!(text.ends_with("Total requests: 2\n"));

    let output = q
        .command("mailq")
        .args(["-I", "000000003"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("1xWNa000000002"));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let q = Site::new("");
    // Enough output to fill a pipe many times over.
    q.command("mailq").assert().success();
    let data = b"Subject: s\n\nbody\n";
    for n in 0..3000 {
        let id = format!("1xWNa{n:09}");
        let env = Envelope::new(
            &id,
            ARRIVAL,
            data.len() as u64,
            "a@example.test",
            vec![Rcpt::pending("u@customer.test")],
        );
        fs::write(q.queue_dir().join("data").join(&id), data).unwrap();
        fs::write(q.queue_dir().join("env").join(&id), env.render()).unwrap();
    }
    for args in [&[][..], &["--json"]] {
        let mut child = q
            .std_command("mailq")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(output.stderr.is_empty(), "{:?}", stderr_lines(&output));
    }
    // And the whole listing, read to the end, has every message once.
    let text = listing(&q, &["--json"]);
    let ids: HashSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["queue_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 3000);
}

// --- The index ------------------------------------------------------------------------------

/// Longer than the index's settling time: directories that last changed this long ago vouch for
/// their contents.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(1200);

fn enqueue_from(q: &Site, sender: &str, rcpt: &str) {
    q.command("queue-enqueue")
        .args(["-f", sender, rcpt])
        .write_stdin("Subject: s\n\nbody\n")
        .assert()
        .success();
}

/// What the listing is when every envelope is read from its own file.
fn listing_without_index(q: &Site, args: &[&str]) -> String {
    let _ = fs::remove_file(q.queue_dir().join("index"));
    listing(q, args)
}

/// Rewrites the index in place with `from` replaced by `to` (same length, so record lengths
/// stay right): what it then lists shows whether the index was read.
fn tamper_index(q: &Site, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let path = q.queue_dir().join("index");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    fs::write(&path, text.replace(from, to)).unwrap();
}

/// A summary with its "oldest" column blanked: two listings a moment apart may count ages from
/// different seconds, and that is no difference between them.
/// A summary with its "oldest" column taken out, and that column in seconds, row by row: the
/// age counts from the instant of each listing, so two listings compare on everything else and
/// on the order of their ages.
fn split_ages(summary: &str) -> (String, Vec<i64>) {
    let mut ages = Vec::new();
    let rest = summary
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 3 && fields[0] != "domain" {
                ages.push(seconds(fields[3]));
                fields[3] = "-";
            }
            fields.join(" ") + "\n"
        })
        .collect();
    (rest, ages)
}

/// An age as the summary writes it (`45s`, `28m`, `3h12m`, `4d6h`), in seconds.
fn seconds(age: &str) -> i64 {
    let mut total = 0;
    let mut number = String::new();
    for c in age.chars() {
        match c {
            '0'..='9' => number.push(c),
            unit => {
                let n: i64 = number.parse().unwrap_or_else(|_| panic!("age {age:?}"));
                number.clear();
                total += n * match unit {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86400,
                    _ => panic!("age {age:?}"),
                };
            }
        }
    }
    total
}

#[test]
fn a_queue_that_stood_still_is_listed_from_its_index() {
    let q = Site::new("");
    let enqueued = support::site::now();
    enqueue_from(&q, "alice@example.test", "x@customer.test");
    enqueue_from(&q, "bob@example.test", "y@other.test");
    std::thread::sleep(SETTLE);
    let first = listing(&q, &[]);
    assert!(
        q.queue_dir().join("index").exists(),
        "a settled full listing writes the index"
    );
    let json = listing(&q, &["--json"]);
    let (summary, indexed_ages) = split_ages(&listing(&q, &["--summary"]));
    assert_eq!(listing(&q, &[]), first);

    // Whatever the index says is what is listed: it was read, not the envelopes.
    tamper_index(&q, "alice@example.test", "carol@example.test");
    assert!(listing(&q, &[]).contains(" carol@example.test\n"));
    assert!(listing(&q, &["--json"]).contains("\"carol@example.test\""));

    // And from the envelopes, the same listings in every format.
    assert_eq!(listing_without_index(&q, &[]), first);
    assert_eq!(listing_without_index(&q, &["--json"]), json);
    let (from_envelopes, envelope_ages) = split_ages(&listing_without_index(&q, &["--summary"]));
    let listed = support::site::now();
    assert_eq!(from_envelopes, summary);
    assert_eq!(indexed_ages.len(), 3, "TOTAL and two domains: {summary}");
    for (indexed, read) in indexed_ages.iter().zip(&envelope_ages) {
        assert!(
            indexed <= read && *read <= listed - enqueued,
            "the oldest is the age of the first message at each listing: {indexed_ages:?}, then \
             {envelope_ages:?}, within {}s of the submissions",
            listed - enqueued
        );
    }
    assert_eq!(
        listing_without_index(&q, &["-R", "other.test"])
            .lines()
            .count(),
        5
    );
}

#[test]
fn any_change_to_the_queue_retires_the_index() {
    let q = Site::new("");
    enqueue_from(&q, "alice@example.test", "x@customer.test");
    std::thread::sleep(SETTLE);
    listing(&q, &[]);
    tamper_index(&q, "alice@example.test", "carol@example.test");
    assert!(listing(&q, &[]).contains("carol@example.test"));

    // A submission moves env/ and data/: the index no longer describes the queue.
    enqueue_from(&q, "bob@example.test", "y@other.test");
    let text = listing(&q, &[]);
    assert!(text.contains(" alice@example.test\n") && text.contains(" bob@example.test\n"));
    assert!(!text.contains("carol"), "{text}");

    // An envelope replaced by rename (how a queue run records an attempt).
    std::thread::sleep(SETTLE);
    listing(&q, &[]);
    let ids = q.ids();
    let path = q.queue_dir().join("env").join(&ids[0]);
    let deferred = fs::read_to_string(&path).unwrap().replace(
        "rcpt\tpending\t0\t0\tx@customer.test\t",
        "rcpt\tdeferred\t1\t0\tx@customer.test\t451 4.3.0 try later",
    );
    fs::write(path.with_extension("new"), deferred).unwrap();
    fs::rename(path.with_extension("new"), &path).unwrap();
    assert!(listing(&q, &[]).contains("(451 4.3.0 try later)"));

    // Put on hold by hand, and taken out of the queue.
    std::thread::sleep(SETTLE);
    listing(&q, &[]);
    fs::rename(&path, q.queue_dir().join("hold").join(&ids[0])).unwrap();
    let text = listing(&q, &[]);
    assert!(text.contains(&format!("{}!", ids[0])), "{text}");
    std::thread::sleep(SETTLE);
    listing(&q, &[]);
    fs::remove_file(q.queue_dir().join("hold").join(&ids[0])).unwrap();
    fs::remove_file(q.queue_dir().join("data").join(&ids[0])).unwrap();
    let text = listing(&q, &[]);
    assert!(
        !text.contains(&ids[0]) && text.contains("(1 request)"),
        "{text}"
    );
}

#[test]
fn locks_are_learnt_afresh_under_an_index() {
    let q = Site::new("");
    enqueue_from(&q, "alice@example.test", "x@customer.test");
    std::thread::sleep(SETTLE);
    listing(&q, &[]);
    assert!(q.queue_dir().join("index").exists());
    let id = q.ids().remove(0);
    let lock = fs::File::open(q.queue_dir().join("data").join(&id)).unwrap();
    lock.lock().unwrap();
    assert!(listing(&q, &[]).contains(&format!("{id}*")));
    drop(lock);
    listing_once_released(&q, &format!("{id} "));
}

#[test]
fn a_damaged_index_is_ignored_and_replaced() {
    let q = Site::new("");
    for n in 0..3 {
        enqueue_from(&q, &format!("s{n}@example.test"), "x@customer.test");
    }
    std::thread::sleep(SETTLE);
    let truth = listing(&q, &[]);
    let index = q.queue_dir().join("index");
    let whole = fs::read(&index).unwrap();

    // A record whose envelope lost its end: that one message is read from its file.
    let text = String::from_utf8(whole.clone()).unwrap();
    let garbled = text.replacen("\nend\n", "\nenD\n", 1);
    assert_ne!(garbled, text);
    fs::write(&index, garbled).unwrap();
    assert_eq!(listing(&q, &[]), truth);

    // Torn anywhere, or not an index at all: the listing is the same.
    for cut in [whole.len() / 3, whole.len() / 2, whole.len() - 3] {
        fs::write(&index, &whole[..cut]).unwrap();
        assert_eq!(listing(&q, &[]), truth, "cut at {cut}");
    }
    fs::write(&index, b"\x00\x01garbage\n").unwrap();
    assert_eq!(listing(&q, &[]), truth);
    // The settled queue's next full listing wrote a good one again.
    assert!(fs::read(&index).unwrap().starts_with(b"etrnq-index 2\t"));
    assert!(q.files("tmp").is_empty(), "{:?}", q.files("tmp"));
}

#[test]
fn listings_during_submissions_never_leave_a_stale_index() {
    let q = Site::new("");
    q.command("mailq").assert().success();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                q.command("mailq").assert().success();
            }
        });
        // Bursts with pauses long enough for the listings to write an index between them.
        for burst in 0..3 {
            let submitters: Vec<_> = (0..4)
                .map(|t| {
                    let q = &q;
                    scope.spawn(move || {
                        for n in 0..5 {
                            enqueue_from(q, &format!("b{burst}t{t}n{n}@example.test"), "x@c.test");
                        }
                    })
                })
                .collect();
            for submitter in submitters {
                submitter.join().unwrap();
            }
            std::thread::sleep(SETTLE);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let text = listing(&q, &[]);
    assert!(text.contains("(60 requests)"), "{text}");
    assert_eq!(text, listing_without_index(&q, &[]));
    assert!(q.files("tmp").is_empty(), "{:?}", q.files("tmp"));
}
