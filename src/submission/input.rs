//! Standard input as lines: in pieces of at most 64 KiB however long the line, ending at the end
//! of input or, unless `-i`, at a line holding a lone dot.

use std::io::{self, BufRead};

use crate::header::Lines;

use super::SubmissionError;

/// The longest piece of a line [`Input`] holds: a longer line is handed on in pieces.
pub(super) const PIECE: usize = 64 * 1024;

/// The input, line by line, ending at EOF or (unless `-i`) at a line holding a lone dot. A line
/// longer than [`PIECE`] comes in pieces, each but the last without a line ending.
pub(super) struct Input<R> {
    reader: R,
    dot_ends_input: bool,
    line: Vec<u8>,
    /// The next piece starts a line (the last one ended in LF).
    at_line_start: bool,
    done: bool,
}

impl<R: BufRead> Input<R> {
    pub(super) fn new(reader: R, dot_ends_input: bool) -> Input<R> {
        Input {
            reader,
            dot_ends_input,
            line: Vec::with_capacity(1024),
            at_line_start: true,
            done: false,
        }
    }

    /// Reads up to the next LF, or [`PIECE`] octets, or the end of input.
    fn read_piece(&mut self) -> io::Result<()> {
        self.line.clear();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(());
            }
            let room = PIECE - self.line.len();
            let window = &available[..available.len().min(room)];
            let (take, found) = match window.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (window.len(), false),
            };
            self.line.extend_from_slice(&window[..take]);
            self.reader.consume(take);
            if found || self.line.len() == PIECE {
                return Ok(());
            }
        }
    }
}

impl<R: BufRead> Lines for Input<R> {
    type Error = SubmissionError;

    /// The next line (or piece of one) with its line ending (the last may have none).
    fn next_line(&mut self) -> Result<Option<&[u8]>, SubmissionError> {
        if self.done {
            return Ok(None);
        }
        self.read_piece().map_err(SubmissionError::Input)?;
        let starts_line = self.at_line_start;
        self.at_line_start = self.line.ends_with(b"\n");
        let lone_dot = starts_line
            && self.dot_ends_input
            && matches!(&self.line[..], b".\n" | b".\r\n" | b".");
        if self.line.is_empty() || lone_dot {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(&self.line))
    }
}
