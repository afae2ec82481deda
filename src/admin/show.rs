//! `show`: a message's envelope and its text, for a person, like `postcat -q` and `exim -Mvh`.
//!
//! The envelope comes first, then the message, whole or its header section or its body:
//!
//! ```text
//! *** ENVELOPE 1xWNve3zklWKyw ***
//! queue:        active
//! arrival:      Mon, 30 Nov 2026 10:00:00 +0000
//! size:         1234
//! sender:       <frank@sender.test>
//! recipient:    <u@customer.test>
//!   status:     deferred, 2 attempts, next attempt Mon, 30 Nov 2026 12:00:00 +0000
//!   last reply: host mx.customer.test[192.0.2.1]:25 said: 451 4.3.0 try later
//! *** MESSAGE ***
//! From: Frank <frank@sender.test>
//! ...
//! ```
//!
//! Nothing is locked: the data file never changes after commit. The text is streamed, never
//! held whole; CRLF line ends are printed as LF, and every other control character (a bare CR,
//! ESC, NUL) as `?`, so a hostile message cannot drive the terminal.

use std::io::{BufReader, Read, Write};

use crate::header::rfc5322_date;
use crate::queue::envelope::{Envelope, RecipientStatus};
use crate::queue::{Place, Queue, QueueId};

use super::{AdminError, line, place_name};

/// What `show` prints of the message after its envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    #[default]
    Whole,
    Headers,
    Body,
}

pub(super) fn write(
    queue: &Queue,
    id: QueueId,
    place: Place,
    locked: bool,
    part: Part,
    out: &mut impl Write,
) -> Result<(), AdminError> {
    let envelope = match queue.read_envelope_of(id, place) {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return line(out, id, "left the queue meanwhile"),
        Err(reason) => return line(out, id, &format!("unreadable envelope ({reason})")),
    };
    let output = AdminError::Output;
    write_envelope(out, &envelope, place, locked).map_err(output)?;
    writeln!(out, "*** MESSAGE ***").map_err(output)?;
    match queue.peek_data(id)? {
        Some(data) => copy_text(data, part, out).map_err(output),
        None => writeln!(out, "(the message data file is missing)").map_err(output),
    }
}

fn date(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(|t| rfc5322_date(&t.with_timezone(&chrono::Local)))
        .unwrap_or_else(|| epoch.to_string())
}

fn write_envelope(
    out: &mut impl Write,
    envelope: &Envelope,
    place: Place,
    locked: bool,
) -> std::io::Result<()> {
    writeln!(out, "*** ENVELOPE {} ***", envelope.id)?;
    let busy = if locked {
        "; a queue run is delivering it now"
    } else {
        ""
    };
    writeln!(out, "queue:        {}{busy}", place_name(place))?;
    writeln!(out, "arrival:      {}", date(envelope.arrival))?;
    writeln!(out, "size:         {}", envelope.size)?;
    writeln!(out, "sender:       <{}>", clean(&envelope.sender))?;
    for (key, value) in [
        ("notify", &envelope.notify),
        ("ret", &envelope.ret),
        ("envid", &envelope.envid),
    ] {
        if let Some(value) = value {
            writeln!(out, "{key:<13} {}", clean(value))?;
        }
    }
    if let Some(warned) = envelope.warned {
        writeln!(
            out,
            "warned:       {} (the sender was told it is late)",
            date(warned)
        )?;
    }
    for recipient in &envelope.recipients {
        writeln!(out, "recipient:    <{}>", clean(&recipient.address))?;
        let next = match recipient.status {
            RecipientStatus::Pending | RecipientStatus::Deferred if recipient.next_attempt > 0 => {
                format!(", next attempt {}", date(recipient.next_attempt))
            }
            RecipientStatus::Pending | RecipientStatus::Deferred => ", due now".to_string(),
            RecipientStatus::Sent | RecipientStatus::Failed => String::new(),
        };
        writeln!(
            out,
            "  status:     {}, {} attempts{next}",
            recipient.status.as_str(),
            recipient.attempts
        )?;
        if !recipient.reason.is_empty() {
            writeln!(out, "  last reply: {}", clean(&recipient.reason))?;
        }
    }
    Ok(())
}

/// Envelope text as stored has no TAB, CR or LF; other control characters are replaced.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Copies `part` of the message to `out`, one byte at a time through buffers: CRLF as LF, any
/// other control character but TAB as `?`.
fn copy_text(data: impl Read, part: Part, out: &mut impl Write) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, data);
    let mut in_header = true;
    let mut line_len = 0usize;
    let mut cr = false;
    let mut chunk = [0u8; 64 * 1024];
    let mut printed = Vec::with_capacity(64 * 1024);
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        for &byte in &chunk[..n] {
            let shown = match part {
                Part::Whole => true,
                Part::Headers => in_header,
                Part::Body => !in_header,
            };
            if byte == b'\n' {
                cr = false;
                let ends_header = in_header && line_len == 0;
                if shown && !(ends_header && part == Part::Headers) {
                    printed.push(b'\n');
                }
                if ends_header {
                    in_header = false;
                    if part == Part::Headers {
                        out.write_all(&printed)?;
                        return Ok(());
                    }
                }
                line_len = 0;
                continue;
            }
            if cr && shown {
                printed.push(b'?');
            }
            cr = byte == b'\r';
            if cr {
                continue;
            }
            line_len += 1;
            if shown {
                printed.push(if byte == b'\t' || (byte >= 0x20 && byte != 0x7f) {
                    byte
                } else {
                    b'?'
                });
            }
        }
        out.write_all(&printed)?;
        printed.clear();
    }
    if line_len > 0 || cr {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &[u8], part: Part) -> String {
        let mut out = Vec::new();
        copy_text(text, part, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parts_are_split_at_the_first_empty_line() {
        let message = b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n\r\nmore\r\n";
        let cases = [
            (Part::Whole, "Subject: hi\nFrom: a@b\n\nbody\n\nmore\n"),
            (Part::Headers, "Subject: hi\nFrom: a@b\n"),
            (Part::Body, "body\n\nmore\n"),
        ];
        for (part, expected) in cases {
            assert_eq!(shown(message, part), expected, "{part:?}");
        }
        assert_eq!(shown(b"Subject: only", Part::Headers), "Subject: only\n");
        assert_eq!(shown(b"Subject: only\n", Part::Body), "");
        assert_eq!(shown(b"", Part::Whole), "");
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let message = b"Subject: \x1b[2Jgone\x00\r\n\r\nbare\rcr\tand tab\x7f\r";
        assert_eq!(
            shown(message, Part::Whole),
            "Subject: ?[2Jgone?\n\nbare?cr\tand tab?\n"
        );
        assert_eq!(clean("a\u{1b}b\u{9b}c"), "a?b?c");
    }
}
