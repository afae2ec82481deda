//! Unit tests of `outcome`: what each outcome writes, and what a verdict means.

use super::*;
use crate::config::Config;
use crate::delivery::RunOptions;
use crate::delivery::finish::finish_logged;
use crate::delivery::testing::{entries, fixture, policy};
use crate::queue::LockAttempt;

#[test]
fn what_was_sent_is_recorded_in_the_reservation_when_nothing_else_can_be_written() {
    let f = fixture();
    let config = Config::default();
    let options = RunOptions::default();
    let now = chrono::Utc::now().timestamp();
    let policy = policy(&config, &options, now);
    let id = f.commit(&["a@customer.test", "b@customer.test"], now);
    let LockAttempt::Locked(mut locked) = f.queue.try_lock(id).unwrap() else {
        panic!("not locked")
    };
    locked
        .reserve(state_ceiling(locked.envelope(), &[0, 1]))
        .unwrap();
    // No new file can be made under tmp/ (as on a full disk): the bounce fails.
    let away = f.queue.root().join("tmp.away");
    std::fs::rename(f.tmp(), &away).unwrap();
    std::fs::write(f.tmp(), b"not a directory").unwrap();
    let outcomes = vec![
        (
            0,
            Outcome::Sent {
                reply: "250 2.0.0 Ok".into(),
            },
        ),
        (
            1,
            Outcome::Failed {
                status: code("5.1.1"),
                remote: None,
                diagnostic: Some("550 5.1.1 no such user".into()),
                reason: "host said: 550 5.1.1 no such user".into(),
            },
        ),
    ];
    let mut summary = RunSummary::default();
    record(
        &f.queue,
        &mut locked,
        outcomes,
        "sink",
        &policy,
        &f.log,
        &mut summary,
    );
    finish_logged(locked, None, &f.log, &mut summary);
    assert!(
        f.log()
            .contains("cannot queue the non-delivery notification")
    );
    assert!(
        !f.log().contains("cannot write delivery state"),
        "{}",
        f.log()
    );
    assert_eq!((summary.sent, summary.deferred, summary.failed), (1, 1, 0));

    let envelope = f.envelope(id).unwrap();
    assert_eq!(envelope.recipients[0].status, RecipientStatus::Sent);
    assert_eq!(envelope.recipients[1].status, RecipientStatus::Deferred);
    assert!(
        envelope.recipients[1]
            .reason
            .contains("not yet reported to the sender")
    );
    assert_eq!(f.queue.ids().unwrap().len(), 1, "no bounce was queued");
    assert!(
        entries(&away).is_empty(),
        "the reservation became the envelope"
    );
}

#[test]
fn reasons_are_cut_on_a_character_boundary() {
    let mut text = "é".repeat(REASON_MAX);
    cut(&mut text, REASON_MAX + 1);
    assert_eq!(text.len(), REASON_MAX);
    let mut short = String::from("250 ok");
    cut(&mut short, REASON_MAX);
    assert_eq!(short, "250 ok");
}

fn code(text: &str) -> EnhancedCode {
    EnhancedCode::parse(text).unwrap()
}

fn reply(lines: &[&str]) -> crate::smtp::Reply {
    crate::smtp::Reply::from_lines(lines).unwrap()
}

#[test]
fn a_verdict_sends_on_2xx_defers_on_4xx_and_fails_on_5xx() {
    use crate::smtp::Stage;
    let peer = "mx.customer.test[192.0.2.1]:25";
    let remote = || Some("mx.customer.test".to_string());
    let refused = |stage, lines: &[&str]| Verdict::Refused {
        stage,
        reply: reply(lines),
    };
    let failed = |status: &str, diagnostic: &str, reason: &str| Outcome::Failed {
        status: code(status),
        remote: remote(),
        diagnostic: Some(diagnostic.into()),
        reason: reason.into(),
    };
    let cases = [
        (
            "accepted at the end of the data",
            Verdict::Accepted(reply(&["250 2.0.0 Ok: queued as 4Xyz"])),
            Outcome::Sent {
                reply: "250 2.0.0 Ok: queued as 4Xyz".into(),
            },
        ),
        (
            "a 4xx to RCPT",
            refused(Stage::Rcpt, &["450 4.2.0 <u@customer.test>: mailbox busy"]),
            Outcome::Deferred {
                reason: format!(
                    "host {peer} said: 450 4.2.0 <u@customer.test>: mailbox busy \
                     (in reply to RCPT TO)"
                ),
            },
        ),
        (
            "a 421 to MAIL",
            refused(Stage::Mail, &["421 closing"]),
            Outcome::Deferred {
                reason: format!("host {peer} said: 421 closing (in reply to MAIL FROM)"),
            },
        ),
        (
            "a 5xx with its enhanced code",
            refused(Stage::Rcpt, &["550-5.1.1 no such user", "550 5.1.1 here"]),
            failed(
                "5.1.1",
                "550 5.1.1 no such user 5.1.1 here",
                &format!(
                    "host {peer} said: 550 5.1.1 no such user 5.1.1 here (in reply to RCPT TO)"
                ),
            ),
        ),
        (
            "a 5xx without an enhanced code",
            refused(Stage::EndOfData, &["554 rejected"]),
            failed(
                "5.0.0",
                "554 rejected",
                &format!("host {peer} said: 554 rejected (in reply to end of DATA)"),
            ),
        ),
        (
            "a 5xx whose enhanced code is of another class",
            refused(Stage::Data, &["554 4.7.1 go away"]),
            failed(
                "5.0.0",
                "554 4.7.1 go away",
                &format!("host {peer} said: 554 4.7.1 go away (in reply to DATA)"),
            ),
        ),
    ];
    for (why, verdict, outcome) in cases {
        assert_eq!(reply_outcome(&verdict, peer, remote()), outcome, "{why}");
    }
    let Outcome::Failed { remote, .. } =
        reply_outcome(&refused(Stage::Rcpt, &["550 no"]), peer, None)
    else {
        panic!("a 5xx fails")
    };
    assert_eq!(remote, None, "the remote host is the caller's");
}

