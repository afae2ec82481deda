//! queue-enqueue end to end: every sendmail argv form, and every refusal.
//!
//! Every argv form lands where it should in the envelope or the stored message, the message is
//! stored byte for byte after the headers we add, and every refusal leaves the queue as it was,
//! with its sysexits status and one line on stderr.

mod support;

use std::fs;
use std::process::Stdio;

use support::queue_files::Message;
use support::site::{HOSTNAME, Site, bin, list, stderr_lines};

const SIMPLE: &str = "Subject: test\n\nhello\n";

/// Runs queue-enqueue with `args` on `input` and asserts success and silence (cron-safe).
fn enqueue_ok(sandbox: &Site, args: &[&str], input: impl Into<Vec<u8>>) -> Message {
    let before = sandbox.ids();
    let output = sandbox
        .command("queue-enqueue")
        .args(args)
        .write_stdin(input.into())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty(), "stderr: {:?}", output.stderr);
    let new: Vec<String> = sandbox
        .ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "one new message expected, got {new:?}");
    sandbox.message(&new[0])
}

/// Runs queue-enqueue expecting refusal `status`; the queue must be exactly as before.
fn refused(sandbox: &Site, args: &[&str], input: &[u8], status: i32) -> String {
    let output = sandbox
        .command("queue-enqueue")
        .args(args)
        .write_stdin(input.to_vec())
        .output()
        .unwrap();
    refusal(sandbox, &output, status)
}

