//! Message data on the wire: CRLF line ends whatever line ends the stored message has,
//! dot-stuffed after DATA and counted for BDAT, written in blocks of about 64 KiB, each under
//! its own time limit.
//!
//! A bare CR or a bare LF in the stored message ends a line as CRLF does, so no line of the
//! message can pass for the final dot at any receiver. The last block stays queued for the write
//! that carries the final dot, so with PIPELINING the dot and the next transaction's envelope go
//! out together. For BDAT the size is counted first ([`wire_size`]), in a pass over the stored
//! message with the same rewriting, so the data streams in blocks as after DATA.

use std::io::BufRead;

use super::Sent;
use crate::smtp::connection::{Connection, DATA_BLOCK};
use crate::smtp::error::SmtpError;

/// How the data is sent: after DATA, dot-stuffed; in BDAT chunks, as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    DotStuffed,
    Counted,
}

/// Rewrites stored message data for the wire, piece by piece: CRLF line ends whatever the
/// stored ones are, a leading dot doubled when dot-stuffing, a CRLF to close a last line
/// without one.
struct Wire {
    framing: Framing,
    at_line_start: bool,
    /// A CR that ended the last piece: the LF that may open the next is part of its CRLF.
    after_cr: bool,
}

impl Wire {
    fn new(framing: Framing) -> Wire {
        Wire {
            framing,
            at_line_start: true,
            after_cr: false,
        }
    }

    /// Appends `piece` as it goes on the wire to `out`.
    fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut rest = piece;
        if self.after_cr {
            self.after_cr = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(&first) = rest.first() {
            if self.at_line_start && first == b'.' && self.framing == Framing::DotStuffed {
                out.push(b'.');
            }
            self.at_line_start = false;
            let Some(end) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                break;
            };
            out.extend_from_slice(&rest[..end]);
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
            rest = match (rest[end], rest.get(end + 1)) {
                (b'\r', Some(b'\n')) => &rest[end + 2..],
                (b'\r', None) => {
                    self.after_cr = true;
                    &rest[end + 1..]
                }
                _ => &rest[end + 1..],
            };
        }
    }

    /// Closes a last line without a line end.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The octets the message takes on the wire with `framing`, read from where `body` stands.
pub(super) fn wire_size(body: &mut dyn BufRead, framing: Framing) -> Result<u64, SmtpError> {
    let mut wire = Wire::new(framing);
    let mut out = Vec::with_capacity(DATA_BLOCK);
    let mut size = 0u64;
    loop {
        let piece = body.fill_buf().map_err(SmtpError::MessageRead)?;
        if piece.is_empty() {
            break;
        }
        let length = piece.len();
        wire.push(piece, &mut out);
        body.consume(length);
        size += out.len() as u64;
        out.clear();
    }
    wire.finish(&mut out);
    Ok(size + out.len() as u64)
}

impl Connection {
    /// Queues the message data with CRLF line ends (and dot-stuffing after DATA), and writes it
    /// in blocks as it accumulates; the last block stays queued for the write that carries the
    /// final dot or the next commands. A bare CR or a bare LF in the stored message ends a line
    /// as CRLF does, so a `.` after either is stuffed and the data cannot end early at a
    /// receiver that takes a bare CR for a line end. `sent` becomes [`Sent::SomeData`] before
    /// the first block goes out. With `limit` (the size a BDAT announced) no octet beyond it is
    /// ever queued, and the data must come to exactly that size: a message that changed since
    /// it was counted is an error, never octets the server would read as commands.
    pub(super) fn write_body(
        &mut self,
        body: &mut dyn BufRead,
        sent: &mut Sent,
        framing: Framing,
        limit: Option<u64>,
    ) -> Result<(), SmtpError> {
        let changed = || {
            SmtpError::MessageRead(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the message changed while it was sent",
            ))
        };
        let mut wire = Wire::new(framing);
        let mut octets = 0usize;
        let mut queued = 0u64;
        loop {
            let piece = body.fill_buf().map_err(SmtpError::MessageRead)?;
            if piece.is_empty() {
                break;
            }
            let length = piece.len();
            let before = self.unsent.len();
            wire.push(piece, &mut self.unsent);
            queued += (self.unsent.len() - before) as u64;
            if limit.is_some_and(|limit| queued > limit) {
                self.unsent.truncate(before);
                return Err(changed());
            }
            body.consume(length);
            octets += length;
            if self.unsent.len() >= DATA_BLOCK {
                *sent = (*sent).max(Sent::SomeData);
                self.flush_data()?;
            }
        }
        let before = self.unsent.len();
        wire.finish(&mut self.unsent);
        queued += (self.unsent.len() - before) as u64;
        if limit.is_some_and(|limit| queued != limit) {
            self.unsent.truncate(before.min(self.unsent.len()));
            return Err(changed());
        }
        self.transcript
            .note(&format!("({octets} octets of message data)"));
        Ok(())
    }

    /// Writes what is queued as one block of message data (commands may follow it in the block).
    pub(super) fn flush_data(&mut self) -> Result<(), SmtpError> {
        let unsent = std::mem::take(&mut self.unsent);
        let written = self.write_all(&unsent, self.timeouts.data_block);
        self.recycle(unsent);
        written.map_err(|e| self.failure(e, "sending message data"))
    }

    /// Queues the dot that ends message data; its reply may take the longest of all.
    pub(super) fn queue_dot(&mut self) {
        self.transcript.sent(".");
        self.unsent.extend_from_slice(b".\r\n");
        self.awaited
            .push_back(("the end of message data", self.timeouts.data_end));
    }
}