#[test]
fn a_note_goes_to_the_text_each_outcome_logs() {
    let remark = "sent in clear text: STARTTLS failed: handshake";
    let cases = [
        Outcome::Sent {
            reply: "250 ok".into(),
        },
        Outcome::Deferred {
            reason: "451 later".into(),
        },
        Outcome::Failed {
            status: code("5.1.1"),
            remote: None,
            diagnostic: Some("550 no".into()),
            reason: "550 no".into(),
        },
    ];
    let noted = |text: &str| format!("{text}; {remark}");
    let expected = [
        Outcome::Sent {
            reply: noted("250 ok"),
        },
        Outcome::Deferred {
            reason: noted("451 later"),
        },
        Outcome::Failed {
            status: code("5.1.1"),
            remote: None,
            diagnostic: Some("550 no".into()),
            reason: noted("550 no"),
        },
    ];
    for (mut outcome, expected) in cases.into_iter().zip(expected) {
        outcome.note(remark);
        assert_eq!(outcome, expected);
    }
}

#[test]
fn cut_keeps_at_most_max_bytes_and_whole_characters() {
    let cases = [
        ("", 4, ""),
        ("abc", 4, "abc"),
        ("abcd", 4, "abcd"),
        ("abcde", 4, "abcd"),
        ("ab\u{e9}", 3, "ab"),
        ("ab\u{e9}", 4, "ab\u{e9}"),
        ("a\u{20ac}b", 3, "a"),
        ("\u{20ac}", 0, ""),
    ];
    for (text, max, kept) in cases {
        let mut text = text.to_string();
        cut(&mut text, max);
        assert_eq!(text, kept, "{max}");
    }
}

#[test]
fn the_state_ceiling_bounds_every_state_an_attempt_can_leave() {
    let mut envelope = crate::delivery::testing::envelope(
        "frank@sender.test",
        ["a@customer.test", "b@customer.test", "c@customer.test"]
            .iter()
            .map(|a| crate::queue::envelope::Recipient::new(a.to_string()))
            .collect(),
    );
    let untouched = envelope.to_bytes().len() as u64;
    assert_eq!(state_ceiling(&envelope, &[]), untouched);
    assert_eq!(
        state_ceiling(&envelope, &[7]),
        untouched,
        "no such recipient"
    );
    let ceiling = state_ceiling(&envelope, &[0, 2]);
    assert!(ceiling >= untouched + 2 * REASON_MAX as u64, "{ceiling}");
    // The widest state those two can be left in.
    for index in [0, 2] {
        let recipient = &mut envelope.recipients[index];
        recipient.status = RecipientStatus::Failed;
        recipient.attempts = u32::MAX;
        recipient.next_attempt = i64::MIN;
        recipient.reason = "\u{20ac}".repeat(REASON_MAX / 3);
    }
    assert!(envelope.to_bytes().len() as u64 <= ceiling);
    assert!(state_ceiling(&envelope, &[0, 1, 2]) > ceiling);
}

