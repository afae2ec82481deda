//! queue-run end to end: the real binaries against SMTP servers the test starts on loopback.
//!
//! queue-enqueue fills the queue, queue-run flushes it, mailq looks at what is left; the
//! servers are Postfix's smtp-sink and the scripted server, whose answers the test gives
//! recipient by recipient. MX routing asks a DNS server the test starts on 127.0.0.1, never the
//! machine's resolver. Each test has its own queue, configuration file and log file in a
//! temporary directory.
//!
//! Assertions are about what happened (what the server received, what the queue holds, what
//! the log says), never about how long it took.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::dns::DnsServer;
use support::site::{self, SENDER, Site, lf, message, now};
use support::smtp::{Script, Server};
use support::tls;

/// The open recipients of a `mailq --json` entry, by address.
fn recipient<'a>(entry: &'a Value, address: &str) -> Option<&'a Value> {
    entry["recipients"]
        .as_array()?
        .iter()
        .find(|r| r["address"].as_str() == Some(address))
}

/// Messages queued from the null sender (bounces).
fn bounces(site: &Site) -> Vec<Value> {
    site.mailq()
        .into_iter()
        .filter(|m| m["sender"].as_str() == Some(""))
        .collect()
}

/// The text of the one bounce in the queue.
fn only_bounce(site: &Site) -> String {
    let bounced = bounces(site);
    assert_eq!(bounced.len(), 1, "{bounced:?}");
    String::from_utf8(site.data(bounced[0]["queue_id"].as_str().expect("id"))).expect("text")
}

