//! Every refusal by phase, refused message data, bad command lines, the error limit, and the
//! ETRN refusals.

use super::*;

#[test]
fn every_refusal_by_phase_changes_nothing_and_the_session_goes_on() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "MAIL before HELO",
            &[],
            "503 5.5.1 Error: send HELO/EHLO first",
        ),
        (
            "RCPT before MAIL",
            &["EHLO c.example"],
            "503 5.5.1 Error: need MAIL command",
        ),
        (
            "DATA before MAIL",
            &["EHLO c.example"],
            "503 5.5.1 Error: need MAIL command",
        ),
        (
            "DATA without recipients",
            &["EHLO c.example", "MAIL FROM:<>"],
            "503 5.5.1 Error: need RCPT command",
        ),
        (
            "nested MAIL",
            &["EHLO c.example", "MAIL FROM:<>"],
            "503 5.5.1 Error: nested MAIL command",
        ),
        (
            "ETRN before HELO",
            &[],
            "503 5.5.1 Error: send HELO/EHLO first",
        ),
        (
            "ETRN inside a transaction",
            &["EHLO c.example", "MAIL FROM:<>"],
            "503 5.5.1 Error: MAIL transaction in progress",
        ),
        (
            "RCPT after RSET",
            &["EHLO c.example", "MAIL FROM:<>", "RSET"],
            "503 5.5.1 Error: need MAIL command",
        ),
        (
            "relaying",
            &["EHLO c.example", "MAIL FROM:<>"],
            "554 5.7.1 <u@elsewhere.example>: Relay access denied",
        ),
        (
            "routing",
            &["EHLO c.example", "MAIL FROM:<>"],
            "554 5.7.1 <u%elsewhere.example@customer.example>: Relay access denied: '%', '!' or a quoted '@' routes to another host",
        ),
        (
            "announced size",
            &["EHLO c.example"],
            "552 5.3.4 Error: message size exceeds fixed limit of 52428800 octets",
        ),
        (
            "syntax",
            &["EHLO c.example"],
            "501 5.5.4 Syntax: MAIL FROM:<address>",
        ),
        (
            "unknown verb",
            &[],
            "500 5.5.2 Error: command not recognized",
        ),
        (
            "STARTTLS without a certificate",
            &[],
            "502 5.5.1 Error: command not implemented",
        ),
    ];
    let commands = [
        "MAIL FROM:<>",
        "RCPT TO:<u@customer.example>",
        "DATA",
        "DATA",
        "MAIL FROM:<>",
        "ETRN customer.example",
        "ETRN customer.example",
        "RCPT TO:<u@customer.example>",
        "RCPT TO:<u@elsewhere.example>",
        "RCPT TO:<u%elsewhere.example@customer.example>",
        "MAIL FROM:<> SIZE=52428801",
        "MAIL FROM:a@sender.example",
        "XYZZY",
        "STARTTLS",
    ];
    for ((name, before, expected), command) in cases.iter().zip(commands) {
        let fixture = plain();
        let mut sent = before.to_vec();
        sent.extend([command, "NOOP", "QUIT"]);
        let replies = fixture.replies(&sent);
        assert_eq!(replies.len(), sent.len() + 1, "{name}: {replies:?}");
        let n = before.len() + 1;
        assert_eq!(replies[n], *expected, "{name}");
        assert_eq!(replies[n + 1], "250 2.0.0 Ok", "{name}");
        assert_eq!(fixture.queued(), 0, "{name}");
    }
}

#[test]
fn refused_data_is_read_to_its_end_and_nothing_is_queued() {
    let hops = "Received: x\r\n".repeat(3);
    let cases = [
        (
            "bare LF",
            "a\nb\r\n.",
            "550 5.5.2 Error: bare <CR> or <LF> in message data; message refused",
        ),
        (
            "long line",
            &format!("{}\r\n.", "x".repeat(1200)),
            "550 5.5.2 Error: message line longer than 1000 octets; message refused",
        ),
        (
            "size",
            &format!("{}\r\n.", "x".repeat(900)),
            "552 5.3.4 Error: message exceeds fixed maximum message size of 500 octets",
        ),
        (
            "hops",
            &format!("{hops}\r\nbody\r\n."),
            "554 5.4.6 Error: too many hops (3 Received: header fields, limit 2)",
        ),
    ];
    for (name, data, expected) in cases {
        let fixture = fixture(|l| l.max_message_size = 500, |c| c.max_hops = 2);
        let replies = fixture.replies(&[
            "EHLO c.example",
            "MAIL FROM:<>",
            "RCPT TO:<u@customer.example>",
            "DATA",
            data,
            "NOOP",
            "QUIT",
        ]);
        assert_eq!(replies[5], expected, "{name}");
        assert_eq!(
            replies[6], "250 2.0.0 Ok",
            "{name}: the session stays in step"
        );
        assert_eq!(fixture.queued(), 0, "{name}");
        assert!(
            fixture
                .log()
                .contains("reject: DATA from [192.0.2.7]:4711: 5"),
            "{name}"
        );
    }
}

#[test]
fn etrn_replies() {
    let cases = [
        (
            "ETRN customer.example",
            "251 2.0.0 OK, no messages waiting for node customer.example",
        ),
        (
            "ETRN @held.example",
            "251 2.0.0 OK, no messages waiting for node @held.example",
        ),
        (
            "ETRN #mqueue",
            "459 4.5.4 Node #mqueue not allowed: this server has no named queues; ETRN a domain",
        ),
        (
            "ETRN elsewhere.example",
            "459 4.7.1 Node elsewhere.example not allowed: not a domain this server queues mail for",
        ),
        (
            "ETRN customer.example",
            "458 4.7.0 Unable to queue messages for node customer.example: more than 4 ETRN commands in one session",
        ),
    ];
    let fixture = fixture(|l| l.max_etrn = 4, |_| {});
    let mut commands = vec!["HELO c.example"];
    commands.extend(cases.iter().map(|(command, _)| *command));
    commands.push("QUIT");
    let replies = fixture.replies(&commands);
    for (i, (command, expected)) in cases.iter().enumerate() {
        assert_eq!(replies[i + 2], *expected, "{command}");
    }
    let log = fixture.log();
    assert!(
        log.contains("etrn from [192.0.2.7]:4711: ETRN #mqueue: 459 4.5.4 Node #mqueue"),
        "{log}"
    );
}

#[test]
fn too_many_errors_end_the_session() {
    let fixture = fixture(|l| l.max_errors = 3, |_| {});
    let replies = fixture.replies(&["XYZZY", "NOOP", "XYZZY", "XYZZY", "NOOP", "QUIT"]);
    let unknown = "500 5.5.2 Error: command not recognized";
    assert_eq!(
        replies[1..],
        [
            unknown,
            "250 2.0.0 Ok",
            unknown,
            unknown,
            "421 4.7.0 mx.example.test Error: too many errors",
        ]
    );
    assert!(
        fixture
            .log()
            .contains("too many errors from [192.0.2.7]:4711")
    );
}

#[test]
fn bad_command_lines_are_refused_and_counted() {
    let long = format!("NOOP {}", "x".repeat(600));
    let replies = plain().replies(&[&long, "NO\nOP", "QUIT"]);
    assert_eq!(
        replies[1],
        "500 5.5.2 Error: command line longer than 512 octets"
    );
    assert_eq!(replies[2], "500 5.5.2 Error: bare <CR> or <LF> in command");
}
