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
//! and every TLS record are bounded as well.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::header::Lines;

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

/// When the client must have sent what it is sending now, shared by the channel and the socket
/// reader under it (directly or under TLS).
type Clock = Arc<Mutex<Timer>>;

#[derive(Debug, Default)]
struct Timer {
    /// `None`: no limit.
    deadline: Option<Instant>,
    /// The start of the command, or the last data received: what a stress limit counts from.
    since: Option<Instant>,
}

/// How long a read waits at most before it looks at the load again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The daemon's load, and the short time limit while three quarters of its connections are
/// taken (Postfix's `smtpd_timeout` under stress).
#[derive(Debug, Clone)]
pub struct Stress {
    pub load: Arc<Load>,
    pub timeout: Duration,
}

/// Sessions going on now, of at most `max`.
#[derive(Debug)]
pub struct Load {
    pub active: AtomicUsize,
    pub max: usize,
}

impl Load {
    pub fn new(max: usize) -> Load {
        Load {
            active: AtomicUsize::new(0),
            max,
        }
    }

    pub fn stressed(&self) -> bool {
        self.max > 0 && self.active.load(Ordering::SeqCst) * 4 >= self.max * 3
    }
}

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
}

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
        }
    }

    /// True when STARTTLS can run here: there is a socket under the session.
    pub fn can_start_tls(&self) -> bool {
        self.socket.is_some()
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
        self.writer = BufWriter::with_capacity(16 * 1024, Box::new(TlsHalf(stream)));
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

    /// Queues one reply; `text` may hold several lines separated by `\n`, each of which gets the
    /// code, `-` on all but the last.
    pub fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        let mut lines = text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let mark = if lines.peek().is_some() { '-' } else { ' ' };
            write!(self.writer, "{code}{mark}{line}\r\n")?;
        }
        Ok(())
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
    fn read_raw_line(&mut self, limit: usize) -> io::Result<Option<RawLine>> {
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
        DataLines {
            channel: self,
            line: Vec::with_capacity(MAX_TEXT_LINE),
            size: 0,
            size_limit,
            fault: None,
            previous_ended_in_crlf: true,
            done: false,
        }
    }
}

/// The socket under a session: each read waits only for what is left of the deadline (and,
/// under stress, of the short limit).
struct Socket {
    stream: TcpStream,
    clock: Clock,
    stress: Option<Stress>,
}

impl Socket {
    /// How long the next read may wait; an error once the deadline has passed.
    fn wait(&self) -> io::Result<Option<Duration>> {
        let timer = self
            .clock
            .lock()
            .map_err(|_| io::Error::other("clock lock poisoned"))?;
        let Some(mut deadline) = timer.deadline else {
            return Ok(None);
        };
        if let (Some(stress), Some(since)) = (&self.stress, timer.since)
            && stress.load.stressed()
        {
            deadline = deadline.min(since + stress.timeout);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // Under a daemon the load may change while this read waits: look at it again soon.
        let wait = match self.stress {
            Some(_) => left.min(LOOK_AGAIN),
            None => left,
        };
        // A zero time limit would mean none at all.
        Ok(Some(wait.max(Duration::from_millis(1))))
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let wait = self.wait()?;
            self.stream.set_read_timeout(wait)?;
            match self.stream.read(buf) {
                Err(e) if wait.is_some() && is_timeout(&e) => continue,
                other => return other,
            }
        }
    }
}

/// What a socket read that ran out of time returns.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The reading or the writing end of a TLS session. Both share one rustls stream, since TLS
/// state is one for both directions; a session reads and writes from one thread, so the lock is
/// never contended.
struct TlsHalf(Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, Socket>>>);

impl TlsHalf {
    fn stream(
        &self,
    ) -> io::Result<std::sync::MutexGuard<'_, rustls::StreamOwned<rustls::ServerConnection, Socket>>>
    {
        self.0
            .lock()
            .map_err(|_| io::Error::other("TLS stream lock poisoned"))
    }
}

impl Read for TlsHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream()?.read(buf)
    }
}

impl Write for TlsHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream()?.flush()
    }
}

/// One line as it arrived, cut at its limit.
struct RawLine {
    bytes: Vec<u8>,
    /// It was longer than the limit; `bytes` holds the start of it.
    overflow: bool,
    /// It ended in CRLF (known even when the end was cut off).
    crlf: bool,
}

/// True when `line` ends in CRLF and holds no other CR or LF.
fn is_one_crlf_line(line: &[u8]) -> bool {
    line.strip_suffix(b"\r\n")
        .is_some_and(|text| !text.iter().any(|&b| b == b'\r' || b == b'\n'))
}

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

