//! Bytes on the wire: command lines and message data read strictly, replies written in order.
//!
//! Only CRLF ends a line. A line that ends in a bare LF, or holds a CR anywhere but before its
//! LF, is reported as such and never reinterpreted: guessing where a line ends is what SMTP
//! smuggling exploits. Lines longer than their limit are consumed to their end and reported, so
//! the next line is read from its true start. Replies are buffered and flushed only when the
//! client has sent nothing more, which keeps a pipelined client's replies in command order and
//! sends them in as few packets as possible (RFC 2920 §3.2).
//!
//! Time is bounded per step, not per read: a command line must arrive whole before its
//! deadline ([`Channel::expect_command`]), and message data must keep up a minimum rate
//! ([`Channel::expect_data`]: each octet buys `1/rate` seconds, and the credit never exceeds the
//! data window), so a client that sends a byte now and then cannot hold a session. Every read
//! from the socket may wait only for what is left of the deadline. Writes have a time limit of
//! their own. Under stress ([`Stress`]: most of the daemon's connections taken) a shorter limit
//! applies at once, to reads already waiting too: a command must then come within it, and data
//! must not stall for longer.
//!
//! After STARTTLS the same reader and writer go on over TLS: both ends are swapped for halves of
//! one rustls stream on the same socket, whose reads keep the same deadline, so the handshake
//! and every TLS record are bounded as well. The channel then says it runs over TLS, which no
//! later command can undo.
//!
//! The socket side (deadlines, stress, the TLS halves) is in [`socket`], message data in
//! [`data`] (after DATA) and [`chunk`] (in BDAT chunks). A channel may run over any pair of
//! streams: without a socket there are no
//! deadlines and no STARTTLS, as under inetd over a pipe, and as the unit tests run it.

mod chunk;
mod data;
#[cfg(test)]
mod properties;
mod socket;
#[cfg(test)]
mod tests;

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::smtp::Reply;

pub use chunk::Chunk;
pub use data::{DataFault, DataLines};
use socket::{Clock, Socket, TlsHalf};
pub use socket::{Load, Stress, is_timeout};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets, CRLF included.
pub const MAX_TEXT_LINE: usize = 1000;

/// What was wrong with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFault {
    /// Longer than its limit.
    TooLong,
    /// A CR or LF that is not part of a CRLF pair.
    BareCrOrLf,
}

/// One line as read: the bytes without their CRLF, or what was wrong with it.
pub type CommandLine = Result<Vec<u8>, LineFault>;

/// How the deadline moves while data arrives.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// A fixed deadline: a command line, a TLS handshake.
    Fixed,
    /// Message data: each octet moves the deadline `1/rate` seconds on, never past `window`
    /// from now.
    Rate { window: Duration, rate: u64 },
}

/// A session's connection: buffered input, buffered output, the socket (when there is one)
/// and the deadline its reads keep.
pub struct Channel {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: BufWriter<Box<dyn Write + Send>>,
    socket: Option<TcpStream>,
    clock: Clock,
    stress: Option<Stress>,
    pace: Pace,
    /// The TLS stream once STARTTLS succeeded, which cannot be undone; kept to hand the
    /// connection on ([`Channel::into_parts`]).
    tls: Option<TlsStream>,
}

/// Both halves of the channel share it after STARTTLS.
type TlsStream = Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, Socket>>>;

impl Channel {
    /// A connection over a TCP socket, with time limits, and shorter ones under `stress`.
    pub fn tcp(stream: TcpStream, stress: Option<Stress>) -> io::Result<Channel> {
        let clock = Clock::default();
        let reader = Socket {
            stream: stream.try_clone()?,
            clock: Arc::clone(&clock),
            stress: stress.clone(),
        };
        let timer = stream.try_clone()?;
        let mut channel = Channel::new(Box::new(reader), Box::new(stream), Some(timer));
        channel.clock = clock;
        channel.stress = stress;
        Ok(channel)
    }

    /// A connection over any pair of streams, without read deadlines (a pipe under inetd);
    /// [`Channel::tcp`] makes the one with them.
    pub fn new(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        socket: Option<TcpStream>,
    ) -> Channel {
        Channel {
            reader: BufReader::with_capacity(16 * 1024, reader),
            writer: BufWriter::with_capacity(16 * 1024, writer),
            socket,
            clock: Clock::default(),
            stress: None,
            pace: Pace::Fixed,
            tls: None,
        }
    }

    /// True when STARTTLS can run here: there is a socket under the session.
    pub fn can_start_tls(&self) -> bool {
        self.socket.is_some()
    }

