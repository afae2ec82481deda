//! Transactions back to back with CHUNKING: the window, the replies matched to their commands,
//! refusals in the middle, and a connection cut with transactions outstanding.

use super::*;

const CHUNKING: &str = "250-sink\r\n250-PIPELINING\r\n250 CHUNKING\r\n";

fn delivered(line: &str) -> Delivery {
    Delivery {
        verdicts: vec![accepted(line)],
    }
}

#[test]
fn transactions_go_back_to_back_with_bdat_last_and_each_reply_finds_its_command() {
    // The first transaction goes alone (it measures the round trip); the rest together.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, CHUNKING),
            Step::Lines(
                6,
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as 1\r\n",
            ),
            Step::Lines(
                8 + 8 + 7,
                "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n\
                 250 2.0.0 queued as 2\r\n\
                 250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n554 5.6.0 refused\r\n\
                 250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as 4\r\n",
            ),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![
        message("one@example.test", "Subject: 1\n\n.x\n"),
        message_to(
            &["two@example.test", "nobody@example.test"],
            "Subject: 2\r\n\r\ny\r\n",
        ),
        message_to(
            &["three@example.test", "more@example.test"],
            "Subject: 3\n\nz",
        ),
        message("four@example.test", "Subject: 4\n\nw\n"),
    ]);
    conn.deliver_all(&mut script).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(
        script.told,
        [
            Told::Answered(delivered("250 2.0.0 queued as 1")),
            Told::Answered(Delivery {
                verdicts: vec![
                    accepted("250 2.0.0 queued as 2"),
                    refused(Stage::Rcpt, "550 5.1.1 no such user"),
                ]
            }),
            Told::Answered(Delivery {
                verdicts: vec![
                    refused(Stage::Bdat, "554 5.6.0 refused"),
                    refused(Stage::Bdat, "554 5.6.0 refused"),
                ]
            }),
            Told::Answered(delivered("250 2.0.0 queued as 4")),
        ]
    );
    let wire = seen.concat();
    // Counted, not dot-stuffed, with CRLF line ends and a last line closed.
    assert!(
        wire.contains("BDAT 18 LAST\r\nSubject: 1\r\n\r\n.x\r\nRSET\r\nMAIL FROM:"),
        "{wire}"
    );
    assert!(
        wire.contains("BDAT 17 LAST\r\nSubject: 3\r\n\r\nz\r\nRSET\r\nMAIL FROM:"),
        "{wire}"
    );
    assert!(!wire.contains("DATA\r\n"), "{wire}");
    assert_eq!(wire.matches("RSET").count(), 3, "{wire}");
}

#[test]
fn a_connection_cut_with_transactions_outstanding_tells_each_how_far_it_got() {
    // The second message is answered; the server closes before answering the others, whose
    // data went out.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, CHUNKING),
            Step::Lines(
                4,
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as 1\r\n",
            ),
            Step::Lines(
                5 * 3,
                "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as 2\r\n",
            ),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(
        ["1", "2", "3", "4", "5"]
            .iter()
            .map(|n| message(&format!("u{n}@example.test"), "x\n"))
            .collect(),
    );
    let err = conn.deliver_all(&mut script).unwrap_err();
    server.join().unwrap();
    let unanswered = || {
        Told::Broken(
            Delivery {
                verdicts: vec![None],
            },
            Sent::EndOfData,
            err.to_string(),
        )
    };
    assert_eq!(
        script.told,
        [
            Told::Answered(delivered("250 2.0.0 queued as 1")),
            Told::Answered(delivered("250 2.0.0 queued as 2")),
            unanswered(),
            unanswered(),
            unanswered(),
        ]
    );
}

#[test]
fn a_503_to_mail_a_3xx_to_bdat_or_a_refused_rset_ends_the_connection() {
    const FIRST_OK: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as 1\r\n";
    let cases: [(Vec<Step>, &str); 3] = [
        (vec![Step::Lines(4, "503 5.5.1 nested MAIL\r\n")], "MAIL"),
        (
            vec![Step::Lines(
                4,
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go on\r\n",
            )],
            "BDAT",
        ),
        (
            vec![
                Step::Lines(4, FIRST_OK),
                Step::Lines(5, "500 5.5.2 what RSET\r\n"),
            ],
            "RSET",
        ),
    ];
    for (steps, verb) in cases {
        let answered = steps.len() - 1;
        let mut all = vec![Step::Lines(1, CHUNKING)];
        all.extend(steps);
        let (addr, server) = server("220 sink ESMTP\r\n", all);
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message("one@example.test", "x\n"),
            message("two@example.test", "y\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        server.join().unwrap();
        assert!(err.to_string().contains(verb), "{err}");
        assert_eq!(script.told.len(), 1 + answered, "{verb}: {:?}", script.told);
        if answered == 1 {
            assert_eq!(
                script.told[0],
                Told::Answered(delivered("250 2.0.0 queued as 1"))
            );
        }
        assert!(
            matches!(&script.told[answered], Told::Broken(_, Sent::EndOfData, _)),
            "{verb}: {:?}",
            script.told
        );
    }
}

#[test]
fn without_chunking_the_data_goes_after_data_as_before() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, ENVELOPE_OK),
            Step::Message("250 2.0.0 queued\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message("one@example.test", ".x\n")]);
    conn.deliver_all(&mut script).unwrap();
    let wire = server.join().unwrap().concat();
    assert!(wire.contains("DATA\r\n..x\r\n.\r\n"), "{wire}");
    assert!(!wire.contains("BDAT"), "{wire}");
}
