use super::*;

#[test]
fn recipients_over_the_servers_limit_go_in_another_transaction_at_once() {
    // The server takes two recipients per transaction. The third and fourth get 452 and are
    // sent again in a transaction of their own, whose envelope goes out with the first
    // transaction's final dot. The fifth is refused for good.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                7,
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Too many recipients\r\n452 4.5.3 Too many recipients\r\n550 5.1.1 no such user\r\n354 go ahead\r\n",
            ),
            Step::Message(""),
            Step::Lines(
                4,
                "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
            ),
            Step::Message("250 2.0.0 queued as 2\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message_to(
        &[
            "a@example.test",
            "b@example.test",
            "c@example.test",
            "d@example.test",
            "e@example.test",
        ],
        "Subject: many\n\nbody\n",
    )]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(
        script.told,
        [Told::Answered(Delivery {
            verdicts: vec![
                accepted("250 2.0.0 queued as 1"),
                accepted("250 2.0.0 queued as 1"),
                accepted("250 2.0.0 queued as 2"),
                accepted("250 2.0.0 queued as 2"),
                refused(Stage::Rcpt, "550 5.1.1 no such user"),
            ]
        })]
    );
    let second_dot = seen.iter().rposition(|l| l == ".\r\n").unwrap();
    assert_eq!(
        seen[second_dot - 8..second_dot - 2],
        [
            ".\r\n",
            "MAIL FROM:<a@example.test>\r\n",
            "RCPT TO:<c@example.test>\r\n",
            "RCPT TO:<d@example.test>\r\n",
            "DATA\r\n",
            "Subject: many\r\n",
        ]
    );
    assert_eq!(seen.iter().filter(|l| *l == "body\r\n").count(), 2);
}

#[test]
fn a_452_before_any_acceptance_is_a_plain_deferral() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                4,
                "250 2.1.0 Ok\r\n452 4.2.2 mailbox full\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
            ),
            Step::Message("250 2.0.0 queued\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message_to(
        &["a@example.test", "b@example.test"],
        "x\n",
    )]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    server.join().unwrap();
    assert_eq!(
        script.told[0].delivery().verdicts,
        [
            refused(Stage::Rcpt, "452 4.2.2 mailbox full"),
            accepted("250 2.0.0 queued")
        ]
    );
}

#[test]
fn a_452_that_is_not_about_the_limit_is_not_sent_again() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                4,
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n452 4.2.2 mailbox full\r\n354 go ahead\r\n",
            ),
            Step::Message("250 2.0.0 queued\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message_to(
        &["a@example.test", "b@example.test"],
        "x\n",
    )]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    server.join().unwrap();
    assert_eq!(
        script.told[0].delivery().verdicts,
        [
            accepted("250 2.0.0 queued"),
            refused(Stage::Rcpt, "452 4.2.2 mailbox full")
        ]
    );
}

#[test]
fn no_transaction_has_more_recipients_than_the_limit() {
    // Three recipients, two per transaction, without pipelining.
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, "250 sink\r\n"),
            Step::Lines(1, "250 2.1.0 Ok\r\n"),
            Step::Lines(1, "250 2.1.5 Ok\r\n"),
            Step::Lines(1, "250 2.1.5 Ok\r\n"),
            Step::Lines(1, "354 go ahead\r\n"),
            Step::Message("250 2.0.0 queued as 1\r\n"),
            Step::Lines(1, "250 2.1.0 Ok\r\n"),
            Step::Lines(1, "250 2.1.5 Ok\r\n"),
            Step::Lines(1, "354 go ahead\r\n"),
            Step::Message("250 2.0.0 queued as 2\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    conn.limit_recipients(2);
    let mut script = Script::new(vec![message_to(
        &["a@example.test", "b@example.test", "c@example.test"],
        "x\n",
    )]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(
        script.told[0].delivery().verdicts,
        [
            accepted("250 2.0.0 queued as 1"),
            accepted("250 2.0.0 queued as 1"),
            accepted("250 2.0.0 queued as 2"),
        ]
    );
    let rcpts: Vec<&str> = seen
        .iter()
        .filter(|l| l.starts_with("RCPT") || l.starts_with("MAIL"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        rcpts,
        [
            "MAIL FROM:<a@example.test>\r\n",
            "RCPT TO:<a@example.test>\r\n",
            "RCPT TO:<b@example.test>\r\n",
            "MAIL FROM:<a@example.test>\r\n",
            "RCPT TO:<c@example.test>\r\n",
        ]
    );
}

#[test]
fn a_refused_sender_is_refused_for_every_transaction_of_the_message() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                3,
                "553 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n",
            ),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    conn.limit_recipients(1);
    let mut script = Script::new(vec![message_to(
        &["a@example.test", "b@example.test"],
        "x\n",
    )]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    server.join().unwrap();
    let refusal = refused(Stage::Mail, "553 5.7.1 sender refused");
    assert_eq!(
        script.told[0].delivery().verdicts,
        [refusal.clone(), refusal]
    );
}

#[test]
fn a_verdict_never_holds_a_control_character() {
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(
                3,
                "250 2.1.0 Ok\r\n450-4.2.0 \u{1b}[2Jbusy\0\r\n450 4.2.0 try\rlater\u{7}\r\n554 5.5.1 no valid recipients\r\n",
            ),
            Step::Lines(1, "250 2.0.0 reset\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message("one@example.test", "x\n")]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    server.join().unwrap();
    let verdict = script.told[0].delivery().verdicts[0].clone().unwrap();
    assert_eq!(
        verdict.reply().lines,
        ["4.2.0 ?[2Jbusy?", "4.2.0 try?later?"]
    );
    assert_eq!(
        verdict.reply().to_string(),
        "450 4.2.0 ?[2Jbusy? 4.2.0 try?later?"
    );
}
