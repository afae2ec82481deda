//! Message data after a 354, as lines: dot-unstuffed, each ending in CRLF, up to the
//! `<CRLF>.<CRLF>` that ends it.
//!
//! Only `<CRLF>.<CRLF>` ends the data: a dot line after a bare LF, or one that ends in a bare LF,
//! is data (and a fault). The first fault (a bare CR or LF, a line over 1000 octets, more octets
//! than the size limit) stops the lines given out, and the rest is read and dropped to the real
//! end, so the session stays in step with the client and can answer after the data. A client
//! that hangs up inside the data is an error: nothing of such a message can be kept.

use std::io;

use crate::header::Lines;

use super::{Channel, LineFault, MAX_TEXT_LINE, is_one_crlf_line};

/// Why message data cannot be accepted; found while reading, reported after its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFault {
    Line(LineFault),
    /// More octets than the size limit.
    TooBig,
}

/// The lines of one message, dot-unstuffed, each ending in CRLF. After the first fault no more
/// lines are given: the rest is read and discarded up to the end of the data, so the session
/// stays in step with the client, and [`DataLines::fault`] says what happened.
pub struct DataLines<'c> {
    channel: &'c mut Channel,
    line: Vec<u8>,
    size: u64,
    size_limit: u64,
    fault: Option<DataFault>,
    /// Only a CRLF can open the `<CRLF>.<CRLF>` that ends the data; the CRLF of the DATA command
    /// counts for an empty message.
    previous_ended_in_crlf: bool,
    done: bool,
}

impl<'c> DataLines<'c> {
    pub(super) fn new(channel: &'c mut Channel, size_limit: u64) -> DataLines<'c> {
        DataLines {
            channel,
            line: Vec::with_capacity(MAX_TEXT_LINE),
            size: 0,
            size_limit,
            fault: None,
            previous_ended_in_crlf: true,
            done: false,
        }
    }

    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    fn note(&mut self, fault: DataFault) {
        self.fault.get_or_insert(fault);
    }
}

impl Lines for DataLines<'_> {
    type Error = io::Error;

    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(raw) = self.channel.read_raw_line(MAX_TEXT_LINE)? else {
                // The client hung up inside the data: nothing of it can be kept.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during DATA",
                ));
            };
            if raw.bytes == b".\r\n" && self.previous_ended_in_crlf {
                self.done = true;
                return Ok(None);
            }
            self.previous_ended_in_crlf = raw.crlf;
            if raw.overflow {
                self.note(DataFault::Line(LineFault::TooLong));
            } else if !is_one_crlf_line(&raw.bytes) {
                self.note(DataFault::Line(LineFault::BareCrOrLf));
            }
            // RFC 5321 §4.5.2: a leading dot was doubled by the client.
            let text = raw.bytes.strip_prefix(b".").unwrap_or(&raw.bytes);
            if self.fault.is_none() {
                self.size += text.len() as u64;
                if self.size > self.size_limit {
                    self.note(DataFault::TooBig);
                }
            }
            if self.fault.is_some() {
                continue;
            }
            self.line.clear();
            self.line.extend_from_slice(text);
            return Ok(Some(&self.line));
        }
    }
}