#[test]
fn each_outcome_sets_the_state_counts_and_logs_one_line() {
    let f = fixture();
    let config = Config::default();
    let options = RunOptions::default();
    let now = chrono::Utc::now().timestamp();
    let policy = policy(&config, &options, now);
    let id = f.commit(
        &["a@customer.test", "b@customer.test", "c@customer.test"],
        now,
    );
    let LockAttempt::Locked(mut locked) = f.queue.try_lock(id).unwrap() else {
        panic!("not locked")
    };
    let long = "x".repeat(3 * REASON_MAX);
    let outcomes = vec![
        (
            0,
            Outcome::Sent {
                reply: "250 2.0.0 Ok".into(),
            },
        ),
        (1, Outcome::Deferred { reason: long }),
        (
            2,
            Outcome::Failed {
                status: code("5.1.1"),
                remote: Some("mx.customer.test".into()),
                diagnostic: Some("550 5.1.1 no such user".into()),
                reason: "host said: 550 5.1.1 no such user".into(),
            },
        ),
    ];
    let mut summary = RunSummary::default();
    record(
        &f.queue,
        &mut locked,
        outcomes,
        "sink[127.0.0.1]:25",
        &policy,
        &f.log,
        &mut summary,
    );
    let recipients = &locked.envelope().recipients;
    assert_eq!(
        (recipients[0].status, recipients[0].attempts),
        (RecipientStatus::Sent, 1)
    );
    assert_eq!(recipients[0].reason, "250 2.0.0 Ok");
    assert_eq!(recipients[1].status, RecipientStatus::Deferred);
    assert_eq!(recipients[1].reason.len(), REASON_MAX, "cut");
    assert_eq!(
        recipients[1].next_attempt,
        retry::next_attempt(&config, 1, now)
    );
    assert_eq!(recipients[2].status, RecipientStatus::Failed);
    assert_eq!(recipients[2].reason, "host said: 550 5.1.1 no such user");
    assert_eq!((summary.sent, summary.deferred, summary.failed), (1, 1, 1));
    let log = f.log();
    for line in [
        "to=<a@customer.test>, relay=sink[127.0.0.1]:25, delay=",
        ", status=sent (250 2.0.0 Ok)",
        ", status=deferred (xxx",
        ", status=bounced (host said: 550 5.1.1 no such user)",
    ] {
        assert!(log.contains(line), "{line} in {log}");
    }
    assert_eq!(
        log.lines().count(),
        4,
        "a bounce line and one per recipient: {log}"
    );

    // The bounce went first, to the sender, with the status as the server gave it.
    let bounces: Vec<QueueId> = f
        .queue
        .ids()
        .unwrap()
        .into_iter()
        .map(|(bounce, _)| bounce)
        .filter(|&bounce| bounce != id)
        .collect();
    assert_eq!(bounces.len(), 1);
    assert!(log.contains(&format!("sender non-delivery notification: {}", bounces[0])));
    let LockAttempt::Locked(bounce) = f.queue.try_lock(bounces[0]).unwrap() else {
        panic!("not locked")
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut bounce.data(), &mut text).unwrap();
    assert!(text.contains(
        "Final-Recipient: rfc822; c@customer.test\nAction: failed\nStatus: 5.1.1\n\
         Remote-MTA: dns; mx.customer.test\nDiagnostic-Code: smtp; 550 5.1.1 no such user\n"
    ));
}

#[test]
fn an_unusable_message_is_counted_and_reported_where_it_stays() {
    let f = fixture();
    let mut summary = RunSummary::default();
    let id = f.commit(&["a@customer.test"], 0);
    skip(id, "not a regular file", &f.log, &mut summary);
    assert_eq!(summary.skipped, 1);
    assert!(
        f.log()
            .contains(&format!("{id}: skipped, left in place: not a regular file"))
    );
    assert!(f.envelope(id).is_some(), "left in place");

    quarantine(&f.queue, id, "torn", &f.log, &mut summary);
    assert_eq!(summary.corrupt, 1);
    assert!(f.log().contains(&format!(
        "{id}: unreadable envelope (torn); moved to corrupt/"
    )));
    let mut corrupt = entries(&f.queue.root().join("corrupt"));
    corrupt.sort();
    assert_eq!(corrupt, [format!("{id}.data"), format!("{id}.env")]);
    assert!(!f.queue.root().join("env").join(id.as_str()).exists());

    let gone = QueueId::parse("1xWNvf000000AA").unwrap();
    quarantine(&f.queue, gone, "torn", &f.log, &mut summary);
    assert_eq!(summary.corrupt, 2);
    assert!(f.log().contains(&format!(
        "{gone}: unreadable envelope (torn); left in place"
    )));
}

#[test]
fn the_named_statuses_are_written_as_before() {
    let cases = [
        (NO_ANSWER, "4.4.1"),
        (BAD_CONNECTION, "4.4.2"),
        (DIRECTORY_FAILURE, "4.4.3"),
        (ROUTING_LOOP, "4.4.6"),
        (EXPIRED, "4.4.7"),
        (OTHER_PERMANENT, "5.0.0"),
        (BAD_DESTINATION, "5.1.2"),
        (BAD_MAILBOX_SYNTAX, "5.1.3"),
        (NULL_MX, "5.1.10"),
        (TOO_BIG, "5.3.4"),
    ];
    for (status, text) in cases {
        assert_eq!(status.to_string(), text);
        assert_eq!(EnhancedCode::parse(text), Some(status), "{text}");
    }
}
