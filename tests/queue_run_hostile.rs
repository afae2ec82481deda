//! queue-run against hostile and broken SMTP servers: nothing lost, nothing counted as sent.
//!
//! The real queue-enqueue, queue-run and mailq binaries, and the scripted server on loopback
//! answering 250 to DATA, 354 where none belongs, trickling its replies a byte at a time,
//! putting control characters in them, limiting recipients per transaction, or cutting the
//! connection on one chosen message. Each test asserts the final queue (`mailq --json`), the log
//! lines and what the server stored, byte for byte.
//!
//! Assertions are about what happened, never about how long it took: a server that trickles is
//! one that would have been answered in full under a limit renewed by each byte.

mod support;

use std::time::Duration;

use serde_json::Value;

use support::site::{SENDER, Site, message};
use support::smtp::{End, Script, Server, crlf};

/// What a stored message must look like on the wire: [`crlf`], with a dot doubled at the start
/// of every line.
fn wire(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in crlf(stored).split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// The `mailq --json` entry of `id`, which must still be queued.
fn entry(site: &Site, id: &str) -> Value {
    site.entry(id)
        .unwrap_or_else(|| panic!("{id} is no longer queued: {:?}", site.mailq()))
}

/// The one open recipient of a queued message.
fn only_recipient(site: &Site, id: &str) -> Value {
    let entry = entry(site, id);
    let recipients = entry["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{entry}");
    recipients[0].clone()
}

/// The log lines about `id`.
fn log_lines(site: &Site, id: &str) -> Vec<String> {
    site.log()
        .lines()
        .filter(|line| line.contains(&format!("{id}: to=<")))
        .map(str::to_string)
        .collect()
}

/// Asserts that `id`'s one recipient was deferred after one attempt, and logged so on one line;
/// returns the recipient, its reason and that line.
fn deferred_once(site: &Site, id: &str) -> (Value, String, String) {
    let recipient = only_recipient(site, id);
    assert_eq!(recipient["status"], "deferred");
    assert_eq!(recipient["attempts"], 1);
    let reason = recipient["delay_reason"]
        .as_str()
        .expect("a reason")
        .to_string();
    let lines = log_lines(site, id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("status=deferred ("), "{lines:?}");
    (recipient, reason, lines[0].clone())
}

/// The RCPT lines of each connection a server had.
fn rcpts_by_connection(server: &Server) -> Vec<Vec<String>> {
    server
        .sessions()
        .into_iter()
        .map(|lines| {
            lines
                .into_iter()
                .filter(|line| line.starts_with("RCPT TO:"))
                .collect()
        })
        .collect()
}

#[test]
fn a_250_to_data_defers_and_nothing_counts_as_sent() {
    let server = Server::start(Script::default().data("250 2.0.0 Ok: queued as FAKE"));
    let site = Site::new(&server.routes(&["customer.test"]));
    let first = site.enqueue(&["-f", SENDER, "ann@customer.test"], &message("1", "one\n"));
    let second = site.enqueue(&["-f", SENDER, "bob@customer.test"], &message("2", "two\n"));

    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    // Nothing was stored, and no line of message data was ever sent: after the 250 the
    // connection was given up, each message on a connection of its own.
    assert!(server.messages().is_empty());
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for session in &sessions {
        assert_eq!(
            session.last().map(String::as_str),
            Some("DATA"),
            "{session:?}"
        );
    }
    for (id, address) in [
        (&first, "ann@customer.test"),
        (&second, "bob@customer.test"),
    ] {
        let (recipient, reason, line) = deferred_once(&site, id);
        assert_eq!(recipient["address"], address);
        assert!(
            reason.ends_with("protocol error: 250 2.0.0 Ok: queued as FAKE (in reply to DATA)"),
            "{reason}"
        );
        assert!(line.contains(&format!("to=<{address}>")), "{line}");
        assert!(line.contains("(in reply to DATA)"), "{line}");
    }
    assert!(!site.log().contains("status=sent"), "{}", site.log());
}

#[test]
fn a_354_out_of_place_defers_and_never_bounces() {
    // 354 to RCPT for one message, 354 to the final dot for the other.
    let server = Server::start(
        Script::default()
            .rcpt("odd", "354 Go ahead")
            .end_of_data("X-Odd-End", End::Reply("354 Send more".to_string())),
    );
    let site = Site::new(&server.routes(&["customer.test"]));
    let to_rcpt = site.enqueue(&["-f", SENDER, "odd@customer.test"], &message("1", "one\n"));
    let to_dot = site.enqueue(
        &["-f", SENDER, "bob@customer.test"],
        &message("2", "X-Odd-End\n"),
    );

    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    assert!(server.messages().is_empty());
    let queued = site.queued_ids();
    assert_eq!(queued.len(), 2, "no bounce was queued: {queued:?}");
    let expected = [
        (&to_rcpt, "protocol error: 354 Go ahead (in reply to RCPT)"),
        (
            &to_dot,
            "protocol error: 354 Send more (in reply to the end of the message data) \
             (the message may arrive twice)",
        ),
    ];
    for (id, reason) in expected {
        let (_, given, line) = deferred_once(&site, id);
        assert!(given.ends_with(reason), "{given}");
        assert!(line.contains(reason), "{line}");
    }
    assert!(!site.log().contains("status=bounced"), "{}", site.log());
}

#[test]
fn trickled_replies_are_cut_off_and_the_run_ends() {
    // From MAIL on, every reply comes a byte every 400 ms: each within the two-second limit,
    // the whole of "250 2.1.0 Ok" in almost six. Two connections fail that way before any
    // message is answered, and the destination waits for the next run.
    let server = Server::start(Script::default().trickle("MAIL", Duration::from_millis(400)));
    let site = Site::new(&server.routes(&["customer.test"]));
    let ids: Vec<String> = (1..=3)
        .map(|n| {
            site.enqueue(
                &["-f", SENDER, &format!("user{n}@customer.test")],
                &message(&n.to_string(), "body\n"),
            )
        })
        .collect();

    let run = site.run(&["--timeout", "2"]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    assert!(server.messages().is_empty());
    assert_eq!(server.connections(), 2);
    for (n, id) in ids.iter().enumerate() {
        let (_, reason, _) = deferred_once(&site, id);
        assert!(
            reason.contains("timed out waiting for the reply to MAIL"),
            "{reason}"
        );
        if n == 2 {
            assert!(
                reason.ends_with(
                    "2 connections in a row failed, so this destination waits for the next run"
                ),
                "{reason}"
            );
        }
    }
}

#[test]
fn control_characters_in_replies_never_reach_the_log_the_listing_or_a_bounce() {
    let server = Server::start(
        Script::default()
            .rcpt("busy", "450 4.2.0 \u{1b}[31mbusy\u{7}\u{0} now\r later")
            .rcpt(
                "gone",
                "550 5.1.1 \u{1b}]0;owned\u{7}no\u{7f} such\u{9b}user",
            ),
    );
    let site = Site::new(&server.routes(&["customer.test"]));
    let id = site.enqueue(
        &[
            "-f",
            SENDER,
            "ok@customer.test",
            "busy@customer.test",
            "gone@customer.test",
        ],
        &message("controls", "body\n"),
    );

    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    // The accepted recipient got the message, byte for byte.
    let stored = server.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].recipients, ["ok@customer.test"]);
    // The message stays queued for its deferred recipient, data and all.
    assert_eq!(stored[0].wire, wire(&site.data(&id)));

    // The deferred one is listed with the reply made printable.
    let busy = only_recipient(&site, &id);
    assert_eq!(busy["address"], "busy@customer.test");
    let reason = busy["delay_reason"].as_str().expect("a reason");
    assert!(
        reason.ends_with("said: 450 4.2.0 ?[31mbusy?? now? later (in reply to RCPT TO)"),
        "{reason:?}"
    );

    // The log, every line of it.
    let log = site.log();
    assert!(
        !log.chars().any(|c| c.is_control() && c != '\n'),
        "control character in the log: {log:?}"
    );
    assert!(log.contains("450 4.2.0 ?[31mbusy?? now? later"), "{log}");
    assert!(log.contains("550 5.1.1 ?]0;owned?no? such?user"), "{log}");

    // The bounce for the refused recipient.
    let bounces: Vec<Value> = site
        .mailq()
        .into_iter()
        .filter(|m| m["sender"].as_str() == Some(""))
        .collect();
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    let report = site.data(bounces[0]["queue_id"].as_str().expect("id"));
    let text = String::from_utf8(report).expect("the bounce is text");
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 ?]0;owned?no? such?user"),
        "{text}"
    );
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t')),
        "control character in the bounce: {text:?}"
    );
}