fn refusal(sandbox: &Site, output: &std::process::Output, status: i32) -> String {
    let lines = stderr_lines(output);
    assert_eq!(
        output.status.code(),
        Some(status),
        "stderr: {lines:?}, stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(lines.len(), 1, "one stderr line expected: {lines:?}");
    assert!(
        lines[0].starts_with("queue-enqueue: "),
        "stderr names the program: {lines:?}"
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
    sandbox.assert_untouched();
    lines[0].clone()
}

#[test]
fn recipients_and_sender_land_in_the_envelope() {
    let q = Site::new("");
    let m = enqueue_ok(
        &q,
        &[
            "-f",
            "alice@example.test",
            "bob@customer.test",
            "carol@other.test",
        ],
        SIMPLE,
    );
    assert_eq!(m.envelope.id, m.id);
    assert_eq!(m.envelope.sender, "alice@example.test");
    assert_eq!(
        m.envelope.addresses(),
        ["bob@customer.test", "carol@other.test"]
    );
    for r in &m.envelope.rcpts {
        assert_eq!(
            (r.status.as_str(), r.attempts, r.next_attempt),
            ("pending", 0, 0)
        );
    }
    assert_eq!(m.envelope.size, m.data.len() as u64);
    assert_eq!(
        (m.envelope.notify.clone(), m.envelope.ret.clone()),
        (None, None)
    );
}

#[test]
fn sender_spellings() {
    let q = Site::new("");
    for args in [
        ["-r", "rob@example.test"].as_slice(),
        ["-frob@example.test"].as_slice(),
        ["-rrob@example.test"].as_slice(),
    ] {
        let mut full = args.to_vec();
        full.push("u@customer.test");
        let m = enqueue_ok(&q, &full, SIMPLE);
        assert_eq!(m.envelope.sender, "rob@example.test", "{args:?}");
    }
    let null = enqueue_ok(&q, &["-f", "<>", "u@customer.test"], SIMPLE);
    assert_eq!(null.envelope.sender, "");
}

#[test]
fn default_sender_is_the_invoking_user_at_this_host() {
    let q = Site::new("");
    let m = enqueue_ok(&q, &["u@customer.test"], SIMPLE);
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    assert_eq!(m.envelope.sender, format!("{user}@{HOSTNAME}"));
}

#[test]
fn full_name_goes_into_an_added_from() {
    let q = Site::new("");
    let m = enqueue_ok(
        &q,
        &[
            "-F",
            "Alice Smith",
            "-f",
            "alice@example.test",
            "u@customer.test",
        ],
        SIMPLE,
    );
    assert_eq!(m.fields("From"), ["From: Alice Smith <alice@example.test>"]);
    let quoted = enqueue_ok(
        &q,
        &[
            "-F",
            "Smith, Alice",
            "-f",
            "alice@example.test",
            "u@customer.test",
        ],
        SIMPLE,
    );
    assert_eq!(
        quoted.fields("From"),
        ["From: \"Smith, Alice\" <alice@example.test>"]
    );
    // A From: already there wins over -F.
    let kept = enqueue_ok(
        &q,
        &[
            "-F",
            "Alice Smith",
            "-f",
            "alice@example.test",
            "u@customer.test",
        ],
        "From: Boss <boss@example.test>\n\nbody\n",
    );
    assert_eq!(kept.fields("From"), ["From: Boss <boss@example.test>"]);
}

#[test]
fn t_takes_to_cc_bcc_and_strips_bcc() {
    let q = Site::new("");
    let input = "From: alice@example.test\n\
                 To: Bob <bob@customer.test>, carol@customer.test\n\
                 Cc: team: dave@other.test;\n\
                 Bcc: secret@hidden.test,\n  second@hidden.test\n\
                 Subject: t\n\nbody\n";
    let m = enqueue_ok(&q, &["-t", "-f", "alice@example.test"], input);
    assert_eq!(
        m.envelope.addresses(),
        [
            "bob@customer.test",
            "carol@customer.test",
            "dave@other.test",
            "secret@hidden.test",
            "second@hidden.test"
        ]
    );
    let text = String::from_utf8(m.data.clone()).unwrap();
    assert!(m.fields("Bcc").is_empty(), "Bcc kept: {text}");
    assert!(
        !text.contains("hidden.test"),
        "Bcc continuation kept: {text}"
    );
    assert_eq!(
        m.fields("To"),
        ["To: Bob <bob@customer.test>, carol@customer.test"]
    );
    assert_eq!(m.fields("Cc"), ["Cc: team: dave@other.test;"]);
}

#[test]
fn t_adds_command_line_recipients_once() {
    let q = Site::new("");
    let m = enqueue_ok(
        &q,
        &[
            "-t",
            "-f",
            "a@example.test",
            "extra@customer.test",
            "TO@customer.test",
        ],
        "To: to@customer.test\nSubject: t\n\nbody\n",
    );
    // Command-line recipients first; to@ and TO@ differ (local parts keep their case).
    assert_eq!(
        m.envelope.addresses(),
        [
            "extra@customer.test",
            "TO@customer.test",
            "to@customer.test"
        ]
    );
    let dup = enqueue_ok(
        &q,
        &["-t", "-f", "a@example.test", "to@CUSTOMER.test"],
        "To: to@customer.test\n\nbody\n",
    );
    assert_eq!(dup.envelope.addresses(), ["to@CUSTOMER.test"]);
}

#[test]
fn a_lone_dot_ends_input_unless_i() {
    let q = Site::new("");
    let input = "Subject: dots\n\nbefore\n.\nafter\n";
    let cut = enqueue_ok(&q, &["u@customer.test"], input);
    assert!(cut.data.ends_with(b"\n\nbefore\n"), "{:?}", cut.data);
    for flag in ["-i", "-oi"] {
        let whole = enqueue_ok(&q, &[flag, "u@customer.test"], input);
        assert!(whole.data.ends_with(input.as_bytes()), "{flag}");
    }
    // A dot with more on its line is text, with or without -i.
    let dotted = enqueue_ok(&q, &["u@customer.test"], "Subject: x\n\n.. \n.x\n");
    assert!(dotted.data.ends_with(b"\n\n.. \n.x\n"));
}

#[test]
fn sendmail_options_without_meaning_here_are_accepted() {
    let q = Site::new("");
    for args in [
        ["-odq"].as_slice(),
        &["-oem"],
        &["-O", "DeliveryMode=q"],
        &["-ODeliveryMode=q"],
        &["-Am"],
        &["-B8BITMIME"],
        &["-B", "7BIT"],
        &["-bm"],
        &["-odq", "-oem", "-Am", "-B8BITMIME", "-bm", "-oi"],
    ] {
        let mut full = args.to_vec();
        full.extend(["-f", "a@example.test", "u@customer.test"]);
        let m = enqueue_ok(&q, &full, SIMPLE);
        assert_eq!(m.envelope.addresses(), ["u@customer.test"], "{args:?}");
        assert!(m.data.ends_with(SIMPLE.as_bytes()), "{args:?}");
    }
}

#[test]
fn v_prints_the_queue_id_and_nothing_else_prints_anything() {
    let q = Site::new("");
    let output = q
        .command("queue-enqueue")
        .args(["-v", "u@customer.test"])
        .write_stdin(SIMPLE)
        .output()
        .unwrap();
    assert!(output.status.success());
    let id = q.only_message().id;
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("queued as {id}\n")
    );
    let quiet = q
        .command("queue-enqueue")
        .arg("u@customer.test")
        .write_stdin(SIMPLE)
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(quiet.stdout.is_empty() && quiet.stderr.is_empty());
}

#[test]
fn dsn_options_are_stored() {
    let q = Site::new("");
    let never = enqueue_ok(&q, &["-N", "never", "u@customer.test"], SIMPLE);
    assert_eq!(never.envelope.notify.as_deref(), Some("never"));
    let m = enqueue_ok(
        &q,
        &[
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "env-42@example.test",
            "u@customer.test",
        ],
        SIMPLE,
    );
    assert_eq!(m.envelope.notify.as_deref(), Some("success,failure"));
    assert_eq!(m.envelope.ret.as_deref(), Some("hdrs"));
    assert_eq!(m.envelope.envid.as_deref(), Some("env-42@example.test"));
}

#[test]
fn bad_dsn_options_are_usage_errors() {
    let q = Site::new("");
    refused(&q, &["-N", "sometimes", "u@customer.test"], b"x\n", 64);
    refused(&q, &["-R", "body", "u@customer.test"], b"x\n", 64);
    refused(&q, &["-V", "has space", "u@customer.test"], b"x\n", 64);
}

#[test]
fn double_dash_ends_options() {
    let q = Site::new("");
    let m = enqueue_ok(
        &q,
        &["-f", "a@example.test", "--", "-odd@customer.test"],
        SIMPLE,
    );
    assert_eq!(m.envelope.addresses(), ["-odd@customer.test"]);
}

#[test]
fn config_file_names_the_queue_and_the_host() {
    let q = Site::new("");
    let elsewhere = q.dir.path().join("from-config");
    let config = q.dir.path().join("other.toml");
    fs::write(
        &config,
        format!(
            "queue_dir = \"{}\"\nhostnames = [\"relay.config.test\"]\n",
            elsewhere.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(bin("queue-enqueue"))
        .env_remove("ETRNQ_QUEUE_DIR")
        .env_remove("ETRNQ_CONFIG")
        .args(["-C".as_ref(), config.as_os_str(), "plain-user".as_ref()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let ids = list(&elsewhere.join("env"));
    assert_eq!(ids.len(), 1);
    let env = fs::read_to_string(elsewhere.join("env").join(&ids[0])).unwrap();
    // An unqualified recipient is qualified with this host's configured name.
    assert!(env.contains("\tplain-user@relay.config.test\t"), "{env}");
    let data = fs::read_to_string(elsewhere.join("data").join(&ids[0])).unwrap();
    assert!(
        data.starts_with("Received: by relay.config.test "),
        "{data}"
    );
    q.assert_untouched();
}

#[test]
fn queue_dir_from_environment_and_flag() {
    let q = Site::new("");
    let from_env = q.dir.path().join("from-env");
    let from_flag = q.dir.path().join("from-flag");
    let run = |extra: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(bin("queue-enqueue"))
            .env("ETRNQ_CONFIG", q.config_path())
            .env("ETRNQ_QUEUE_DIR", &from_env)
            .args(extra)
            .arg("u@customer.test")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    run(&[]);
    assert_eq!(list(&from_env.join("env")).len(), 1);
    run(&["--queue-dir".as_ref(), from_flag.as_os_str()]);
    assert_eq!(list(&from_flag.join("env")).len(), 1);
    assert_eq!(list(&from_env.join("env")).len(), 1);
}

#[test]
fn added_headers_only_when_missing_and_exactly_one_received() {
    let q = Site::new("");
    let bare = enqueue_ok(&q, &["-f", "a@example.test", "u@customer.test"], SIMPLE);
    assert_eq!(bare.fields("Received").len(), 1);
    assert!(bare.fields("Received")[0].starts_with(&format!("Received: by {HOSTNAME} ")));
    assert!(bare.header().contains(&format!("\tid {}; ", bare.id)));
    assert_eq!(bare.fields("Date").len(), 1);
    assert_eq!(
        bare.fields("Message-ID"),
        [format!("Message-ID: <{}@{HOSTNAME}>", bare.id)]
    );
    assert_eq!(bare.fields("From"), ["From: a@example.test"]);
    let header = bare.header();
    assert!(header.starts_with("Received: "), "{header}");

    let full = "Received: from a by b; Mon, 23 Nov 2026 06:00:00 +0000\n\
                Received: from c by a; Mon, 23 Nov 2026 05:59:00 +0000\n\
                Date: Mon, 23 Nov 2026 06:27:00 +0000\n\
                From: Alice <alice@example.test>\n\
                Message-ID: <given@example.test>\n\
                Subject: complete\n\nbody\n";
    let m = enqueue_ok(&q, &["u@customer.test"], full);
    assert_eq!(m.fields("Received").len(), 3, "one line added to two");
    assert_eq!(m.fields("Date"), ["Date: Mon, 23 Nov 2026 06:27:00 +0000"]);
    assert_eq!(m.fields("From"), ["From: Alice <alice@example.test>"]);
    assert_eq!(m.fields("Message-ID"), ["Message-ID: <given@example.test>"]);
    // Ours on top, theirs exactly as they were.
    let (ours, rest) = m.data.split_at(m.data.len() - full.len());
    assert_eq!(rest, full.as_bytes());
    assert!(ours.starts_with(b"Received: by "));
    assert_eq!(
        String::from_utf8_lossy(ours).matches("Received:").count(),
        1
    );
}

/// Everything after our added headers is the input, byte for byte.
fn assert_stored_exactly(m: &Message, input: &[u8]) {
    assert!(m.data.len() > input.len());
    let (ours, rest) = m.data.split_at(m.data.len() - input.len());
    assert!(rest == input, "stored message differs from the input");
    assert!(ours.starts_with(b"Received: by "));
    assert_eq!(m.envelope.size, m.data.len() as u64);
}

#[test]
fn eight_bit_long_line_and_crlf_messages_are_byte_exact() {
    let q = Site::new("");
    let args = ["-f", "a@example.test", "u@customer.test"];

    let mut eight_bit = b"Subject: =?utf-8?q?caf=C3=A9?=\nX-Raw: \xe9t\xe9\n\n".to_vec();
    eight_bit.extend((0u8..=255).filter(|&b| b != b'\n').cycle().take(4000));
    eight_bit.extend(b"\n\xff\xfe\x00\x01 not utf-8 \xc3\x28\n");
    assert_stored_exactly(&enqueue_ok(&q, &args, eight_bit.clone()), &eight_bit);

    let mut long = b"Subject: long\n\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 100 * 1024));
    long.push(b'\n');
    assert_stored_exactly(&enqueue_ok(&q, &args, long.clone()), &long);

    // A header line of 100,000 octets: the whole header section still fits its 100 KiB bound.
    let mut long_header = b"X-Long: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'y', 100_000));
    long_header.extend(b"\nSubject: h\n\nbody without final newline");
    assert_stored_exactly(&enqueue_ok(&q, &args, long_header.clone()), &long_header);

    let crlf = b"Subject: crlf\r\nTo: u@customer.test\r\n\r\nline one\r\nbare lf\nline three\r\n";
    let m = enqueue_ok(&q, &args, crlf.to_vec());
    assert_stored_exactly(&m, crlf);
    let ours = &m.data[..m.data.len() - crlf.len()];
    let lines = ours.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    for line in lines {
        assert!(
            line.ends_with(b"\r"),
            "added header line without CRLF: {line:?}"
        );
    }
}

#[test]
fn text_without_headers_and_empty_input() {
    let q = Site::new("");
    let m = enqueue_ok(&q, &["u@customer.test"], "just words\nmore\n");
    let text = String::from_utf8(m.data.clone()).unwrap();
    // The text must not become part of our header section.
    assert!(text.ends_with("\n\njust words\nmore\n"), "{text:?}");
    let empty = enqueue_ok(&q, &["u@customer.test"], "");
    assert!(empty.data.starts_with(b"Received: "));
    assert_eq!(empty.envelope.size, empty.data.len() as u64);
}

#[test]
fn refusals_leave_the_queue_unchanged() {
    let q = Site::new("");
    let cases: &[(&[&str], &[u8], i32, &str)] = &[
        (&[], b"Subject: x\n\nbody\n", 64, "no recipients"),
        (&["-f", "a@example.test"], b"x\n", 64, "no recipients"),
        (&["foo@@bar"], b"x\n", 64, "foo@@bar"),
        (&["<unbalanced@customer.test"], b"x\n", 64, "unbalanced"),
        (&["u@customer.test", "a b c"], b"x\n", 64, "a b c"),
        (
            &["-f", "bad sender@@x", "u@customer.test"],
            b"x\n",
            64,
            "sender",
        ),
        (&["-t"], b"Subject: none\n\nbody\n", 65, "no recipient"),
        (
            &["-t"],
            b"To: ok@customer.test, broken@@x\n\nbody\n",
            65,
            "To",
        ),
        (&["--bogus", "u@customer.test"], b"x\n", 64, "--bogus"),
        (&["-X", "u@customer.test"], b"x\n", 64, "-X"),
        (&["-bp"], b"", 64, "-bp"),
        (&["-bs", "u@customer.test"], b"", 64, "-bs"),
    ];
    for (args, input, status, says) in cases {
        let line = refused(&q, args, input, *status);
        assert!(
            line.to_lowercase().contains(&says.to_lowercase()),
            "{args:?}: {line:?} does not mention {says:?}"
        );
    }
}

#[test]
fn size_limit_from_the_configuration() {
    let q = Site::new("max_message_size = 2000\n");
    let mut big = b"Subject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"0123456789abcdef\n", 200).flatten());
    let line = refused(&q, &["u@customer.test"], &big, 65);
    assert!(line.contains("2000"), "{line}");
    // The limit counts the stored message, our headers included: far below it is fine.
    enqueue_ok(&q, &["u@customer.test"], &big[..600]);
}

#[test]
fn a_header_section_over_100_kib_is_refused_however_it_is_made() {
    let q = Site::new("");
    let args = ["-f", "a@example.test", "u@customer.test"];
    // Many small fields, and one field longer than the bound on a single line.
    let mut many = b"a: b\n".repeat(30_000);
    many.extend(b"\nbody\n");
    let mut one = b"X-Long: ".to_vec();
    one.extend(std::iter::repeat_n(b'z', 3 * 1024 * 1024));
    one.extend(b"\n\nbody\n");
    for input in [many, one] {
        let line = refused(&q, &args, &input, 65);
        assert!(
            line.contains("header section exceeds 102400 bytes"),
            "{line}"
        );
    }
    // Just under the bound is taken as it is.
    let mut under = b"a: b\n".repeat(20_000);
    under.extend(b"\nbody\n");
    let m = enqueue_ok(&q, &args, under.clone());
    assert_stored_exactly(&m, &under);
}

#[test]
fn below_the_free_space_reserve_nothing_is_queued() {
    // More than any test machine has free: the reserve is never met.
    let q = Site::new("queue_min_free = \"4000000G\"\n");
    let line = refused(&q, &["u@customer.test"], SIMPLE.as_bytes(), 75);
    assert!(line.contains("less than queue_min_free"), "{line}");
    assert!(line.contains("try again later"), "{line}");
    // A reserve the file system holds, in bytes or with a unit, lets mail in.
    for reserve in ["queue_min_free = 1\n", "queue_min_free = \"1K\"\n"] {
        let q = Site::new(reserve);
        enqueue_ok(&q, &["u@customer.test"], SIMPLE);
    }
    let q = Site::new("queue_min_free = \"12X\"\n");
    let line = refused(&q, &["u@customer.test"], SIMPLE.as_bytes(), 78);
    assert!(line.contains("queue_min_free"), "{line}");
}

#[test]
fn hop_limit_from_the_configuration() {
    let q = Site::new("max_hops = 3\n");
    let hops = |n: usize| -> Vec<u8> {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&format!(
                "Received: from h{i} by h{}; Mon, 23 Nov 2026 06:00:00 +0000\n",
                i + 1
            ));
        }
        m.push_str("Subject: loop\n\nbody\n");
        m.into_bytes()
    };
    let line = refused(&q, &["u@customer.test"], &hops(3), 65);
    assert!(line.contains("hops"), "{line}");
    refused(&q, &["u@customer.test"], &hops(7), 65);
    // Two submitted plus ours is exactly the limit: accepted.
    let m = enqueue_ok(&q, &["u@customer.test"], hops(2));
    assert_eq!(m.fields("Received").len(), 3);
}

#[test]
fn unreadable_input_is_noinput() {
    let q = Site::new("");
    let output = q
        .std_command("queue-enqueue")
        .arg("u@customer.test")
        .stdin(fs::File::open(q.dir.path()).unwrap())
        .output()
        .unwrap();
    let line = refusal(&q, &output, 66);
    assert!(line.contains("cannot read the message"), "{line}");
}

#[test]
fn bad_configuration_is_config_error() {
    let q = Site::new("max_hopz = 3\n");
    let line = refused(&q, &["u@customer.test"], b"x\n", 78);
    assert!(
        line.contains("etrnq.toml") && line.contains("max_hopz"),
        "{line}"
    );
    let missing = q.dir.path().join("missing.toml");
    let output = std::process::Command::new(bin("queue-enqueue"))
        .env_remove("ETRNQ_QUEUE_DIR")
        .env_remove("ETRNQ_CONFIG")
        .arg("-C")
        .arg(&missing)
        .arg("--queue-dir")
        .arg(q.queue_dir())
        .arg("u@customer.test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    refusal(&q, &output, 78);
}

/// A full file system: a private mount namespace with a 64 KiB tmpfs as the queue, so the host's
/// mounts are never touched. Needs root and unshare(1); skipped with a reason otherwise.
#[test]
fn full_disk_is_tempfail_and_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() {
        support::skip("a private mount namespace needs root");
        return;
    }
    let probe = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        support::skip("unshare -m is not available here");
        return;
    }
    // No reserve: this is about the disk filling while a message is written.
    let q = Site::new("queue_min_free = 0\n");
    let mount = q.dir.path().join("small");
    fs::create_dir(&mount).unwrap();
    let input = q.dir.path().join("big.eml");
    let mut big = b"Subject: too big for the disk\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"a line of text that fills the disk\n", 8000).flatten());
    fs::write(&input, &big).unwrap();
    // The listing runs inside the namespace: the tmpfs and what is on it vanish with it.
    let script = r#"
        mount -t tmpfs -o size=64k none "$1" || exit 99
        "$2" -C "$3" --queue-dir "$1/q" u@customer.test < "$4"
        rc=$?
        echo "rc=$rc"
        find "$1/q" -type f
        "$2" -C "$3" --queue-dir "$1/q" -f a@example.test u@customer.test < /dev/null && echo small-ok
        "#;
    let output = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(bin("queue-enqueue"))
        .arg(q.config_path())
        .arg(&input)
        .env_remove("ETRNQ_QUEUE_DIR")
        .env_remove("ETRNQ_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(99), "mount failed: {stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("rc=75"),
        "stdout {stdout:?} stderr {stderr:?}"
    );
    // Nothing was left behind, and the same queue still takes a message that fits.
    assert_eq!(lines.next(), Some("small-ok"), "files left: {stdout:?}");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("queue-enqueue: "), "{errors:?}");
    assert!(errors[0].contains("No space left"), "{errors:?}");
    assert!(
        fs::read_dir(&mount).unwrap().next().is_none(),
        "tmpfs leaked to the host"
    );
}
