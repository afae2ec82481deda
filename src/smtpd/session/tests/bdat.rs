//! BDAT: messages in chunks, pipelined with their transactions, every refusal with its chunk
//! consumed, and the queue each leaves behind.

use super::*;

const TRANSACTION: &str =
    "EHLO client.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<u@customer.example>\r\n";

/// The messages in the queue, by their data files, each without the Received field.
fn bodies(fixture: &Fixture) -> Vec<String> {
    let mut bodies: Vec<String> = std::fs::read_dir(fixture.dir.path().join("queue/data"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .map(|m| without_received(&m))
        .collect();
    bodies.sort();
    bodies
}

/// A queued message without the Received field that opens it.
fn without_received(message: &str) -> String {
    let mut rest = message.split_once("\r\n").unwrap().1;
    while rest.starts_with([' ', '\t']) {
        rest = rest.split_once("\r\n").unwrap().1;
    }
    rest.to_string()
}

#[test]
fn a_message_in_pipelined_chunks_is_queued_as_sent() {
    let fixture = plain();
    let sent = fixture.session(&[
        // Lines run across chunks; a dot line is data, with nothing to unstuff.
        &format!("{TRANSACTION}BDAT 14\r\nSubject: chunkBDAT 10\r\ns\r\n\r\n.\r\nboBDAT 9 LAST\r\ndy\r\n..x\r\n"),
        "QUIT\r\n",
    ]);
    let replies = replies(&sent.concat());
    assert_eq!(replies[1], ehlo_reply("[192.0.2.7]", false));
    assert_eq!(
        replies[2..6],
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 14 octets received",
            "250 2.0.0 10 octets received",
        ]
    );
    assert!(
        replies[6].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    assert_eq!(replies[7], "221 2.0.0 mx.example.test closing connection");
    assert_eq!(
        bodies(&fixture),
        ["Subject: chunks\r\n\r\n.\r\nbody\r\n..x\r\n"]
    );
    assert!(fixture.message().contains("with ESMTP\r\n"));
}

#[test]
fn transactions_back_to_back_each_end_with_bdat_last() {
    let fixture = plain();
    let mut pipeline = String::from("EHLO client.example\r\n");
    for n in 0..3 {
        let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
        pipeline += &format!(
            "MAIL FROM:<a@sender.example>\r\nRCPT TO:<u{n}@customer.example>\r\n\
             RCPT TO:<x@elsewhere.example>\r\nBDAT {} LAST\r\n{body}",
            body.len()
        );
    }
    let sent = fixture.session(&[&pipeline, "QUIT\r\n"]);
    let replies = replies(&sent.concat());
    for n in 0..3 {
        let at = 2 + 4 * n;
        assert_eq!(replies[at], "250 2.1.0 Ok");
        assert_eq!(replies[at + 1], "250 2.1.5 Ok");
        assert!(replies[at + 2].starts_with("554 5.7.1 <x@elsewhere.example>"));
        assert!(
            replies[at + 3].starts_with("250 2.0.0 Ok: queued as "),
            "{replies:?}"
        );
    }
    assert_eq!(fixture.queued(), 3);
    assert_eq!(
        bodies(&fixture),
        [
            "Subject: 0\r\n\r\nbody 0\r\n",
            "Subject: 1\r\n\r\nbody 1\r\n",
            "Subject: 2\r\n\r\nbody 2\r\n"
        ]
    );
}

#[test]
fn a_refused_bdat_consumes_its_chunk_and_ends_the_transaction() {
    let fixture = plain();
    let sent = fixture.session(&[
        // Without MAIL: both chunks are read and refused, their "commands" are data.
        "EHLO client.example\r\nBDAT 6\r\nQUIT\r\nBDAT 6 LAST\r\nRSET\r\n",
        // Every recipient refused: the transaction is over, the next one starts with MAIL.
        "MAIL FROM:<a@sender.example>\r\nRCPT TO:<x@elsewhere.example>\r\nBDAT 6 LAST\r\nQUIT\r\n\
         MAIL FROM:<a@sender.example>\r\nRCPT TO:<u@customer.example>\r\nBDAT 8 LAST\r\nx: y\r\n\r\n",
        "QUIT\r\n",
    ]);
    let replies = replies(&sent.concat());
    assert_eq!(
        replies[2..8],
        [
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Ok",
            "554 5.7.1 <x@elsewhere.example>: Relay access denied",
            "503 5.5.1 Error: need RCPT command",
            "250 2.1.0 Ok",
        ]
    );
    assert_eq!(replies[8], "250 2.1.5 Ok");
    assert!(
        replies[9].starts_with("250 2.0.0 Ok: queued as "),
        "{replies:?}"
    );
    assert_eq!(replies[10], "221 2.0.0 mx.example.test closing connection");
    assert_eq!(bodies(&fixture), ["x: y\r\n\r\n"]);
}

#[test]
fn bad_data_in_a_chunk_is_refused_after_the_last_one() {
    let fixture = fixture(|l| l.max_message_size = 40, |_| {});
    let long = "x".repeat(1001);
    let cases = [
        (
            "a bare LF",
            "BDAT 9\r\nS: x\n\r\nboBDAT 2 LAST\r\ndy".to_string(),
            "550 5.5.2 Error: bare <CR> or <LF>",
        ),
        (
            "a bare CR at the end",
            "BDAT 5 LAST\r\nx\r\nb\r".to_string(),
            "550 5.5.2 Error: bare <CR> or <LF>",
        ),
        (
            "a long line",
            format!("BDAT 1003 LAST\r\n{long}\r\n"),
            "550 5.5.2 Error: message line longer",
        ),
        (
            "too big",
            format!(
                "BDAT 30\r\n{}BDAT 30 LAST\r\n{}",
                "a: b\r\n".repeat(5),
                "c\r\n".repeat(10)
            ),
            "552 5.3.4 Error: message exceeds",
        ),
    ];
    for (name, chunks, refusal) in cases {
        let sent = fixture.session(&[&format!("{TRANSACTION}{chunks}"), "NOOP\r\nQUIT\r\n"]);
        let replies = replies(&sent.concat());
        let at = replies
            .iter()
            .position(|r| r.starts_with(&refusal[..3]))
            .unwrap();
        assert!(replies[at].starts_with(refusal), "{name}: {replies:?}");
        assert_eq!(
            replies[at + 1..],
            [
                "250 2.0.0 Ok",
                "221 2.0.0 mx.example.test closing connection"
            ],
            "{name}"
        );
        assert_eq!(fixture.queued(), 0, "{name}");
    }
}

#[test]
fn a_final_line_without_crlf_is_completed() {
    let fixture = plain();
    fixture.session(&[
        &format!("{TRANSACTION}BDAT 11 LAST\r\nx: y\r\n\r\nend"),
        "QUIT\r\n",
    ]);
    assert_eq!(bodies(&fixture), ["x: y\r\n\r\nend\r\n"]);
}

#[test]
fn commands_between_chunks_abandon_the_message_except_noop() {
    let fixture = plain();
    let cases = [
        ("RSET", "250 2.0.0 Ok"),
        (
            "DATA",
            "503 5.5.1 Error: DATA inside a BDAT transaction; message discarded",
        ),
        (
            "MAIL FROM:<>",
            "503 5.5.1 Error: MAIL inside a BDAT transaction; message discarded",
        ),
        ("BDAT x", "501 5.5.4 Syntax: BDAT size [LAST]"),
    ];
    for (command, reply) in cases {
        let sent = fixture.session(&[
            &format!("{TRANSACTION}BDAT 6\r\nx: y\r\nNOOP\r\n{command}\r\nBDAT 2 LAST\r\n\r\n"),
            "QUIT\r\n",
        ]);
        let replies = replies(&sent.concat());
        assert_eq!(
            replies[4..9],
            [
                "250 2.0.0 6 octets received",
                "250 2.0.0 Ok",
                reply,
                "503 5.5.1 Error: need MAIL command",
                "221 2.0.0 mx.example.test closing connection",
            ],
            "{command}"
        );
        assert_eq!(fixture.queued(), 0, "{command}");
        assert!(
            fixture
                .log()
                .contains("message abandoned by a command between chunks")
        );
    }
}

#[test]
fn a_client_gone_inside_a_chunk_or_between_chunks_leaves_nothing() {
    let fixture = plain();
    for cut in [
        "BDAT 100 LAST\r\nx: y\r\n",
        "BDAT 6\r\nx: y\r\n",
        "BDAT 6\r\nx: y\r\nBDAT 1",
    ] {
        fixture.session(&[&format!("{TRANSACTION}{cut}")]);
        assert_eq!(fixture.queued(), 0, "{cut:?}");
        assert!(
            fixture.log().contains("lost connection after BDAT"),
            "{cut:?}"
        );
    }
}