#[test]
fn recipients_past_the_servers_limit_go_in_another_transaction_at_once() {
    let server = Server::start(Script::default().recipient_limit(2));
    let site = Site::new(&server.routes(&["customer.test"]));
    let recipients = ["a", "b", "c", "d", "e"].map(|local| format!("{local}@customer.test"));
    let mut args = vec!["-f", SENDER];
    args.extend(recipients.iter().map(String::as_str));
    // Bare CRs and LFs, and dots after each: every one leaves as a CRLF line end, stuffed.
    let id = site.enqueue(&args, &message("many", "first\r.\rsecond\n.third\r\nlast"));
    let stored = site.data(&id);

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Three transactions on one connection, the excess of each sent again at once.
    assert_eq!(server.connections(), 1);
    let messages = server.messages();
    let taken: Vec<Vec<String>> = messages.iter().map(|m| m.recipients.clone()).collect();
    assert_eq!(
        taken,
        [
            vec!["a@customer.test", "b@customer.test"],
            vec!["c@customer.test", "d@customer.test"],
            vec!["e@customer.test"],
        ]
    );
    for received in &messages {
        assert_eq!(received.wire, wire(&stored));
        assert_eq!(received.data(), crlf(&stored));
        assert!(
            String::from_utf8_lossy(&received.wire).contains("\r\n..\r\nsecond\r\n..third\r\n"),
            "{:?}",
            String::from_utf8_lossy(&received.wire)
        );
    }
    assert!(site.mailq().is_empty(), "{:?}", site.mailq());
    let lines = log_lines(&site, &id);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("status=sent (250 2.0.0 Ok: queued)"))
    );
}

