//! A session that goes as it should: greeting, EHLO and HELO, a message, pipelining, ETRN,
//! QUIT.

use super::*;

#[test]
fn greeting_then_quit_each_flushed_on_its_own() {
    let sent = plain().session(&["QUIT\r\n"]);
    assert_eq!(
        sent,
        [
            format!("{GREETING}\r\n"),
            "221 2.0.0 mx.example.test closing connection\r\n".to_string()
        ]
    );
}

#[test]
fn ehlo_lists_the_extensions_and_helo_does_not() {
    let fixture = plain();
    let replies = fixture.replies(&["EHLO client.example", "HELO client.example", "QUIT"]);
    assert_eq!(replies[0], GREETING);
    assert_eq!(replies[1], ehlo_reply("[192.0.2.7]", false));
    assert_eq!(
        replies[2],
        "250 mx.example.test Hello client.example [192.0.2.7]"
    );
    let log = fixture.log();
    assert!(
        log.contains("EHLO from [192.0.2.7]:4711: client.example"),
        "{log}"
    );
    assert!(
        log.contains("HELO from [192.0.2.7]:4711: client.example"),
        "{log}"
    );
}

#[test]
fn a_message_is_queued_before_its_250() {
    let fixture = plain();
    let replies = fixture.replies(&[
        "EHLO client.example",
        "MAIL FROM:<a@sender.example> SIZE=100",
        "RCPT TO:<u@customer.example>",
        "RCPT TO:<postmaster>",
        "DATA",
        "Subject: test\r\n\r\n..dot\r\nbody\r\n.",
        "QUIT",
    ]);
    assert_eq!(
        replies[2..5],
        ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"]
    );
    assert_eq!(replies[5], "354 End data with <CR><LF>.<CR><LF>");
    assert!(
        replies[6].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    assert_eq!(replies[7], "221 2.0.0 mx.example.test closing connection");
    assert_eq!(fixture.queued(), 1);
    let message = fixture.message();
    assert!(
        message.starts_with("Received: from client.example ([192.0.2.7])"),
        "{message}"
    );
    assert!(message.contains("with ESMTP\r\n"), "{message}");
    assert!(
        message.ends_with("Subject: test\r\n\r\n.dot\r\nbody\r\n"),
        "{message}"
    );
}

#[test]
fn helo_sessions_are_smtp_in_received() {
    let fixture = plain();
    fixture.replies(&[
        "HELO client.example",
        "MAIL FROM:<>",
        "RCPT TO:<u@held.example>",
        "DATA",
        "x\r\n.",
        "QUIT",
    ]);
    assert!(fixture.message().contains("with SMTP\r\n"));
}

#[test]
fn pipelined_replies_come_in_order_and_together() {
    let fixture = fixture(|l| l.max_recipients = 2, |_| {});
    let sent = fixture.session(&[
        "EHLO client.example\r\n",
        "MAIL FROM:<a@sender.example>\r\nRCPT TO:<u@customer.example>\r\n\
         RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<v@customer.example>\r\n\
         RCPT TO:<w@customer.example>\r\nDATA\r\n",
        "Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    ]);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0], format!("{GREETING}\r\n"));
    assert_eq!(replies(&sent[1]), [ehlo_reply("[192.0.2.7]", false)]);
    assert_eq!(
        replies(&sent[2]),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "554 5.7.1 <x@elsewhere.example>: Relay access denied",
            "250 2.1.5 Ok",
            "452 4.5.3 Error: too many recipients",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    let last = replies(&sent[3]);
    assert!(last[0].starts_with("250 2.0.0 Ok: queued as "), "{last:?}");
    assert_eq!(last[1], "221 2.0.0 mx.example.test closing connection");
    assert_eq!(fixture.queued(), 1);
    assert!(fixture.log().contains("nrcpt=2"));
}

#[test]
fn etrn_for_waiting_mail_starts_a_run() {
    let fixture = plain();
    let replies = fixture.replies(&[
        "EHLO c.example",
        "MAIL FROM:<>",
        "RCPT TO:<u@customer.example>",
        "DATA",
        "x\r\n.",
        "ETRN customer.example",
        "QUIT",
    ]);
    assert_eq!(
        replies[6],
        "253 2.0.0 OK, 1 pending messages for node customer.example started"
    );
    assert_eq!(fixture.queued(), 1);
}

#[test]
fn quit_inside_a_transaction_queues_nothing() {
    let fixture = plain();
    let replies = fixture.replies(&[
        "EHLO c.example",
        "MAIL FROM:<>",
        "RCPT TO:<u@customer.example>",
        "QUIT",
    ]);
    assert_eq!(replies[4], "221 2.0.0 mx.example.test closing connection");
    assert_eq!(fixture.queued(), 0);
    assert!(
        fixture
            .log()
            .contains("disconnect from [192.0.2.7]:4711 messages=0 errors=0\n")
    );
}
