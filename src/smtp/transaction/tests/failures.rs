use super::*;

#[test]
fn a_broken_connection_names_the_message_under_way_and_strands_the_one_behind() {
    // The server takes the first message's data and closes without answering its dot; the
    // second message's envelope went out in the same write, its data never did.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, ENVELOPE_OK),
            Step::CloseAfterMessage,
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![
        message("one@example.test", "Subject: 1\n\nx\n"),
        message("two@example.test", "Subject: 2\n\ny\n"),
        message("three@example.test", "Subject: 3\n\nz\n"),
    ]);
    let err = conn.deliver_all(&mut script).unwrap_err();
    server.join().unwrap();
    assert_eq!(
        script.told,
        [
            Told::Broken(
                Delivery {
                    verdicts: vec![None]
                },
                Sent::EndOfData,
                err.to_string()
            ),
            Told::Stranded(err.to_string()),
        ]
    );
    assert_eq!(script.messages.len(), 1, "the third was never taken");
}

#[test]
fn a_connection_lost_on_the_envelope_says_no_data_went_out() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, "250 2.1.0 Ok\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message("one@example.test", "x\n")]);
    let err = conn.deliver_all(&mut script).unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, SmtpError::Closed { .. }), "{err}");
    assert_eq!(
        script.told,
        [Told::Broken(
            Delivery {
                verdicts: vec![None]
            },
            Sent::Envelope,
            err.to_string()
        )]
    );
}

#[test]
fn a_250_to_data_is_never_a_delivery() {
    // The server claims the message before a byte of it was sent. Nothing more is written:
    // neither the data nor RSET, since what the server would make of them is unknown.
    for pipelining in [true, false] {
        let steps = if pipelining {
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued\r\n"),
            ]
        } else {
            vec![
                Step::Lines(1, "250 sink\r\n"),
                Step::Lines(1, "250 2.1.0 Ok\r\n"),
                Step::Lines(1, "250 2.1.5 Ok\r\n"),
                Step::Lines(1, "250 2.0.0 queued\r\n"),
            ]
        };
        let (addr, server) = server("220 sink ESMTP\r\n", steps);
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message("one@example.test", "Subject: 1\n\nx\n"),
            message("two@example.test", "Subject: 2\n\ny\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        drop(conn);
        let seen = server.join().unwrap();
        assert!(
            err.to_string()
                .ends_with(": protocol error: 250 2.0.0 queued (in reply to DATA)"),
            "{err}"
        );
        assert_eq!(
            script.told,
            [Told::Broken(
                Delivery {
                    verdicts: vec![None]
                },
                Sent::Envelope,
                err.to_string()
            )],
            "pipelining: {pipelining}"
        );
        assert_eq!(
            seen.last().map(String::as_str),
            Some("DATA\r\n"),
            "{seen:?}"
        );
        assert_eq!(script.messages.len(), 1, "pipelining: {pipelining}");
    }
}

#[test]
fn a_354_to_rcpt_ends_the_connection_at_once() {
    // After a 354 the server may be reading message data: no further reply is awaited and
    // nothing is refused or bounced because of it.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(4, "250 2.1.0 Ok\r\n354 go ahead\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message_to(
        &["one@example.test", "two@example.test"],
        "x\n",
    )]);
    let err = conn.deliver_all(&mut script).unwrap_err();
    drop(conn);
    let seen = server.join().unwrap();
    assert!(
        matches!(&err, SmtpError::Unexpected { command: "RCPT", reply, .. } if reply.code.value() == 354),
        "{err}"
    );
    assert_eq!(
        script.told,
        [Told::Broken(
            Delivery {
                verdicts: vec![None, None]
            },
            Sent::Envelope,
            err.to_string()
        )]
    );
    assert_eq!(seen.last().map(String::as_str), Some("DATA\r\n"));
}

#[test]
fn a_354_to_the_final_dot_is_neither_a_delivery_nor_a_refusal() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, ENVELOPE_OK),
            Step::Message(""),
            Step::Lines(3, "354 more please\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![
        message("one@example.test", "x\n"),
        message("two@example.test", "y\n"),
    ]);
    let err = conn.deliver_all(&mut script).unwrap_err();
    drop(conn);
    server.join().unwrap();
    assert!(
        err.to_string()
            .ends_with("protocol error: 354 more please (in reply to the end of the message data)"),
        "{err}"
    );
    assert_eq!(
        script.told,
        [
            Told::Broken(
                Delivery {
                    verdicts: vec![None]
                },
                Sent::EndOfData,
                err.to_string()
            ),
            Told::Stranded(err.to_string()),
        ]
    );
}

#[test]
fn a_refused_reset_ends_the_connection_and_strands_the_next_message() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                3,
                "250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
            ),
            Step::Lines(4, "500 5.5.1 what reset\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![
        message("nobody@example.test", "x\n"),
        message("two@example.test", "y\n"),
    ]);
    let err = conn.deliver_all(&mut script).unwrap_err();
    drop(conn);
    server.join().unwrap();
    assert!(
        matches!(
            err,
            SmtpError::Unexpected {
                command: "RSET",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        script.told,
        [
            Told::Answered(Delivery {
                verdicts: vec![refused(Stage::Rcpt, "550 5.1.1 no such user")]
            }),
            Told::Stranded(err.to_string()),
        ]
    );
}

#[test]
fn a_refused_data_refuses_the_accepted_recipients_and_resets() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 try later\r\n"),
            Step::Lines(1, "250 2.0.0 reset\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message("one@example.test", "x\n")]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(
        script.told,
        [Told::Answered(Delivery {
            verdicts: vec![refused(Stage::Data, "451 4.3.0 try later")]
        })]
    );
    assert_eq!(seen.last().map(String::as_str), Some("RSET\r\n"));
}
