//! Message data in BDAT chunks (RFC 3030), as lines: each chunk exactly as many octets as its
//! command said, lines running on across chunk boundaries, up to the end of the `LAST` chunk.
//!
//! The octets are counted, never scanned for an end marker, so nothing inside a chunk can end it
//! early or late. The lines are held to the same rules as DATA's: only CRLF ends a line, a bare
//! CR or LF or a line over 1000 octets is a fault, and so is a message over the size limit. The
//! first fault stops the lines given out, and the rest of the chunks is read and dropped to the
//! end of the last one, so the session stays in step and answers after the data, as after DATA.
//! There is no dot-stuffing in a chunk: a line that starts with a dot is kept as it came. A final
//! line without its CRLF gets one, as the queue holds whole lines only.
//!
//! Between two chunks the caller is asked for the next one ([`NextChunk`]): that is where the
//! session answers the chunk just read and reads the next command. A caller that finds no BDAT
//! there ends the message: the lines end, and the caller knows the data is not whole. At most one line (1000 octets) is held in memory, whatever the chunk sizes.

use std::io::{self, BufRead, Write};

use crate::header::Lines;

use super::{Channel, DataFault, LineFault, MAX_TEXT_LINE, is_one_crlf_line};

/// One BDAT command: the octets that follow it, and whether they end the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub size: u64,
    pub last: bool,
}

/// Asked after each chunk but the last, with the channel and the chunk's size: the next chunk,
/// or `None` when the client sent something else and the message is abandoned.
pub trait NextChunk: FnMut(&mut Channel, u64) -> io::Result<Option<Chunk>> {}

impl<F: FnMut(&mut Channel, u64) -> io::Result<Option<Chunk>>> NextChunk for F {}

/// The lines of a message sent in chunks. After the first fault no more lines are given; the
/// chunks are still read to the last, and [`ChunkLines::fault`] says what happened.
pub struct ChunkLines<'c, N> {
    channel: &'c mut Channel,
    next: N,
    chunk: Chunk,
    /// Octets of the current chunk not read yet.
    remaining: u64,
    /// The line being put together, cut at [`MAX_TEXT_LINE`]; it may span chunks.
    line: Vec<u8>,
    overflow: bool,
    /// The line handed out last.
    out: Vec<u8>,
    size: u64,
    size_limit: u64,
    fault: Option<DataFault>,
    done: bool,
}

impl Channel {
    /// The chunks of a message, from the `first` one whose BDAT command was just read.
    pub fn chunks<N: NextChunk>(
        &mut self,
        size_limit: u64,
        first: Chunk,
        next: N,
    ) -> ChunkLines<'_, N> {
        ChunkLines {
            channel: self,
            next,
            chunk: first,
            remaining: first.size,
            line: Vec::with_capacity(MAX_TEXT_LINE),
            overflow: false,
            out: Vec::with_capacity(MAX_TEXT_LINE),
            size: 0,
            size_limit,
            fault: None,
            done: false,
        }
    }

    /// Reads and drops `octets` of chunk data: the chunk of a BDAT that is refused.
    pub fn discard(&mut self, mut octets: u64) -> io::Result<()> {
        while octets > 0 {
            let available = self.fill()?;
            let used = available.min(usize::try_from(octets).unwrap_or(usize::MAX));
            self.reader.consume(used);
            octets -= used as u64;
        }
        Ok(())
    }

    /// Fills the read buffer, sending the queued replies first when that means waiting for the
    /// client, and credits what arrived against the data rate. The octets available; a close
    /// here is an error, as it cuts a chunk short.
    fn fill(&mut self) -> io::Result<usize> {
        loop {
            let reading = self.reader.buffer().is_empty();
            if reading {
                self.writer.flush()?;
            }
            let arrived = match self.reader.fill_buf() {
                Ok(bytes) => bytes.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if arrived == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during BDAT",
                ));
            }
            if reading {
                self.received(arrived);
            }
            return Ok(arrived);
        }
    }
}

impl<N: NextChunk> ChunkLines<'_, N> {
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    fn note(&mut self, fault: DataFault) {
        self.fault.get_or_insert(fault);
    }

    /// Reads on to the end of the next line, or of the chunk. True when a line ended.
    fn read_piece(&mut self) -> io::Result<bool> {
        let available = self.channel.fill()?;
        let available = available.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let buffer = &self.channel.reader.buffer()[..available];
        let (piece, found) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        let room = MAX_TEXT_LINE.saturating_sub(self.line.len());
        if piece.len() > room {
            self.overflow = true;
        }
        self.line.extend_from_slice(&piece[..piece.len().min(room)]);
        let used = piece.len();
        self.channel.reader.consume(used);
        self.remaining -= used as u64;
        Ok(found)
    }

    /// Judges the line put together and hands it out unless a fault was found; starts the next.
    fn take_line(&mut self) -> bool {
        let overflow = std::mem::take(&mut self.overflow);
        if overflow {
            self.note(DataFault::Line(LineFault::TooLong));
        } else if !is_one_crlf_line(&self.line) {
            self.note(DataFault::Line(LineFault::BareCrOrLf));
        }
        if self.fault.is_none() {
            self.size += self.line.len() as u64;
            if self.size > self.size_limit {
                self.note(DataFault::TooBig);
            }
        }
        std::mem::swap(&mut self.out, &mut self.line);
        self.line.clear();
        self.fault.is_none()
    }
}

impl<N: NextChunk> Lines for ChunkLines<'_, N> {
    type Error = io::Error;

    fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.remaining == 0 {
                if self.chunk.last {
                    self.done = true;
                    if self.line.is_empty() {
                        return Ok(None);
                    }
                    // The message ends inside its last line: the line is completed.
                    self.line.extend_from_slice(b"\r\n");
                    if self.take_line() {
                        return Ok(Some(&self.out));
                    }
                    return Ok(None);
                }
                let size = self.chunk.size;
                match (self.next)(self.channel, size)? {
                    Some(chunk) => {
                        self.chunk = chunk;
                        self.remaining = chunk.size;
                    }
                    None => self.done = true,
                }
                continue;
            }
            if self.read_piece()? && self.take_line() {
                return Ok(Some(&self.out));
            }
        }
    }
}
