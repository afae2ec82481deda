//! What the queue's unit tests share: a sample envelope, and a message committed with it.

use std::io::Write;

use super::envelope::{Envelope, Recipient};
use super::{Queue, QueueId};

pub(super) fn envelope(id: QueueId, size: u64) -> Envelope {
    Envelope {
        id,
        arrival: 1_795_418_591,
        size,
        sender: "alice@example.test".into(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients: vec![Recipient::new("user@customer.example".into())],
    }
}

pub(super) fn commit(queue: &Queue, body: &[u8]) -> QueueId {
    let mut draft = queue.draft().unwrap();
    draft.write_all(body).unwrap();
    let id = draft.id();
    draft.commit(&envelope(id, body.len() as u64)).unwrap()
}
