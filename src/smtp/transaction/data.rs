//! Message data on the wire: CRLF line ends and dot-stuffing whatever line ends the stored
//! message has, written in blocks of about 64 KiB, each under its own time limit.
//!
//! A bare CR or a bare LF in the stored message ends a line as CRLF does, so no line of the
//! message can pass for the final dot at any receiver. The last block stays queued for the write
//! that carries the final dot, so with PIPELINING the dot and the next transaction's envelope go
//! out together.

use std::io::BufRead;

use super::Sent;
use crate::smtp::connection::{Connection, DATA_BLOCK};
use crate::smtp::error::SmtpError;

impl Connection {
    /// Queues the message data with CRLF line ends and dot-stuffing, and writes it in blocks
    /// as it accumulates; the last block stays queued for the write that carries the final dot.
    /// A bare CR or a bare LF in the stored message ends a line as CRLF does, so a `.` after
    /// either is stuffed and the data cannot end early at a receiver that takes a bare CR for a
    /// line end. `sent` becomes [`Sent::SomeData`] before the first block goes out.
    pub(super) fn write_body(
        &mut self,
        body: &mut dyn BufRead,
        sent: &mut Sent,
    ) -> Result<(), SmtpError> {
        let mut octets = 0usize;
        let mut at_line_start = true;
        // A CR that ended the last buffer: the LF that may open the next is part of its CRLF.
        let mut after_cr = false;
        loop {
            let chunk = body.fill_buf().map_err(SmtpError::MessageRead)?;
            if chunk.is_empty() {
                break;
            }
            let length = chunk.len();
            let mut rest = chunk;
            if after_cr {
                after_cr = false;
                rest = rest.strip_prefix(b"\n").unwrap_or(rest);
            }
            while let Some(&first) = rest.first() {
                if at_line_start && first == b'.' {
                    self.unsent.push(b'.');
                }
                at_line_start = false;
                let Some(end) = memchr::memchr2(b'\r', b'\n', rest) else {
                    self.unsent.extend_from_slice(rest);
                    break;
                };
                self.unsent.extend_from_slice(&rest[..end]);
                self.unsent.extend_from_slice(b"\r\n");
                at_line_start = true;
                rest = match (rest[end], rest.get(end + 1)) {
                    (b'\r', Some(b'\n')) => &rest[end + 2..],
                    (b'\r', None) => {
                        after_cr = true;
                        &rest[end + 1..]
                    }
                    _ => &rest[end + 1..],
                };
            }
            body.consume(length);
            octets += length;
            if self.unsent.len() >= DATA_BLOCK {
                *sent = Sent::SomeData;
                self.flush_data()?;
            }
        }
        if !at_line_start {
            self.unsent.extend_from_slice(b"\r\n");
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
