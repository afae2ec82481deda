//! Unit tests of `bounce`: who gets a bounce, and what it says.

use super::*;

fn original(sender: &str, notify: Option<&str>, ret: Option<&str>) -> Envelope {
    Envelope {
        id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
        arrival: 1_795_418_591,
        size: 40,
        sender: sender.into(),
        notify: notify.map(String::from),
        ret: ret.map(String::from),
        envid: Some("env-42".into()),
        warned: None,
        recipients: vec![Recipient::new("nouser@customer.example".into())],
    }
}

fn failure() -> FailedRecipient {
    FailedRecipient {
        address: "nouser@customer.example".into(),
        status: EnhancedCode::parse("5.1.1").unwrap(),
        remote_mta: Some("mx.customer.example".into()),
        diagnostic: Some("550 5.1.1 <nouser@customer.example>: User unknown".into()),
        reason: "host mx.customer.example said: 550 5.1.1 User unknown".into(),
    }
}

fn render(env: &Envelope) -> String {
    let mut out = Vec::new();
    let here = Domain::parse("mx2.isp.example").unwrap();
    let data = &b"Subject: hello\r\nFrom: alice@example.test\r\n\r\nsecret body\r\n"[..];
    let id = QueueId::parse("1xWNvf000000AA").unwrap();
    write_report(
        &mut out,
        Notice::Failure,
        id,
        &here,
        env,
        &[failure()],
        data,
        chrono::Local::now(),
    )
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn report_has_the_three_parts_and_headers_only() {
    let text = render(&original("alice@example.test", None, None));
    assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
    assert!(text.contains(
        "Final-Recipient: rfc822; nouser@customer.example\nAction: failed\nStatus: 5.1.1\n"
    ));
    assert!(text.contains("Remote-MTA: dns; mx.customer.example\n"));
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1"));
    assert!(text.contains("Original-Envelope-Id: env-42\n"));
    assert!(text.contains(
        "Content-Type: text/rfc822-headers\n\nSubject: hello\nFrom: alice@example.test\n\n--"
    ));
    assert!(!text.contains("secret body"));
    assert!(!text.contains('\r'));
    assert!(text.ends_with("--1xWNvf000000AA/mx2.isp.example--\n"));
}

#[test]
fn ret_full_returns_the_body() {
    let text = render(&original("alice@example.test", None, Some("FULL")));
    assert!(text.contains("Content-Type: message/rfc822\n"));
    assert!(text.contains("secret body"));
}

#[test]
fn who_gets_a_bounce() {
    let cases = [
        ("a@x.example", None, true),
        ("a@x.example", Some("failure"), true),
        ("a@x.example", Some("FAILURE"), true),
        ("a@x.example", Some("success,failure"), true),
        ("a@x.example", Some("delay, Failure "), true),
        ("a@x.example", Some("never"), false),
        ("a@x.example", Some("delay"), false),
        ("a@x.example", Some("success,delay"), false),
        ("a@x.example", Some("failures"), false),
        ("", None, false),
        ("", Some("failure"), false),
    ];
    for (sender, notify, wanted) in cases {
        assert_eq!(
            wants_bounce(&original(sender, notify, None)),
            wanted,
            "<{sender}> NOTIFY={notify:?}"
        );
    }
}

#[test]
fn the_report_names_every_failure_in_order_with_what_is_known() {
    let here = Domain::parse("mx2.isp.example").unwrap();
    let id = QueueId::parse("1xWNvf000000AA").unwrap();
    let mut env = original("alice@example.test", None, None);
    env.envid = None;
    let bare = FailedRecipient {
        address: "second@customer.example".into(),
        status: EnhancedCode::parse("4.4.7").unwrap(),
        remote_mta: None,
        diagnostic: None,
        reason: "message expired after 5d in the queue".into(),
    };
    let mut out = Vec::new();
    let now = chrono::Local::now();
    let size = write_report(
        &mut out,
        Notice::Failure,
        id,
        &here,
        &env,
        &[failure(), bare],
        &b"Subject: hello\n\nbody\n"[..],
        now,
    )
    .unwrap();
    assert_eq!(size, out.len() as u64, "the size is what was written");
    let text = String::from_utf8(out).unwrap();
    let date =
        |t: chrono::DateTime<chrono::Local>| t.format("%a, %d %b %Y %H:%M:%S %z").to_string();
    let arrival = chrono::DateTime::from_timestamp(env.arrival, 0)
        .unwrap()
        .with_timezone(&chrono::Local);
    for part in [
        format!("Date: {}\n", date(now)),
        "From: Mail Delivery System <MAILER-DAEMON@mx2.isp.example>\n".to_string(),
        "To: <alice@example.test>\n".to_string(),
        "Message-ID: <1xWNvf000000AA@mx2.isp.example>\n".to_string(),
        "Auto-Submitted: auto-replied\n".to_string(),
        "\tboundary=\"1xWNvf000000AA/mx2.isp.example\"\n".to_string(),
        "(queue id 1xWNve3zklWKyw) to the recipients below".to_string(),
        "\n<nouser@customer.example>: host mx.customer.example said: 550 5.1.1 User unknown\n\
         <second@customer.example>: message expired after 5d in the queue\n"
            .to_string(),
        format!(
            "Reporting-MTA: dns; mx2.isp.example\nArrival-Date: {}\n",
            date(arrival)
        ),
        "\nFinal-Recipient: rfc822; second@customer.example\nAction: failed\nStatus: 4.4.7\n\n--"
            .to_string(),
    ] {
        assert!(text.contains(&part), "{part:?} in {text}");
    }
    assert!(!text.contains("Original-Envelope-Id"));
    assert_eq!(text.matches("Remote-MTA:").count(), 1);
    assert_eq!(text.matches("Diagnostic-Code:").count(), 1);
    let first = text.find("Final-Recipient: rfc822; nouser@").unwrap();
    let second = text.find("Final-Recipient: rfc822; second@").unwrap();
    assert!(first < second, "in the order given");
}

#[test]
fn a_bounce_is_queued_from_the_null_sender_when_one_is_owed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(&dir.path().join("q")).unwrap();
    let here = Domain::parse("mx2.isp.example").unwrap();
    let data = &b"Subject: hello\r\n\r\nbody\r\n"[..];
    let now = chrono::Local::now();
    let none = [
        (
            "nothing failed",
            original("alice@example.test", None, None),
            0,
        ),
        ("the null sender", original("", None, None), 1),
        (
            "NOTIFY=NEVER",
            original("alice@example.test", Some("NEVER"), None),
            1,
        ),
    ];
    for (why, env, failures) in none {
        let failed = vec![failure(); failures];
        let queued = queue_bounce(&queue, &here, &env, &failed, data, now).unwrap();
        assert!(queued.is_none(), "{why}");
    }
    assert!(queue.ids().unwrap().is_empty(), "nothing queued");

    let env = original("alice@example.test", None, None);
    let id = queue_bounce(&queue, &here, &env, &[failure()], data, now)
        .unwrap()
        .unwrap();
    let ids = queue.ids().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].0, id);
    let crate::queue::LockAttempt::Locked(bounce) = queue.try_lock(id).unwrap() else {
        panic!("not locked")
    };
    let bounced = bounce.envelope();
    assert_eq!(bounced.sender, "");
    assert_eq!(bounced.arrival, now.timestamp());
    let addresses: Vec<&str> = bounced
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(addresses, ["alice@example.test"]);
    let mut text = String::new();
    bounce.data().read_to_string(&mut text).unwrap();
    assert_eq!(bounced.size, text.len() as u64);
    assert!(text.contains("Status: 5.1.1\n"));
}

