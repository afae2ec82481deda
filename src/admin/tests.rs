//! The verbs over a real queue directory, without the program around them.

use super::*;
use crate::config::Config;
use crate::queue::selection::Selection;

fn request(verb: Verb, choice: Choice) -> Request {
    Request {
        verb,
        choice,
        dry_run: false,
        wait: Duration::ZERO,
        part: Part::Whole,
        user: "root".to_string(),
        now: chrono::Utc::now().timestamp(),
    }
}

#[test]
fn nothing_named_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let log = MailLog::open(&crate::config::LogTarget::Stderr, "queue-admin");
    let mut out = Vec::new();
    let err = run(
        &queue,
        &Config::default(),
        &request(Verb::Delete, Choice::default()),
        &log,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(err, AdminError::NothingSelected));
    assert!(out.is_empty());
}

#[test]
fn words_become_ids_and_the_rest_is_reported() {
    let mut choice = Choice::default();
    let id = crate::queue::QueueId::generate();
    let starred = format!("{id}*");
    choice.add_ids([starred.as_str(), "../etc", "x"]);
    assert_eq!(choice.ids, vec![id]);
    assert_eq!(choice.not_ids, vec!["../etc", "x"]);
    assert!(!choice.is_empty());
    // An empty pipe names ids all the same: none of them, never every message.
    let mut piped = Choice::default();
    piped.add_ids(read_ids(&b"\n \n"[..]).unwrap().iter().map(String::as_str));
    assert!(!piped.is_empty());
    let envelope = crate::queue::envelope::Envelope {
        id,
        arrival: 0,
        size: 0,
        sender: "a@b.test".into(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients: vec![crate::queue::envelope::Recipient::new("u@c.test".into())],
    };
    assert!(!piped.takes(&envelope, crate::queue::Place::Active, 0));
    assert!(choice.takes(&envelope, crate::queue::Place::Active, 0));
    let read = read_ids(&b"  a b\n\nc\n"[..]).unwrap();
    assert_eq!(read, ["a", "b", "c"]);
    let held = Choice {
        selection: Selection {
            held: true,
            ..Selection::default()
        },
        ..Choice::default()
    };
    assert!(!held.is_empty());
    let selected = Choice {
        selection: Selection {
            senders: vec!["x".into()],
            ..Selection::default()
        },
        ..Choice::default()
    };
    assert!(!selected.is_empty());
}

#[test]
fn the_status_follows_what_was_left_undone() {
    use crate::sysexits::Status;
    let cases = [
        (Summary::default(), Status::Ok),
        (
            Summary {
                done: 3,
                unchanged: 1,
                ..Summary::default()
            },
            Status::Ok,
        ),
        (
            Summary {
                unknown: 1,
                ..Summary::default()
            },
            Status::NoUser,
        ),
        (
            Summary {
                busy: 1,
                unknown: 1,
                ..Summary::default()
            },
            Status::TempFail,
        ),
        (
            Summary {
                failed: 1,
                ..Summary::default()
            },
            Status::TempFail,
        ),
    ];
    for (summary, status) in cases {
        assert_eq!(summary.status(), status, "{summary:?}");
    }
}
