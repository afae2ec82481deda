//! One JSON object per message, with `postqueue -j`'s field names (the schema is in the module
//! doc of `report`).

use std::io::{self, Write};

use serde::Serialize;

use crate::queue::envelope::Envelope;
use crate::queue::{Inspection, Place};

#[derive(Serialize)]
struct MessageJson<'a> {
    queue_name: &'static str,
    queue_id: &'a str,
    arrival_time: i64,
    message_size: u64,
    forced_expire: bool,
    sender: &'a str,
    locked: bool,
    recipients: Vec<RecipientJson<'a>>,
}

#[derive(Serialize)]
struct RecipientJson<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_reason: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    next_attempt: i64,
}

pub(super) fn write_json_entry(
    out: &mut impl Write,
    inspection: &Inspection,
    envelope: &Envelope,
) -> io::Result<()> {
    let message = MessageJson {
        queue_name: match inspection.place {
            Place::Active => "active",
            Place::Held => "hold",
        },
        queue_id: envelope.id.as_str(),
        arrival_time: envelope.arrival,
        message_size: envelope.size,
        forced_expire: false,
        sender: &envelope.sender,
        locked: inspection.locked,
        recipients: envelope
            .open_recipients()
            .map(|r| RecipientJson {
                address: &r.address,
                delay_reason: Some(r.reason.as_str()).filter(|s| !s.is_empty()),
                status: r.status.as_str(),
                attempts: r.attempts,
                next_attempt: r.next_attempt,
            })
            .collect(),
    };
    // `io::Error::from` keeps the kind of a write error, so `mailq --json | head` stays a broken
    // pipe (exit 0) instead of becoming an I/O error.
    serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)?;
    writeln!(out)
}