#[test]
fn a_delay_warning_says_delayed_until_when_and_carries_headers_only() {
    let mut env = original("alice@example.test", None, None);
    env.ret = Some("full".into());
    let mut out = Vec::new();
    let here = Domain::parse("mx2.isp.example").unwrap();
    let id = QueueId::parse("1xWNvf000000AA").unwrap();
    let until = env.arrival + 5 * 86400;
    let late = FailedRecipient {
        address: "b@customer.example".into(),
        status: crate::smtp::EnhancedCode {
            class: 4,
            subject: 0,
            detail: 0,
        },
        remote_mta: None,
        diagnostic: None,
        reason: "connect to [192.0.2.1]:25: Connection refused".into(),
    };
    write_report(
        &mut out,
        Notice::Delay { until },
        id,
        &here,
        &env,
        &[late],
        &b"Subject: hello\r\n\r\nsecret body\r\n"[..],
        chrono::Local::now(),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Subject: Delayed Mail (still being retried)\n"),
        "{text}"
    );
    assert!(text.contains("This is a warning only"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; b@customer.example\nAction: delayed\nStatus: 4.0.0\nWill-Retry-Until: "),
        "{text}"
    );
    assert!(!text.contains("Action: failed"), "{text}");
    assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
    assert!(
        !text.contains("secret body"),
        "RET=FULL is for failures: {text}"
    );
}