    /// True once the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Ends the channel and gives back the socket and the TLS session on it, for a session that
    /// goes on over the same connection with the roles turned around (ODMR). Queued replies are
    /// sent first; the caller checks that no input is pending, since it would be lost.
    pub fn into_parts(mut self) -> io::Result<(TcpStream, Option<rustls::ServerConnection>)> {
        self.writer.flush()?;
        let Some(socket) = self.socket.take() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no socket under the session",
            ));
        };
        let Some(stream) = self.tls.take() else {
            return Ok((socket, None));
        };
        // The halves hold the other references to the stream.
        drop(self);
        let stream = Arc::try_unwrap(stream)
            .map_err(|_| io::Error::other("the TLS stream is still shared"))?
            .into_inner()
            .map_err(|_| io::Error::other("TLS stream lock poisoned"))?;
        Ok((socket, Some(stream.conn)))
    }

    /// True when the client has sent bytes not yet read as commands.
    pub fn has_pending_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Sends the queued replies (the 220 to STARTTLS among them), runs the server side of the TLS
    /// handshake on the socket, and from then on reads and writes through TLS. Returns the
    /// protocol and cipher suite. The caller checks first that no input is pending: bytes that
    /// came in clear must never be read as if they had come over TLS.
    pub fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<String> {
        self.writer.flush()?;
        let Some(socket) = &self.socket else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no socket to run TLS on",
            ));
        };
        let mut socket = Socket {
            stream: socket.try_clone()?,
            clock: Arc::clone(&self.clock),
            stress: self.stress.clone(),
        };
        let mut connection = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut socket)?;
        }
        let summary = super::tls::describe(&connection);
        let stream = Arc::new(Mutex::new(rustls::StreamOwned::new(connection, socket)));
        self.reader = BufReader::with_capacity(16 * 1024, Box::new(TlsHalf(Arc::clone(&stream))));
        self.writer = BufWriter::with_capacity(16 * 1024, Box::new(TlsHalf(Arc::clone(&stream))));
        self.tls = Some(stream);
        Ok(summary)
    }

    /// Sets the time limit of each write. Without a socket there is none to set.
    pub fn set_write_timeout(&self, limit: Duration) -> io::Result<()> {
        match &self.socket {
            Some(socket) => socket.set_write_timeout(Some(limit)),
            None => Ok(()),
        }
    }

    /// What is read from now on (a command line, a TLS handshake) must be in within `limit`.
    pub fn expect_command(&mut self, limit: Duration) {
        self.pace = Pace::Fixed;
        self.set_deadline(Instant::now() + limit);
    }

    /// Message data from now on: the deadline starts `window` away and moves on by `1/rate`
    /// seconds for each octet received, never further than `window` from now. A `rate` of 0
    /// makes it a fixed deadline.
    pub fn expect_data(&mut self, window: Duration, rate: u64) {
        self.pace = match rate {
            0 => Pace::Fixed,
            rate => Pace::Rate { window, rate },
        };
        self.set_deadline(Instant::now() + window);
    }

    fn set_deadline(&self, at: Instant) {
        if self.socket.is_none() {
            return;
        }
        if let Ok(mut timer) = self.clock.lock() {
            timer.deadline = Some(at);
            timer.since = Some(Instant::now());
        }
    }

    /// Credits `octets` just received against the data rate.
    fn received(&self, octets: usize) {
        let Pace::Rate { window, rate } = self.pace else {
            return;
        };
        let Ok(mut timer) = self.clock.lock() else {
            return;
        };
        let now = Instant::now();
        if let Some(at) = timer.deadline {
            let credit = Duration::from_secs_f64(octets as f64 / rate as f64);
            timer.deadline = Some((at + credit).min(now + window));
            timer.since = Some(now);
        }
    }

    /// Queues one reply; it goes out with the next flush.
    pub fn reply(&mut self, reply: &Reply) -> io::Result<()> {
        reply.write_to(&mut self.writer)
    }

    /// Sends every queued reply now.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// The next command line, or `None` when the client closed the connection (a line cut off
    /// by the close is dropped: it was never a command).
    pub fn read_command(&mut self) -> io::Result<Option<CommandLine>> {
        let Some(raw) = self.read_raw_line(MAX_COMMAND_LINE)? else {
            return Ok(None);
        };
        if raw.overflow {
            return Ok(Some(Err(LineFault::TooLong)));
        }
        if !is_one_crlf_line(&raw.bytes) {
            return Ok(Some(Err(LineFault::BareCrOrLf)));
        }
        let mut line = raw.bytes;
        line.truncate(line.len() - 2);
        Ok(Some(Ok(line)))
    }

    /// Reads one line of at most `limit` octets including its LF; what is over the limit is
    /// consumed and dropped. `None` at the end of input.
    pub(super) fn read_raw_line(&mut self, limit: usize) -> io::Result<Option<RawLine>> {
        let mut line = Vec::with_capacity(128);
        let mut overflow = false;
        // The octet before the LF, which may have arrived in an earlier read or been dropped.
        let mut last = None;
        loop {
            // Replies go out when the client has nothing more in flight: before a read that
            // would wait for it.
            let reading = self.reader.buffer().is_empty();
            if reading {
                self.writer.flush()?;
            }
            let arrived = match self.reader.fill_buf() {
                Ok(bytes) => bytes.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if reading {
                self.received(arrived);
            }
            let available = self.reader.buffer();
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..=end], true),
                None => (available, false),
            };
            let room = limit.saturating_sub(line.len());
            if chunk.len() > room {
                overflow = true;
            }
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let crlf = found
                && match chunk.len() {
                    1 => last == Some(b'\r'),
                    n => chunk[n - 2] == b'\r',
                };
            last = chunk.last().copied();
            let used = chunk.len();
            self.reader.consume(used);
            if found {
                return Ok(Some(RawLine {
                    bytes: line,
                    overflow,
                    crlf,
                }));
            }
        }
    }

    /// Message data after a 354, line by line, up to the `<CRLF>.<CRLF>` that ends it.
    pub fn data(&mut self, size_limit: u64) -> DataLines<'_> {
        DataLines::new(self, size_limit)
    }
}

/// One line as it arrived, cut at its limit.
pub(super) struct RawLine {
    pub(super) bytes: Vec<u8>,
    /// It was longer than the limit; `bytes` holds the start of it.
    pub(super) overflow: bool,
    /// It ended in CRLF (known even when the end was cut off).
    pub(super) crlf: bool,
}

/// True when `line` ends in CRLF and holds no other CR or LF.
pub(super) fn is_one_crlf_line(line: &[u8]) -> bool {
    line.strip_suffix(b"\r\n")
        .is_some_and(|text| !text.iter().any(|&b| b == b'\r' || b == b'\n'))
}