#[test]
fn recipients_per_transaction_caps_every_transaction() {
    let server = Server::start(Script::default());
    let site = Site::new(&format!(
        "recipients_per_transaction = 2\n{}",
        server.routes(&["customer.test"])
    ));
    let mut args = vec!["-f", SENDER];
    args.extend(["a@customer.test", "b@customer.test", "c@customer.test"]);
    let id = site.enqueue(&args, &message("capped", "body\n"));
    let stored = site.data(&id);

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    assert_eq!(
        rcpts_by_connection(&server),
        [[
            "RCPT TO:<a@customer.test>",
            "RCPT TO:<b@customer.test>",
            "RCPT TO:<c@customer.test>",
        ]]
    );
    let mails = server
        .seen()
        .iter()
        .filter(|l| l.starts_with("MAIL"))
        .count();
    assert_eq!(mails, 2, "{:?}", server.seen());
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].recipients,
        ["a@customer.test", "b@customer.test"]
    );
    assert_eq!(messages[1].recipients, ["c@customer.test"]);
    assert!(messages.iter().all(|m| m.wire == wire(&stored)));
    assert!(site.mailq().is_empty());
}

#[test]
fn a_message_that_breaks_the_connection_harms_none_of_the_others() {
    // Two destinations on two servers, every message for both. The server closes the
    // connection, without a word, at the end of the data of the message marked for it. With
    // one job at a time, the first destination meets it between good messages; the second,
    // knowing it from then on, sends it alone after the others.
    let script = Script::default().end_of_data("X-Breaks-Connections", End::Cut);
    let one = Server::start(script.clone());
    let two = Server::start_on("127.0.0.2:0".parse().expect("address"), vec![script]);
    let site = Site::new(&format!(
        "[routes]\n\"one.test\" = {:?}\n\"two.test\" = {:?}\n\"sender.test\" = {:?}\n",
        one.route(),
        two.route(),
        one.route()
    ));
    let names = ["g1", "bad", "g2", "g3"];
    let ids: Vec<String> = names
        .iter()
        .map(|name| {
            let body = if *name == "bad" {
                "X-Breaks-Connections: yes\n".to_string()
            } else {
                format!("{name} is a good message\n")
            };
            site.enqueue(
                &[
                    "-f",
                    SENDER,
                    &format!("{name}@one.test"),
                    &format!("{name}@two.test"),
                ],
                &message(name, &body),
            )
        })
        .collect();
    let stored: Vec<Vec<u8>> = ids.iter().map(|id| site.data(id)).collect();

    let run = site.run(&["-j", "1"]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    // Every good message reached both servers once, byte for byte, and left the queue with
    // no attempt but its delivery: g2, stranded behind the bad one, included.
    for server in [&one, &two] {
        let messages = server.messages();
        let taken: Vec<&str> = messages
            .iter()
            .map(|m| m.recipients[0].split('@').next().unwrap_or_default())
            .collect();
        assert_eq!(taken, ["g1", "g2", "g3"]);
        for (received, n) in messages.iter().zip([0, 2, 3]) {
            assert_eq!(received.wire, wire(&stored[n]));
        }
    }
    for n in [0, 2, 3] {
        assert!(site.entry(&ids[n]).is_none(), "{} still queued", names[n]);
        let lines = log_lines(&site, &ids[n]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.contains("status=sent")), "{lines:?}");
    }

    // The bad one is deferred for both, as one attempt each.
    let bad = entry(&site, &ids[1]);
    for recipient in bad["recipients"].as_array().expect("recipients") {
        assert_eq!(recipient["status"], "deferred");
        assert_eq!(recipient["attempts"], 1);
        let reason = recipient["delay_reason"].as_str().expect("a reason");
        assert!(reason.contains("lost connection"), "{reason}");
        assert!(
            reason.ends_with("(the message may arrive twice)"),
            "{reason}"
        );
    }

    // Whichever destination came first met it among the others and went on, on a new
    // connection, with the one stranded behind it; the other sent it alone, last.
    let rcpts = [rcpts_by_connection(&one), rcpts_by_connection(&two)];
    let first = rcpts
        .iter()
        .position(|sessions| {
            sessions[0].len() > 1 && sessions[0].iter().any(|l| l.contains("bad@"))
        })
        .expect("one destination met the bad message among others");
    let domain = ["one.test", "two.test"];
    let rcpt = |name: &str, d: usize| format!("RCPT TO:<{name}@{}>", domain[d]);
    let (a, b) = (first, 1 - first);
    assert_eq!(
        rcpts[a],
        [
            vec![rcpt("g1", a), rcpt("bad", a)],
            vec![rcpt("g2", a), rcpt("g3", a)],
        ]
    );
    assert_eq!(
        rcpts[b],
        [
            vec![rcpt("g1", b), rcpt("g2", b), rcpt("g3", b)],
            vec![rcpt("bad", b)],
        ]
    );
}

#[test]
fn opportunistic_tls_that_fails_says_so_on_every_log_line() {
    let server = Server::start(
        Script::default().starttls_refusal("454 4.7.0 TLS not available due to local problem"),
    );
    let site = Site::new(&server.routes(&["customer.test"]));
    let id = site.enqueue(
        &["-f", SENDER, "ann@customer.test", "bob@customer.test"],
        &message("clear", "body\n"),
    );

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // The first connection asked for TLS and was refused; the second went on in clear.
    let sessions = server.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(sessions[0].iter().any(|l| l == "STARTTLS"), "{sessions:?}");
    assert!(!sessions[1].iter().any(|l| l == "STARTTLS"), "{sessions:?}");
    assert_eq!(server.messages().len(), 1);
    let lines = log_lines(&site, &id);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in lines {
        assert!(
            line.ends_with(&format!(
                "status=sent (250 2.0.0 Ok: queued; sent in clear text: STARTTLS failed: \
                 [127.0.0.1]:{}: STARTTLS: 454 4.7.0 TLS not available due to local problem)",
                server.port()
            )),
            "{line}"
        );
    }
    assert!(site.mailq().is_empty());
}