impl DataLines<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel reading `input`, replies into a shared buffer.
    fn channel(input: &[u8]) -> (Channel, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared(Default::default());
        let shared = out.0.clone();
        let chan = Channel::new(
            Box::new(io::Cursor::new(input.to_vec())),
            Box::new(out),
            None,
        );
        (chan, shared)
    }

    fn data_of(input: &[u8], limit: u64) -> (Vec<u8>, Option<DataFault>, Vec<u8>) {
        let (mut chan, _) = channel(input);
        let mut data = chan.data(limit);
        let mut got = Vec::new();
        while let Some(line) = data.next_line().unwrap() {
            got.extend_from_slice(line);
        }
        let fault = data.fault();
        let rest = chan
            .read_command()
            .unwrap()
            .map(|l| l.unwrap())
            .unwrap_or_default();
        (got, fault, rest)
    }

    #[test]
    fn commands_need_crlf() {
        let (mut chan, _) = channel(b"NOOP\r\nNOOP\nNO\rOP\r\nQUIT\r\n");
        assert_eq!(chan.read_command().unwrap(), Some(Ok(b"NOOP".to_vec())));
        assert_eq!(
            chan.read_command().unwrap(),
            Some(Err(LineFault::BareCrOrLf))
        );
        assert_eq!(
            chan.read_command().unwrap(),
            Some(Err(LineFault::BareCrOrLf))
        );
        assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));
        assert_eq!(chan.read_command().unwrap(), None);
    }

    #[test]
    fn an_overlong_command_is_consumed_whole() {
        let mut input = vec![b'A'; 600];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let (mut chan, _) = channel(&input);
        assert_eq!(chan.read_command().unwrap(), Some(Err(LineFault::TooLong)));
        assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));
        let exact = [vec![b'A'; 510], b"\r\n".to_vec()].concat();
        let (mut chan, _) = channel(&exact);
        assert!(matches!(chan.read_command().unwrap(), Some(Ok(_))));
    }

    #[test]
    fn data_is_unstuffed_and_ends_only_at_crlf_dot_crlf() {
        let (got, fault, rest) = data_of(b"a\r\n..b\r\n.\r\nQUIT\r\n", 100);
        assert_eq!(got, b"a\r\n.b\r\n");
        assert_eq!(fault, None);
        assert_eq!(rest, b"QUIT");
        let (got, fault, _) = data_of(b".\r\n", 100);
        assert!(got.is_empty() && fault.is_none());
    }

    #[test]
    fn smuggling_payloads_are_faults_and_do_not_end_the_data() {
        for payload in [
            &b"a\r\n\n.\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
            b"a\r\r.\rMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
            b"a\r\nb\rc\r\n.\r\nQUIT\r\n",
        ] {
            let (_, fault, rest) = data_of(payload, 1000);
            assert_eq!(
                fault,
                Some(DataFault::Line(LineFault::BareCrOrLf)),
                "{payload:?}"
            );
            assert_eq!(rest, b"QUIT", "{payload:?}");
        }
    }

    #[test]
    fn size_and_line_limits() {
        let (_, fault, rest) = data_of(b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n", 15);
        assert_eq!(fault, Some(DataFault::TooBig));
        assert_eq!(rest, b"QUIT");
        let long = [vec![b'x'; 1200], b"\r\n.\r\nQUIT\r\n".to_vec()].concat();
        let (_, fault, rest) = data_of(&long, 10_000);
        assert_eq!(fault, Some(DataFault::Line(LineFault::TooLong)));
        assert_eq!(rest, b"QUIT");
    }

    #[test]
    fn a_close_inside_data_is_an_error() {
        let (mut chan, _) = channel(b"a\r\nb");
        let mut data = chan.data(100);
        assert!(data.next_line().unwrap().is_some());
        assert!(data.next_line().is_err());
    }

    #[test]
    fn replies_are_multiline_and_flushed_before_waiting() {
        let (mut chan, out) = channel(b"");
        chan.reply(250, "a\nb").unwrap();
        assert!(out.lock().unwrap().is_empty());
        assert_eq!(chan.read_command().unwrap(), None);
        assert_eq!(&out.lock().unwrap()[..], b"250-a\r\n250 b\r\n");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{bytes, config, mutated, peak};
    use proptest::prelude::*;

    /// Input that arrives in reads of the given sizes, in turn: a line may be cut anywhere,
    /// between its CR and its LF too.
    struct Trickle {
        input: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.len()).min(self.input.len() - self.at);
            buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn channel(input: &[u8], sizes: &[usize]) -> Channel {
        let reader = Trickle {
            input: input.to_vec(),
            at: 0,
            sizes: sizes.to_vec(),
            turn: 0,
        };
        Channel::new(Box::new(reader), Box::new(io::sink()), None)
    }

    fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1..40usize, 1..8)
    }

    /// Every command line until the end of input, each read holding no more than a line's
    /// worth of memory, and each line as the server promises it: no CR or LF, within limits.
    fn commands(channel: &mut Channel) -> Vec<CommandLine> {
        let mut lines = Vec::new();
        loop {
            let (line, most) = peak(|| channel.read_command().unwrap());
            assert!(
                most <= 2 * MAX_COMMAND_LINE + 64,
                "{most} bytes for one command"
            );
            let Some(line) = line else {
                return lines;
            };
            if let Ok(text) = &line {
                assert!(text.len() <= MAX_COMMAND_LINE - 2);
                assert!(!text.iter().any(|&b| b == b'\r' || b == b'\n'), "{text:?}");
            }
            lines.push(line);
        }
    }

    /// What a DATA phase reads from `input`: the lines given, the fault, and the commands
    /// after it (or `None` when the input ended inside the data).
    type DataOutcome = (Vec<Vec<u8>>, Option<DataFault>, Option<Vec<CommandLine>>);

    fn data(input: &[u8], sizes: &[usize], limit: u64) -> DataOutcome {
        let mut channel = channel(input, sizes);
        let mut data = channel.data(limit);
        let mut lines = Vec::new();
        let ended = loop {
            let (line, most) = peak(|| data.next_line().map(|l| l.map(<[u8]>::to_vec)));
            assert!(
                most <= 2 * MAX_TEXT_LINE + 64,
                "{most} bytes for one data line"
            );
            match line {
                Ok(Some(line)) => {
                    assert!(line.len() <= MAX_TEXT_LINE);
                    assert!(is_one_crlf_line(&line), "{line:?}");
                    lines.push(line);
                }
                Ok(None) => break true,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    break false;
                }
            }
        };
        let fault = data.fault();
        if fault.is_some() {
            assert!(lines.is_empty() || ended);
        }
        let rest = ended.then(|| commands(&mut channel));
        (lines, fault, rest)
    }

    /// Text lines as a client sends them: no CR or LF inside, and at most 998 octets once
    /// dot-stuffed.
    fn text_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let octet = any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b });
        let line = prop_oneof![
            4 => proptest::collection::vec(octet.clone(), 0..80),
            1 => proptest::collection::vec(octet, 900..=997),
            1 => "\\.{1,3}[a-z]{0,3}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(line, 0..30)
    }

    /// RFC 5321 §4.5.2, as the client does it: a dot opening a line is doubled.
    fn stuffed(lines: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for line in lines {
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        wire
    }

    proptest! {
        #![proptest_config(config(3000))]

        #[test]
        fn command_lines_read_whole_however_they_arrive(
            lines in proptest::collection::vec("[ -~]{0,510}", 0..20),
            sizes in read_sizes(),
        ) {
            let wire: Vec<u8> = lines.iter().flat_map(|l| [l.as_bytes(), b"\r\n"].concat()).collect();
            let read = commands(&mut channel(&wire, &sizes));
            let expected: Vec<CommandLine> = lines.into_iter().map(|l| Ok(l.into_bytes())).collect();
            prop_assert_eq!(read, expected);
        }

        #[test]
        fn any_bytes_read_as_the_same_lines_however_they_arrive(
            input in prop_oneof![bytes(2000), mutated(Just(b"EHLO a\r\nMAIL FROM:<x@y>\r\n".to_vec()))],
            sizes in read_sizes(),
        ) {
            let whole = commands(&mut channel(&input, &[usize::MAX]));
            let trickled = commands(&mut channel(&input, &sizes));
            prop_assert_eq!(whole, trickled);
        }

        #[test]
        fn data_comes_back_unstuffed_and_the_session_stays_in_step(
            lines in text_lines(),
            sizes in read_sizes(),
        ) {
            let (read, fault, rest) = data(&stuffed(&lines), &sizes, u64::MAX);
            let expected: Vec<Vec<u8>> = lines.iter().map(|l| [&l[..], b"\r\n"].concat()).collect();
            prop_assert_eq!(read, expected);
            prop_assert_eq!(fault, None);
            prop_assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
        }

        #[test]
        fn data_over_its_size_is_read_to_its_end_and_refused(
            lines in text_lines(),
            limit in 0..2000u64,
        ) {
            let size: u64 = lines.iter().map(|l| l.len() as u64 + 2).sum();
            let (_, fault, rest) = data(&stuffed(&lines), &[usize::MAX], limit);
            prop_assert_eq!(fault, (size > limit).then_some(DataFault::TooBig));
            prop_assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
        }

        #[test]
        fn any_data_reads_the_same_however_it_arrives(
            input in prop_oneof![
                bytes(3000),
                mutated(Just(b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\nQUIT\r\n".to_vec())),
            ],
            sizes in read_sizes(),
        ) {
            let mut input = input;
            input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
            let whole = data(&input, &[usize::MAX], 1 << 20);
            let trickled = data(&input, &sizes, 1 << 20);
            prop_assert_eq!(whole, trickled);
        }
    }

    #[test]
    fn ten_megabyte_lines_are_read_through_in_constant_memory() {
        let mut input = vec![b'x'; 10 << 20];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let mut chan = channel(&input, &[usize::MAX]);
        let (line, most) = peak(|| chan.read_command().unwrap());
        assert_eq!(line, Some(Err(LineFault::TooLong)));
        assert!(most <= 2 * MAX_COMMAND_LINE, "{most}");
        assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));

        input.splice(input.len() - 8.., b"\r\n.\r\nQUIT\r\n".iter().copied());
        let (read, fault, rest) = data(&input, &[usize::MAX], u64::MAX);
        assert!(read.is_empty());
        assert_eq!(fault, Some(DataFault::Line(LineFault::TooLong)));
        assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
    }
}