fn rcpt_lines(mta: &Server) -> Vec<String> {
    mta.commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("RCPT TO:"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Postfix's smtp-sink: a real MTA's receiving side.

/// smtp-sink writing every message it receives into its own file in `dir`.
struct SmtpSink {
    child: Child,
    port: u16,
}

impl SmtpSink {
    fn start(dir: &Path) -> Result<SmtpSink, String> {
        let program = "/usr/sbin/smtp-sink";
        if !Path::new(program).exists() {
            return Err(
                "postfix's smtp-sink is not installed (contrib/run-tests.sh installs it)".into(),
            );
        }
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let mut command = Process::new(program);
            if site::is_root() {
                // smtp-sink refuses to run as root; it drops to nobody after binding.
                command.args(["-u", "nobody"]);
            }
            let template = format!("{}/%M.", dir.display());
            command
                .args(["-d", &template, &format!("127.0.0.1:{port}"), "64"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(SmtpSink { child, port });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err("smtp-sink did not start listening".into())
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as smtp-sink stored it: the envelope lines it prepends, and the message itself.
struct Dumped {
    recipients: Vec<String>,
    message: Vec<u8>,
}

/// Splits smtp-sink's dump file: its own `X-...:` lines and three-line `Received:` header come
/// first, the message follows, and it adds one empty line at the end.
fn parse_dump(bytes: &[u8]) -> Dumped {
    let text = bytes;
    let mut recipients = Vec::new();
    let mut rest = text;
    let mut own_received_lines = 0;
    while own_received_lines < 3 {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("dump header line");
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        if let Some(rcpt) = line.strip_prefix("X-Rcpt-Args: ") {
            recipients.push(rcpt.trim_matches(['<', '>']).to_string());
        }
        if line.starts_with("Received: ") || own_received_lines > 0 {
            own_received_lines += 1;
        }
        rest = &rest[end + 1..];
    }
    let message = rest
        .strip_suffix(b"\n")
        .expect("smtp-sink's final empty line");
    Dumped {
        recipients,
        message: message.to_vec(),
    }
}

fn received_count(message: &[u8]) -> usize {
    let text = String::from_utf8_lossy(message);
    text.lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| line.to_ascii_lowercase().starts_with("received:"))
        .count()
}

#[test]
fn a_domain_is_flushed_to_postfix_smtp_sink_byte_for_byte() {
    let dumps = tempfile::tempdir().expect("dump dir");
    {
        use std::os::unix::fs::PermissionsExt;
        // smtp-sink writes as nobody.
        std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod dump dir");
    }
    let sink = match SmtpSink::start(dumps.path()) {
        Ok(sink) => sink,
        Err(reason) => {
            support::skip(reason);
            return;
        }
    };
    let site = Site::new(&format!(
        "[routes]\n\"customer.test\" = \"[127.0.0.1]:{}\"\n",
        sink.port
    ));
    // Dots where SMTP's transparency matters, a CRLF submission, 8-bit text, a long line.
    let dotted =
        b"Subject: dots\n\n.leading dot\n..two dots\nmiddle\n.\nafter a lone dot\n. \n".to_vec();
    let crlf = b"Subject: crlf\r\nFrom: <frank@sender.test>\r\n\r\nline one\r\n.dot\r\n".to_vec();
    let eight_bit = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\n\nGrüße aus Köln\n"
        .as_bytes()
        .to_vec();
    let long = format!("Subject: long\n\n{}\nend\n", "x".repeat(900)).into_bytes();
    let mut stored = Vec::new();
    for (args, body) in [
        (
            vec!["-i", "-f", SENDER, "a@customer.test", "b@customer.test"],
            &dotted,
        ),
        (vec!["-i", "-f", SENDER, "c@customer.test"], &crlf),
        (vec!["-f", SENDER, "d@customer.test"], &eight_bit),
        (vec!["-f", SENDER, "a@customer.test"], &long),
    ] {
        let id = site.enqueue(&args, body);
        stored.push((id.clone(), site.data(&id)));
    }
    // What -i kept in the queue is what the test compares: the lone dot and what follows it.
    assert!(
        lf(&stored[0].1).ends_with(b"middle\n.\nafter a lone dot\n. \n"),
        "queue-enqueue -i kept the lone dot"
    );

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, site.log());
    assert_eq!(run.stdout, "");
    assert_eq!(
        site.ids(),
        Vec::<String>::new(),
        "everything delivered and removed"
    );
    assert!(site.mailq().is_empty());

    let dumped: Vec<Dumped> = site::files(dumps.path())
        .iter()
        .map(|p| parse_dump(&std::fs::read(p).expect("dump file")))
        .collect();
    assert_eq!(dumped.len(), stored.len(), "one transaction per message");
    for (id, data) in &stored {
        let arrived: Vec<&Dumped> = dumped
            .iter()
            .filter(|d| lf(&d.message) == lf(data))
            .collect();
        assert_eq!(
            arrived.len(),
            1,
            "{id} arrived exactly once, identical apart from line ends:\nstored:\n{}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(
            received_count(&arrived[0].message),
            1,
            "only queue-enqueue's Received:"
        );
    }
    let mut all: Vec<String> = dumped.iter().flat_map(|d| d.recipients.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        [
            "a@customer.test",
            "a@customer.test",
            "b@customer.test",
            "c@customer.test",
            "d@customer.test"
        ]
    );
    let log = site.log();
    assert_eq!(
        log.matches("status=sent").count(),
        5,
        "one log line per recipient:\n{log}"
    );
    assert!(
        log.contains(&format!("relay=[127.0.0.1]:{}", sink.port)),
        "the log names the relay:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Per-recipient outcomes, bounces, exit status.

#[test]
fn accepted_deferred_and_rejected_recipients_end_in_exactly_that_state() {
    let mta = Script::default().start();
    mta.rule("later", "450 4.2.1 Mailbox busy, try later");
    mta.rule(
        "gone",
        "550 5.1.1 <gone@customer.test>: Recipient address rejected: User unknown",
    );
    let site = Site::new(&mta.routes(&["customer.test"]));
    let before = now();
    let id = site.enqueue(
        &[
            "-f",
            SENDER,
            "ann@customer.test",
            "bob@customer.test",
            "later1@customer.test",
            "later2@customer.test",
            "gone1@customer.test",
            "gone2@customer.test",
        ],
        &message("mixed", "Hello all.\nSECRET BODY LINE\n"),
    );

    let run = site.run(&[]);
    assert_eq!(
        run.code, 75,
        "deferred recipients make EX_TEMPFAIL: {}",
        run.stderr
    );
    assert_eq!(run.stdout, "");

    // The server saw one transaction with the two it accepted.
    let messages = mta.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].recipients,
        ["ann@customer.test", "bob@customer.test"]
    );

    // The original stays with exactly its deferred recipients.
    let entry = site.entry(&id).expect("the message stays queued");
    let open: Vec<&str> = entry["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["address"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(open, ["later1@customer.test", "later2@customer.test"]);
    for address in open {
        let r = recipient(&entry, address).expect("listed");
        assert_eq!(r["status"], "deferred");
        assert_eq!(r["attempts"], 1);
        assert!(
            r["next_attempt"].as_i64().expect("next_attempt") > before,
            "next attempt lies ahead: {r}"
        );
        let reason = r["delay_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("450 4.2.1 Mailbox busy"), "{reason}");
    }

    // One bounce, from <> to the sender, reporting both rejected recipients.
    let bounced = bounces(&site);
    assert_eq!(bounced.len(), 1, "exactly one bounce: {bounced:?}");
    let bounce = &bounced[0];
    let to: Vec<&str> = bounce["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["address"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(to, [SENDER]);
    let report = String::from_utf8(site.data(bounce["queue_id"].as_str().expect("id")))
        .expect("bounce is text");
    assert!(report.contains("Content-Type: multipart/report; report-type=delivery-status"));
    assert!(report.contains("Content-Type: message/delivery-status"));
    for gone in ["gone1@customer.test", "gone2@customer.test"] {
        assert!(
            report.contains(&format!("Final-Recipient: rfc822; {gone}")),
            "{report}"
        );
    }
    assert_eq!(report.matches("Action: failed").count(), 2, "{report}");
    assert_eq!(report.matches("Status: 5.1.1").count(), 2, "{report}");
    assert!(report.contains(
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@customer.test>: Recipient address rejected"
    ));
    for not_failed in ["ann@", "bob@", "later1@", "later2@"] {
        assert!(
            !report.contains(&format!("Final-Recipient: rfc822; {not_failed}")),
            "{not_failed} did not fail:\n{report}"
        );
    }
    assert!(
        report.contains("Subject: mixed"),
        "original headers included"
    );
    assert!(
        !report.contains("SECRET BODY LINE"),
        "only the headers, not the body"
    );

    // One log line per recipient attempt.
    let log = site.log();
    assert_eq!(log.matches("status=sent").count(), 2, "{log}");
    assert_eq!(log.matches("status=deferred").count(), 2, "{log}");
    assert_eq!(log.matches("status=bounced").count(), 2, "{log}");
    assert!(
        log.contains(&format!("{id}: to=<gone1@customer.test>, relay=")),
        "{log}"
    );
}

#[test]
fn a_bounce_is_never_bounced() {
    let mta = Script::default().start();
    mta.rule("gone", "550 5.1.1 User unknown");
    let site = Site::new(&mta.routes(&["customer.test"]));
    site.enqueue(
        &["-f", "<>", "gone@customer.test"],
        &message("a bounce", "report\n"),
    );
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        site.mailq().is_empty(),
        "no bounce for a null sender: {:?}",
        site.mailq()
    );
    assert_eq!(rcpt_lines(&mta), ["RCPT TO:<gone@customer.test>"]);
    assert!(site.log().contains("status=bounced"), "{}", site.log());
}

#[test]
fn a_clean_run_is_silent_and_verbose_shows_the_conversation() {
    let mta = Script::default().start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    site.enqueue(&["-f", SENDER, "a@customer.test"], &message("one", "1\n"));
    let quiet = site.run(&[]);
    assert_eq!(
        (quiet.code, quiet.stdout.as_str(), quiet.stderr.as_str()),
        (0, "", "")
    );

    site.enqueue(&["-f", SENDER, "b@customer.test"], &message("two", "2\n"));
    let verbose = site.run(&["-v"]);
    assert_eq!(verbose.code, 0);
    assert_eq!(verbose.stdout, "", "the transcript goes to stderr");
    for expected in [
        "EHLO mx2.isp.test",
        "MAIL FROM:<frank@sender.test>",
        "RCPT TO:<b@customer.test>",
        "DATA",
        "250 2.0.0 Ok",
    ] {
        assert!(
            verbose.stderr.contains(expected),
            "{expected}:\n{}",
            verbose.stderr
        );
    }
    assert_eq!(mta.message_count(), 2);
}

#[test]
fn a_message_that_cannot_be_removed_is_logged_and_counted() {
    // The server holds its answer to the message while the test puts a directory where the
    // envelope was: the runner read the envelope before it sent DATA, and the removal that
    // follows the answer then fails as one the file system refuses would.
    let mta = Script::default()
        .per_message(Duration::from_secs(2))
        .start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    let id = site.enqueue(
        &["-f", SENDER, "ann@customer.test"],
        &message("stuck", "1\n"),
    );
    let child = Process::new(assert_cmd::cargo::cargo_bin("queue-run"))
        .arg("-C")
        .arg(site.config_path())
        .env_remove("ETRNQ_CONFIG")
        .env_remove("ETRNQ_QUEUE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("queue-run starts");
    let deadline = Instant::now() + site::LIMIT;
    while !mta.commands().iter().any(|c| c == "DATA") {
        assert!(Instant::now() < deadline, "the message never reached DATA");
        std::thread::sleep(Duration::from_millis(2));
    }
    let envelope = site.envelope_path(&id);
    std::fs::rename(&envelope, site.dir.path().join("envelope")).expect("move the envelope");
    std::fs::create_dir(&envelope).expect("a directory in its place");

    let output = child.wait_with_output().expect("queue-run ends");
    assert_eq!(
        output.status.code(),
        Some(75),
        "a message left in the queue makes EX_TEMPFAIL: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty());
    assert_eq!(mta.message_count(), 1);
    let log = site.log();
    assert!(
        log.contains(&format!("{id}: to=<ann@customer.test>, relay="))
            && log.contains("status=sent"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{id}: cannot write delivery state: cannot remove")),
        "{log}"
    );
    assert!(
        site.queue_dir().join("data").join(&id).exists(),
        "the data outlives a removal that stopped at the envelope"
    );
}

#[test]
fn unreadable_envelopes_among_many_are_moved_aside_and_the_rest_delivered() {
    // More messages than one read-ahead chunk, so the plan reads envelopes on several threads;
    // queued through the library, as queue-enqueue would, without a process per message.
    let mta = Script::default().start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    let config = etrnq::config::Config::read(&site.config_path()).expect("configuration");
    let queue = etrnq::queue::Queue::open(&config.queue_dir).expect("queue");
    let ids: Vec<String> = (0..300)
        .map(|n| {
            let request = etrnq::submission::Request {
                sender: Some(SENDER.into()),
                recipients: vec![format!("u{n}@customer.test")],
                dot_ends_input: false,
                ..Default::default()
            };
            let text = message(&format!("m{n}"), "x\n");
            etrnq::submission::submit(&queue, &config, &request, text.as_slice())
                .expect("queued")
                .to_string()
        })
        .collect();
    let (garbled, dataless) = (&ids[100], &ids[280]);
    std::fs::write(site.envelope_path(garbled), b"garbage").expect("garble an envelope");
    std::fs::remove_file(site.queue_dir().join("data").join(dataless)).expect("lose data");

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(mta.message_count(), ids.len() - 2);
    assert!(site.ids().is_empty(), "{:?}", site.ids());
    let corrupt = site.queue_dir().join("corrupt");
    for name in [
        format!("{garbled}.env"),
        format!("{garbled}.data"),
        format!("{dataless}.env"),
    ] {
        assert!(corrupt.join(&name).exists(), "{name} moved aside");
    }
    let log = site.log();
    for id in [garbled, dataless] {
        let warned = log.lines().any(|line| {
            line.contains(&format!("warning: {id}: unreadable envelope ("))
                && line.ends_with("; moved to corrupt/")
        });
        assert!(warned, "{id}:\n{log}");
    }
    assert_eq!(log.matches("status=sent").count(), ids.len() - 2);
}

#[test]
fn nothing_to_do_exits_0() {
    let site = Site::new("");
    let run = site.run(&[]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "", "")
    );
}

#[test]
fn usage_and_configuration_errors_have_their_own_status() {
    let site = Site::new("");
    let run = site.run(&["-R", "not a domain"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(run.stderr.starts_with("queue-run: "), "{}", run.stderr);
    let broken = Site::new("tls = \"sometimes\"");
    let run = broken.run(&[]);
    assert_eq!(run.code, 78, "{}", run.stderr);
    assert!(run.stderr.contains("tls"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// MX routing against the test's DNS server.

/// A recording server on port 25 of `ip` (MX delivery always uses port 25), or why not.
fn mta_on_25(ip: &str) -> Option<Server> {
    if !site::is_root() {
        support::skip(format!("binding port 25 of {ip} needs root"));
        return None;
    }
    let addr: SocketAddr = format!("{ip}:25").parse().expect("address");
    match Server::try_start_on(addr, vec![Script::default()]) {
        Ok(mta) => Some(mta),
        Err(e) => panic!("cannot listen on {addr}: {e}"),
    }
}

fn dns_config(dns: &DnsServer, extra: &str) -> String {
    format!("{extra}\n[dns]\nnameservers = [{:?}]\n", dns.addr_text)
}

#[test]
fn a_dead_mx_is_followed_by_the_next() {
    let Some(live) = mta_on_25("127.0.25.2") else {
        return;
    };
    let dns = DnsServer::start();
    let site = Site::new(&dns_config(&dns, ""));
    site.enqueue(
        &["-f", "", "user@fallback.run.example"],
        &message("mx", "by MX\n"),
    );
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, site.log());
    assert!(site.mailq().is_empty());
    let messages = live.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients, ["user@fallback.run.example"]);
    assert!(
        site.log().contains("relay=live.run.example[127.0.25.2]:25"),
        "{}",
        site.log()
    );
}

#[test]
fn a_null_mx_fails_at_once_with_a_bounce() {
    let dns = DnsServer::start();
    let site = Site::new(&dns_config(
        &dns,
        "[routes]\n\"sender.test\" = \"[127.0.0.1]:9\"\n",
    ));
    let id = site.enqueue(
        &["-f", SENDER, "user@nullmx.run.example"],
        &message("n", "x\n"),
    );
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(site.entry(&id).is_none(), "the message is done");
    let report = only_bounce(&site);
    assert!(report.contains("Status: 5.1.10"), "{report}");
    assert!(report.contains("null MX"), "{report}");
}

#[test]
fn a_backup_mx_delivers_only_to_better_preferences() {
    // backup.run.example: MX 10 primary, MX 20 mx2 (this host), MX 20 peer.
    let Some(primary) = mta_on_25("127.0.25.3") else {
        return;
    };
    let myself = mta_on_25("127.0.25.4").expect("root");
    let peer = mta_on_25("127.0.25.5").expect("root");
    let dns = DnsServer::start();
    // This host is mx2.run.example.
    let site = Site::named("mx2.run.example", &dns_config(&dns, ""));
    site.enqueue(&["-f", "", "a@backup.run.example"], &message("b", "1\n"));
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, site.log());
    assert_eq!(primary.message_count(), 1);

    // With the primary down, the mail waits: never to itself, never to the equal peer.
    drop(primary);
    site.enqueue(&["-f", "", "b@backup.run.example"], &message("b", "2\n"));
    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{}\n{}", run.stderr, site.log());
    assert_eq!((myself.connections(), peer.connections()), (0, 0));
    let left = site.mailq();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["recipients"][0]["status"], "deferred");

    // When this host is the best MX there is nowhere better to go.
    site.enqueue(&["-f", "", "c@selfbest.run.example"], &message("b", "3\n"));
    let run = site.run(&["-R", "selfbest.run.example"]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert_eq!((myself.connections(), peer.connections()), (0, 0));
    let log = site.log();
    assert!(log.contains("loops back to myself"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Held domains and selection.

fn held_site(mta: &Server) -> Site {
    Site::new(&format!(
        "hold_domains = [\"held.test\"]\n{}",
        mta.routes(&["held.test", "sub.held.test", "other.test"])
    ))
}

#[test]
fn a_plain_run_leaves_held_domains_alone() {
    let mta = Script::default().start();
    let site = held_site(&mta);
    let held = site.enqueue(
        &["-f", SENDER, "h@held.test", "s@sub.held.test"],
        &message("h", "held\n"),
    );
    site.enqueue(&["-f", SENDER, "o@other.test"], &message("o", "other\n"));
    for args in [&[][..], &["-f"][..]] {
        let run = site.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    assert_eq!(rcpt_lines(&mta), ["RCPT TO:<o@other.test>"]);
    let entry = site.entry(&held).expect("held mail stays");
    for address in ["h@held.test", "s@sub.held.test"] {
        let r = recipient(&entry, address).expect("listed");
        assert_eq!(
            (r["status"].as_str(), r["attempts"].as_i64()),
            (Some("pending"), Some(0))
        );
        assert!(r["delay_reason"].is_null(), "no warning: {r}");
    }
    let log = site.log();
    assert!(
        !log.contains("held.test"),
        "no log line for held mail:\n{log}"
    );
}

#[test]
fn naming_a_held_domain_delivers_it_in_every_spelling() {
    for args in [
        vec!["-R", "held.test"],
        vec!["-qRheld.test"],
        vec!["-qR", "held.test"],
        vec!["-q", "-R", "HELD.TEST"],
    ] {
        let mta = Script::default().start();
        let site = held_site(&mta);
        let id = site.enqueue(
            &["-f", SENDER, "h@held.test", "s@sub.held.test"],
            &message("h", "x\n"),
        );
        site.enqueue(&["-f", SENDER, "o@other.test"], &message("o", "y\n"));
        let run = site.run(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert_eq!(
            rcpt_lines(&mta),
            ["RCPT TO:<h@held.test>"],
            "{args:?}: exact domain only"
        );
        let entry = site.entry(&id).expect("the subdomain's recipient waits");
        assert_eq!(entry["recipients"].as_array().map(Vec::len), Some(1));
        assert!(recipient(&entry, "s@sub.held.test").is_some());
        assert_eq!(site.mailq().len(), 2, "{args:?}: other.test was not named");
    }
}

#[test]
fn an_at_domain_covers_its_subdomains() {
    let mta = Script::default().start();
    let site = held_site(&mta);
    site.enqueue(
        &["-f", SENDER, "h@held.test", "s@sub.held.test"],
        &message("h", "x\n"),
    );
    let run = site.run(&["-R", "@held.test"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut rcpts = rcpt_lines(&mta);
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["RCPT TO:<h@held.test>", "RCPT TO:<s@sub.held.test>"]
    );
    assert!(site.mailq().is_empty());
}

#[test]
fn queue_id_and_sender_select_messages() {
    let mta = Script::default().start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    let first = site.enqueue(
        &["-f", "alice@sender.test", "a@customer.test"],
        &message("1", "1\n"),
    );
    let second = site.enqueue(
        &["-f", "bob@sender.test", "b@customer.test"],
        &message("2", "2\n"),
    );
    let third = site.enqueue(
        &["-f", "bob@sender.test", "c@customer.test"],
        &message("3", "3\n"),
    );

    let run = site.run(&["-I", &second]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(rcpt_lines(&mta), ["RCPT TO:<b@customer.test>"]);
    assert_eq!(site.ids(), [first.clone(), third.clone()]);

    let run = site.run(&["-qSALICE"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        site.ids(),
        std::slice::from_ref(&third),
        "-S is a case-insensitive substring of the sender"
    );
    let run = site.run(&["-S", "bob@"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(site.ids().is_empty());
}

#[test]
fn a_plain_run_waits_for_the_next_attempt_and_force_does_not() {
    let mta = Script::default().start();
    mta.rule("u", "421 4.3.2 Service shutting down");
    let site = Site::new(&mta.routes(&["customer.test"]));
    let id = site.enqueue(&["-f", SENDER, "u@customer.test"], &message("r", "x\n"));
    assert_eq!(site.run(&[]).code, 75);
    let after_first = site.entry(&id).expect("deferred");
    assert_eq!(
        recipient(&after_first, "u@customer.test").expect("listed")["attempts"],
        1
    );

    mta.clear_rules();
    let connections = mta.connections();
    let run = site.run(&[]);
    assert_eq!(
        run.code, 0,
        "nothing due is nothing deferred: {}",
        run.stderr
    );
    assert_eq!(mta.connections(), connections, "no attempt before its time");
    let entry = site.entry(&id).expect("still deferred");
    assert_eq!(entry, after_first, "state untouched");

    let run = site.run(&["-qf"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(mta.message_count(), 1);
    assert!(site.entry(&id).is_none());
}

#[test]
fn retry_waits_grow_by_the_factor() {
    let mta = Script::default().start();
    mta.rule("u", "450 4.2.0 later");
    let site = Site::new(&format!(
        "retry_first = \"10m\"\nretry_factor = 2.0\n{}",
        mta.routes(&["customer.test"])
    ));
    let id = site.enqueue(&["-f", SENDER, "u@customer.test"], &message("r", "x\n"));
    let mut waits = Vec::new();
    for _ in 0..3 {
        let before = now();
        assert_eq!(site.run(&["-f"]).code, 75);
        let after = now();
        let entry = site.entry(&id).expect("deferred");
        let next = recipient(&entry, "u@customer.test").expect("listed")["next_attempt"]
            .as_i64()
            .expect("number");
        assert!(next >= before && next <= after + 2 * 3600);
        waits.push((next - before, next - after));
    }
    for (n, expected) in [600, 1200, 2400].into_iter().enumerate() {
        let (upper, lower) = waits[n];
        assert!(
            lower <= expected && expected <= upper,
            "attempt {}: wait {waits:?}, expected {expected}",
            n + 1
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry and size.

#[test]
fn expired_mail_fails_with_one_bounce_held_domains_included() {
    let mta = Script::default().start();
    mta.rule("slow", "450 4.2.1 try later");
    let site = Site::new(&format!(
        "hold_domains = [\"held.test\"]\n{}",
        mta.routes(&["held.test", "customer.test"])
    ));
    let id = site.enqueue(
        &["-f", SENDER, "h@held.test", "slow@customer.test"],
        &message("old", "x\n"),
    );
    assert_eq!(site.run(&[]).code, 75, "the deferral comes first");
    site.age(&id, 6 * 86400);
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(site.entry(&id).is_none(), "expired mail leaves the queue");
    let report = only_bounce(&site);
    assert_eq!(report.matches("Status: 4.4.7").count(), 2, "{report}");
    assert!(report.contains("Final-Recipient: rfc822; h@held.test"));
    assert!(report.contains("Final-Recipient: rfc822; slow@customer.test"));
    assert!(
        report.contains("last error: host"),
        "the last deferral is told: {report}"
    );
    assert_eq!(
        rcpt_lines(&mta),
        ["RCPT TO:<slow@customer.test>"],
        "no attempt once expired"
    );
}

#[test]
fn a_short_queue_lifetime_expires_mail_too() {
    let mta = Script::default().start();
    let site = Site::new(&format!(
        "queue_lifetime = \"1s\"\nhold_domains = [\"held.test\"]\n{}",
        mta.routes(&["held.test"])
    ));
    let id = site.enqueue(&["-f", SENDER, "h@held.test"], &message("old", "x\n"));
    site.age(&id, 2);
    assert_eq!(site.run(&[]).code, 0);
    assert!(site.entry(&id).is_none());
    assert_eq!(bounces(&site).len(), 1);
    assert_eq!(mta.connections(), 0);
}

#[test]
fn size_limits_select_messages() {
    let mta = Script::default().start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    let small = site.enqueue(
        &["-f", SENDER, "small@customer.test"],
        &message("s", "tiny\n"),
    );
    let large = site.enqueue(
        &["-f", SENDER, "large@customer.test"],
        &message(
            "l",
            &"a line of forty characters, more or less\n".repeat(500),
        ),
    );
    let size = |id: &str| {
        site.entry(id).expect("queued")["message_size"]
            .as_u64()
            .expect("message_size")
    };
    assert!(size(&small) < 10000 && size(&large) > 20000);
    let run = site.run(&["--max-size", "10000"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(rcpt_lines(&mta), ["RCPT TO:<small@customer.test>"]);
    assert_eq!(site.ids(), std::slice::from_ref(&large));
    let run = site.run(&["--min-size", "20000"]);
    assert_eq!(run.code, 0);
    assert!(site.ids().is_empty());
    assert_eq!(mta.message_count(), 2);
}

#[test]
fn a_message_over_the_servers_size_is_never_sent() {
    let mta = Script::default()
        .keywords(&["PIPELINING", "SIZE 1000", "8BITMIME"])
        .start();
    let site = Site::new(&mta.routes(&["customer.test"]));
    let big = site.enqueue(
        &["-f", SENDER, "big@customer.test"],
        &message("big", &"0123456789".repeat(150)),
    );
    site.enqueue(
        &["-f", SENDER, "small@customer.test"],
        &message("small", "ok\n"),
    );
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        rcpt_lines(&mta),
        ["RCPT TO:<small@customer.test>"],
        "the big one never started"
    );
    assert!(site.entry(&big).is_none());
    let report = only_bounce(&site);
    assert!(
        report.contains("Final-Recipient: rfc822; big@customer.test"),
        "{report}"
    );
    assert!(report.contains("Status: 5.3.4"), "{report}");
}

// ---------------------------------------------------------------------------------------------
// STARTTLS.

#[test]
fn required_tls_defers_when_the_server_has_none() {
    let mta = Script::default().start();
    let site = Site::new(&format!(
        "tls = \"required\"\n{}",
        mta.routes(&["customer.test"])
    ));
    let id = site.enqueue(&["-f", SENDER, "u@customer.test"], &message("t", "x\n"));
    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{}", run.stderr);
    assert_eq!(mta.message_count(), 0);
    let entry = site.entry(&id).expect("deferred");
    let r = recipient(&entry, "u@customer.test").expect("listed");
    assert_eq!(r["status"], "deferred");
    assert!(
        r["delay_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("STARTTLS"),
        "{r}"
    );
    assert!(!mta.commands().iter().any(|c| c.starts_with("MAIL")));
}

#[test]
fn tls_is_used_when_offered_even_with_a_self_signed_certificate() {
    for policy in ["opportunistic", "required"] {
        let mta = Script::default()
            .tls(tls::self_signed(&["sink.test"]))
            .start();
        let site = Site::new(&format!(
            "tls = {policy:?}\n{}",
            mta.routes(&["customer.test"])
        ));
        site.enqueue(
            &["-f", SENDER, "u@customer.test"],
            &message("t", "secret\n"),
        );
        let run = site.run(&[]);
        assert_eq!(run.code, 0, "{policy}: {}\n{}", run.stderr, site.log());
        let messages = mta.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].tls, "{policy}: delivered over TLS");
        assert!(mta.commands().iter().any(|c| c == "STARTTLS"));
    }
}

#[test]
fn tls_off_never_starts_it() {
    let mta = Script::default()
        .tls(tls::self_signed(&["sink.test"]))
        .start();
    let site = Site::new(&format!(
        "tls = \"off\"\n{}",
        mta.routes(&["customer.test"])
    ));
    site.enqueue(&["-f", SENDER, "u@customer.test"], &message("t", "x\n"));
    assert_eq!(site.run(&[]).code, 0);
    let messages = mta.messages();
    assert_eq!(messages.len(), 1);
    assert!(!messages[0].tls);
}

#[test]
fn a_mail_log_that_cannot_be_opened_warns_once_and_delivery_goes_on() {
    let mta = Script::default().start();
    let site = Site::new("");
    for (n, log) in [
        site.dir.path().to_path_buf(),
        site.dir.path().join("missing").join("mail.log"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(
            site.config_path(),
            format!(
                "queue_dir = {:?}\nlog = {:?}\nhostnames = [{:?}]\n{}",
                site.queue_dir().display().to_string(),
                log.display().to_string(),
                site::HOSTNAME,
                mta.routes(&["customer.test"])
            ),
        )
        .expect("configuration");
        site.enqueue(&["-f", SENDER, "a@customer.test"], &message("log", "x\n"));
        let run = site.run(&[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let warnings: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "{}", run.stderr);
        assert!(
            warnings[0].starts_with("queue-run: warning: cannot open the mail log ")
                && warnings[0].ends_with("; logging to stderr"),
            "{}",
            warnings[0]
        );
        // The log lines come to stderr instead.
        assert_eq!(
            run.stderr.matches("status=sent").count(),
            1,
            "{}",
            run.stderr
        );
        assert_eq!(mta.message_count(), n + 1, "delivered all the same");
        assert!(site.ids().is_empty());
    }
}
