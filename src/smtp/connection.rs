//! One blocking SMTP connection over TCP, optionally upgraded to TLS with STARTTLS.
//!
//! Time limits are deadlines: each reply (all its lines), each write of commands, each block of
//! message data and the TLS handshake is one step whose limit starts with its first wait on the
//! socket and is spent, not renewed, by every byte that arrives. A server that trickles a byte
//! every few seconds is cut off when the step's limit is spent.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::capabilities::Capabilities;
use super::command::{AuthMechanism, Command};
use super::error::SmtpError;
use super::reply::{Reply, printable, split_line};
use super::tls::{self, TlsClient, TlsInfo};
use super::transaction::{RECIPIENT_LIMIT, Sent};
use crate::address::Domain;
use crate::route::RelayHost;

/// Waiting for a TCP connection; RFC 5321 sets none, this is Postfix's `smtp_connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 §4.5.3.2.1: the 220 greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.2–3: MAIL, RCPT and the other commands.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.4: the 354 after DATA.
pub const DATA_START_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// RFC 5321 §4.5.3.2.5: each block of message data.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the reply to the final dot.
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A reply line longer than this is not SMTP (RFC 5321 allows 512 octets).
const MAX_LINE: usize = 8192;
/// A reply with more lines than this is not SMTP either; the bound keeps memory bounded.
const MAX_REPLY_LINES: usize = 500;
/// Message data is written in blocks of about this size.
const DATA_BLOCK: usize = 64 * 1024;

/// How long each step may take: a reply with all its lines, a write, the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    pub data_start: Duration,
    pub data_block: Duration,
    pub data_end: Duration,
}

impl Timeouts {
    /// The same limit for every step, as a command-line `--timeout` gives it.
    pub fn uniform(limit: Duration) -> Timeouts {
        Timeouts {
            connect: limit,
            greeting: limit,
            command: limit,
            data_start: limit,
            data_block: limit,
            data_end: limit,
        }
    }
}

impl Default for Timeouts {
    /// The RFC 5321 values.
    fn default() -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            greeting: GREETING_TIMEOUT,
            command: COMMAND_TIMEOUT,
            data_start: DATA_START_TIMEOUT,
            data_block: DATA_BLOCK_TIMEOUT,
            data_end: DATA_END_TIMEOUT,
        }
    }
}

/// Which address families a host name may resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    #[default]
    Any,
    V4,
    V6,
}

impl AddressFamily {
    fn admits(self, ip: IpAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::V4 => ip.is_ipv4(),
            AddressFamily::V6 => ip.is_ipv6(),
        }
    }
}

/// Where the conversation is shown: nowhere, on stderr (`-v`), or kept for the caller. Lines the
/// client sends start with `>>> `, server lines appear as received, the client's own remarks
/// start with `*** `. Authentication secrets never appear.
#[derive(Debug, Clone, Default)]
pub enum Transcript {
    #[default]
    Off,
    Stderr,
    Capture(Arc<Mutex<Vec<String>>>),
}

impl Transcript {
    fn sent(&self, line: &str) {
        self.emit(format!(">>> {line}"));
    }

    /// A server line, made printable as every reply is: a transcript goes to a terminal.
    fn received(&self, line: &str) {
        if !matches!(self, Transcript::Off) {
            self.emit(printable(line).into_owned());
        }
    }

    pub fn note(&self, text: &str) {
        self.emit(format!("*** {text}"));
    }

    fn emit(&self, line: String) {
        match self {
            Transcript::Off => {}
            Transcript::Stderr => eprintln!("{line}"),
            Transcript::Capture(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        }
    }
}

/// How to reach a server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub timeouts: Timeouts,
    pub family: AddressFamily,
    pub transcript: Transcript,
}

/// The server as mail logs name it: `name[ip]:port`, or `[ip]:port` when we had no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: Option<String>,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}]:{}",
            self.name.as_deref().unwrap_or_default(),
            self.addr.ip(),
            self.addr.port()
        )
    }
}

/// A user name and password for AUTH. `Debug` does not show the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: **** }}", self.user)
    }
}

/// One step's time limit. The deadline is fixed at the step's first wait on the socket, so what
/// arrives meanwhile, however little and however often, cannot stretch it.
struct Step {
    limit: Duration,
    deadline: Option<Instant>,
}

impl Step {
    fn new(limit: Duration) -> Step {
        Step {
            limit,
            deadline: None,
        }
    }

    /// How long the next wait may last; an error once the limit is spent.
    fn remaining(&mut self) -> io::Result<Duration> {
        let Some(deadline) = self.deadline else {
            self.deadline = Some(Instant::now() + self.limit);
            return Ok(self.limit);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the step's time limit is spent",
            ));
        }
        Ok(left)
    }
}

/// The socket's read and write time limits as last set. A step's first wait asks for the step's
/// whole limit, which is usually what is set already: replies to pipelined commands mostly
/// arrive together, and setting the limit for each would cost a bulk delivery several system
/// calls per message.
#[derive(Default)]
struct SocketLimits {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// The TCP socket as one step sees it: every read and write waits at most what is left of the
/// step. TLS reads and writes go through it too, so a handshake or a record trickled byte by
/// byte is bounded the same way.
struct Timed<'a> {
    tcp: &'a TcpStream,
    step: &'a mut Step,
    limits: &'a mut SocketLimits,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = self.step.remaining()?;
        if self.limits.read != Some(wait) {
            self.tcp.set_read_timeout(Some(wait))?;
            self.limits.read = Some(wait);
        }
        let mut tcp = self.tcp;
        tcp.read(buf)
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wait = self.step.remaining()?;
        if self.limits.write != Some(wait) {
            self.tcp.set_write_timeout(Some(wait))?;
            self.limits.write = Some(wait);
        }
        let mut tcp = self.tcp;
        tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An open SMTP connection.
pub struct Connection {
    tcp: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    tls_info: Option<TlsInfo>,
    peer: Peer,
    timeouts: Timeouts,
    transcript: Transcript,
    capabilities: Capabilities,
    extended: bool,
    received: Vec<u8>,
    limits: SocketLimits,
    unsent: Vec<u8>,
    /// What each reply still due answers, with how long it may take.
    awaited: VecDeque<(&'static str, Duration)>,
    /// At most this many recipients in one mail transaction.
    recipient_limit: usize,
}

/// Resolves `host` to the addresses to try, in the resolver's order.
pub fn resolve(
    host: &RelayHost,
    port: u16,
    family: AddressFamily,
) -> Result<Vec<SocketAddr>, SmtpError> {
    let (label, found) = match host {
        RelayHost::Ip(ip) => (ip.to_string(), vec![SocketAddr::new(*ip, port)]),
        RelayHost::Name(name) => {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| SmtpError::NoHost {
                    host: name.to_string(),
                    detail: e
                        .to_string()
                        .trim_start_matches("failed to lookup address information: ")
                        .to_string(),
                })?;
            (name.to_string(), found.collect())
        }
    };
    let admitted: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| family.admits(addr.ip()))
        .collect();
    if admitted.is_empty() {
        let wanted = match family {
            AddressFamily::V6 => "IPv6 address",
            AddressFamily::V4 => "IPv4 address",
            AddressFamily::Any => "address",
        };
        return Err(SmtpError::NoHost {
            host: label,
            detail: format!("no {wanted}"),
        });
    }
    Ok(admitted)
}

impl Connection {
    /// Resolves `host` and connects to its addresses in turn until one answers. The greeting is
    /// not read yet: call [`Connection::greeting`] next.
    pub fn connect(
        host: &RelayHost,
        port: u16,
        options: &ConnectOptions,
    ) -> Result<Connection, SmtpError> {
        let name = match host {
            RelayHost::Name(name) => Some(name.to_string()),
            RelayHost::Ip(_) => None,
        };
        let mut last = None;
        for addr in resolve(host, port, options.family)? {
            match Connection::open(addr, name.clone(), options) {
                Ok(connection) => return Ok(connection),
                Err(err) => {
                    options.transcript.note(&err.to_string());
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| SmtpError::NoHost {
            host: host.to_string(),
            detail: "no address".to_string(),
        }))
    }

    /// Connects to one address. `name` is the host name the address belongs to, when known: it
    /// labels errors and is the name the TLS certificate must carry.
    pub fn open(
        addr: SocketAddr,
        name: Option<String>,
        options: &ConnectOptions,
    ) -> Result<Connection, SmtpError> {
        let peer = Peer { name, addr };
        options.transcript.note(&format!("connecting to {peer}"));
        let tcp =
            TcpStream::connect_timeout(&addr, options.timeouts.connect).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SmtpError::Timeout {
                        peer: peer.to_string(),
                        during: "connecting".to_string(),
                    },
                    _ => SmtpError::Connect {
                        peer: peer.to_string(),
                        error: e,
                    },
                }
            })?;
        // Pipelined commands are gathered into one write by this client already.
        tcp.set_nodelay(true).ok();
        Ok(Connection {
            tcp,
            tls: None,
            tls_info: None,
            peer,
            timeouts: options.timeouts,
            transcript: options.transcript.clone(),
            capabilities: Capabilities::default(),
            extended: false,
            received: Vec::new(),
            limits: SocketLimits::default(),
            unsent: Vec::new(),
            awaited: VecDeque::from([("the greeting", options.timeouts.greeting)]),
            recipient_limit: RECIPIENT_LIMIT,
        })
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The extensions of the last EHLO reply (none after HELO or before any EHLO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// True when the server accepted EHLO, false after a HELO fallback.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// The handshake's outcome once STARTTLS has succeeded.
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls_info.as_ref()
    }

    /// Sends at most `limit` recipients in one mail transaction (at least one); a message with
    /// more goes in several transactions on this connection.
    pub fn limit_recipients(&mut self, limit: usize) {
        self.recipient_limit = limit.max(1);
    }

    pub(super) fn recipient_limit(&self) -> usize {
        self.recipient_limit
    }

    /// Adds a remark of the client's to the transcript.
    pub fn note(&self, text: &str) {
        self.transcript.note(text);
    }

    /// Reads the greeting. A 4xx or 5xx greeting is an error carrying the server's reply.
    pub fn greeting(&mut self) -> Result<Reply, SmtpError> {
        let reply = self.read_reply()?;
        if !reply.is_positive() {
            return Err(self.rejected("greeting", reply));
        }
        Ok(reply)
    }

    /// Says EHLO, and HELO when the server refuses EHLO with a 5xx (RFC 5321 §3.2). Returns the
    /// positive reply; the extensions are in [`Connection::capabilities`].
    pub fn hello(&mut self, name: &Domain) -> Result<Reply, SmtpError> {
        let reply = self.command(&Command::Ehlo(name.clone()))?;
        if reply.is_positive() {
            self.capabilities = Capabilities::from_ehlo(&reply);
            self.extended = true;
            return Ok(reply);
        }
        if !reply.is_permanent() {
            return Err(self.rejected("EHLO", reply));
        }
        self.note(&format!(
            "server refused EHLO ({}); trying HELO",
            reply.code
        ));
        let reply = self.command(&Command::Helo(name.clone()))?;
        if !reply.is_positive() {
            return Err(self.rejected("HELO", reply));
        }
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(reply)
    }

    /// Sends STARTTLS and performs the handshake. The server forgets the session's state, so the
    /// caller says [`Connection::hello`] again next (RFC 3207 §4.2).
    pub fn starttls(&mut self, client: &TlsClient) -> Result<&TlsInfo, SmtpError> {
        let reply = self.command(&Command::StartTls)?;
        if !reply.is_positive() {
            return Err(self.rejected("STARTTLS", reply));
        }
        // Anything already received was sent in clear but would be read as if protected: the
        // STARTTLS command injection attack (CVE-2011-0411 and kin).
        if !self.received.is_empty() {
            return Err(self.protocol("server sent data before the TLS handshake"));
        }
        let verdict = Arc::new(Mutex::new(None));
        let config = client
            .config(verdict.clone())
            .map_err(|detail| self.tls_error(detail))?;
        let name = tls::server_name(self.peer.name.as_deref(), self.peer.addr.ip());
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| self.tls_error(e.to_string()))?;
        // The whole handshake, every turn of reads and writes, is one step.
        let mut step = Step::new(self.timeouts.command);
        let mut timed = Timed {
            tcp: &self.tcp,
            step: &mut step,
            limits: &mut self.limits,
        };
        let mut handshake = Ok(());
        while handshake.is_ok() && conn.is_handshaking() {
            handshake = conn.complete_io(&mut timed).map(|_| ());
        }
        handshake.map_err(|e| self.failure(e, "during the TLS handshake"))?;
        let (protocol, cipher_suite) = tls::negotiated(&conn);
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| tls::certificate_info(der));
        let verified = verdict
            .lock()
            .ok()
            .and_then(|mut v| v.take())
            .unwrap_or_else(|| Err("no certificate was checked".to_string()));
        self.note(&format!(
            "TLS established: {protocol} {cipher_suite}, certificate {}",
            match &verified {
                Ok(()) => "trusted".to_string(),
                Err(reason) => format!("NOT trusted: {reason}"),
            }
        ));
        self.tls = Some(Box::new(conn));
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(self.tls_info.insert(TlsInfo {
            protocol,
            cipher_suite,
            verified,
            certificate,
        }))
    }

    /// Authenticates with PLAIN when offered, else LOGIN. Credentials are sent as the server asks,
    /// whether or not the connection is encrypted: callers decide whether that is acceptable.
    pub fn authenticate(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        let mechanism = if self.capabilities.offers_auth(AuthMechanism::Plain) {
            AuthMechanism::Plain
        } else if self.capabilities.offers_auth(AuthMechanism::Login) {
            AuthMechanism::Login
        } else {
            let offered = self.capabilities.auth_mechanisms();
            return Err(SmtpError::NotOffered {
                peer: self.peer.to_string(),
                detail: if offered.is_empty() {
                    "server offers no AUTH".to_string()
                } else {
                    format!(
                        "server offers AUTH {} but this client speaks only PLAIN and LOGIN",
                        offered.join(" ")
                    )
                },
            });
        };
        let reply = match mechanism {
            AuthMechanism::Plain => {
                let token = format!("\0{}\0{}", credentials.user, credentials.password);
                let reply = self.command(&Command::Auth {
                    mechanism,
                    initial_response: Some(BASE64.encode(&token)),
                })?;
                if reply.is_intermediate() {
                    self.command(&Command::AuthResponse(BASE64.encode(&token)))?
                } else {
                    reply
                }
            }
            AuthMechanism::Login => {
                let mut reply = self.command(&Command::Auth {
                    mechanism,
                    initial_response: None,
                })?;
                for answer in [&credentials.user, &credentials.password] {
                    if !reply.is_intermediate() {
                        break;
                    }
                    reply = self.command(&Command::AuthResponse(BASE64.encode(answer)))?;
                }
                reply
            }
        };
        if !reply.is_positive() {
            return Err(SmtpError::AuthFailed {
                peer: self.peer.to_string(),
                reply,
            });
        }
        Ok(reply)
    }

    /// Sends one command and reads its reply, whatever the code.
    pub fn command(&mut self, command: &Command) -> Result<Reply, SmtpError> {
        self.send(command)?;
        self.flush()?;
        self.read_reply()
    }

    /// Queues a command for sending without waiting for its reply: with PIPELINING several
    /// commands go out in one write at the next [`Connection::flush`], and their replies are read
    /// in order with [`Connection::read_reply`].
    pub fn send(&mut self, command: &Command) -> Result<(), SmtpError> {
        let wire = command.to_string();
        if wire.contains(['\r', '\n']) {
            return Err(self.protocol(&format!(
                "refusing to send a command containing a line break: {}",
                command.redacted()
            )));
        }
        self.transcript.sent(&command.redacted());
        self.unsent.extend_from_slice(wire.as_bytes());
        self.unsent.extend_from_slice(b"\r\n");
        let wait = match command {
            Command::Data => self.timeouts.data_start,
            _ => self.timeouts.command,
        };
        self.awaited.push_back((command.verb(), wait));
        Ok(())
    }

    /// Writes everything queued by [`Connection::send`].
    pub fn flush(&mut self) -> Result<(), SmtpError> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let during = match self.awaited.back() {
            Some((verb, _)) => format!("sending {verb}"),
            None => "sending".to_string(),
        };
        let unsent = std::mem::take(&mut self.unsent);
        let written = self.write_all(&unsent, self.timeouts.command);
        self.recycle(unsent);
        written.map_err(|e| self.failure(e, &during))
    }

    /// Reads the next reply, whatever the code: the one to the oldest command not yet answered.
    pub fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let (what, wait) = self
            .awaited
            .pop_front()
            .unwrap_or(("a reply", self.timeouts.command));
        let during = if what.starts_with(char::is_uppercase) {
            format!("waiting for the reply to {what}")
        } else {
            format!("waiting for {what}")
        };
        // One deadline for the whole reply, however many lines and reads it takes.
        let mut step = Step::new(wait);
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(&during, &mut step)?;
            self.transcript.received(&line);
            let (_, continued, _) = split_line(&line).map_err(|e| self.protocol(&e))?;
            lines.push(line);
            if !continued {
                break;
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(self.protocol("reply has too many lines"));
            }
        }
        Reply::from_lines(&lines).map_err(|e| self.protocol(&e))
    }

    /// Sends RSET and reads its reply.
    pub fn reset(&mut self) -> Result<Reply, SmtpError> {
        self.command(&Command::Rset)
    }

    /// Says QUIT and closes the connection. The server's answer no longer matters, so failures
    /// here are not reported.
    pub fn quit(mut self) {
        if self.send(&Command::Quit).is_ok() && self.flush().is_ok() {
            let _ = self.read_reply();
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let mut step = Step::new(self.timeouts.command);
            let mut timed = Timed {
                tcp: &self.tcp,
                step: &mut step,
                limits: &mut self.limits,
            };
            let _ = tls.complete_io(&mut timed);
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

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

    /// Keeps the write buffer's allocation for the next message.
    fn recycle(&mut self, mut written: Vec<u8>) {
        if self.unsent.is_empty() && written.capacity() <= 2 * DATA_BLOCK {
            written.clear();
            self.unsent = written;
        }
    }

    /// Queues the dot that ends message data; its reply may take the longest of all.
    pub(super) fn queue_dot(&mut self) {
        self.transcript.sent(".");
        self.unsent.extend_from_slice(b".\r\n");
        self.awaited
            .push_back(("the end of message data", self.timeouts.data_end));
    }

    /// Writes `bytes` as one step: however the kernel takes them, all within `limit`.
    fn write_all(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        let mut step = Step::new(limit);
        let mut timed = Timed {
            tcp: &self.tcp,
            step: &mut step,
            limits: &mut self.limits,
        };
        match self.tls.as_mut() {
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls.as_mut(), &mut timed);
                stream.write_all(bytes)?;
                stream.flush()
            }
            None => timed.write_all(bytes),
        }
    }

    /// The next line of a reply, read within what is left of `step`; lines already received
    /// cost no system call at all. The line is as received (a bare CR or any other control
    /// character included): [`Reply::from_lines`] checks its syntax and makes its text printable.
    fn read_line(&mut self, during: &str, step: &mut Step) -> Result<String, SmtpError> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.received) {
                let raw: Vec<u8> = self.received.drain(..=end).collect();
                let line = raw
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .unwrap_or(&raw);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.received.len() > MAX_LINE {
                return Err(self.protocol("reply line too long"));
            }
            let mut chunk = [0u8; 4096];
            let mut timed = Timed {
                tcp: &self.tcp,
                step,
                limits: &mut self.limits,
            };
            // A TLS read may write too (a pending record), within the same step.
            let read = match self.tls.as_mut() {
                Some(tls) => rustls::Stream::new(tls.as_mut(), &mut timed).read(&mut chunk),
                None => timed.read(&mut chunk),
            };
            match read {
                Ok(0) => {
                    return Err(SmtpError::Closed {
                        peer: self.peer.to_string(),
                        during: during.to_string(),
                    });
                }
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failure(e, during)),
            }
        }
    }

    fn failure(&self, err: io::Error, during: &str) -> SmtpError {
        let peer = self.peer.to_string();
        let during = during.to_string();
        if let Some(tls_err) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return SmtpError::Tls {
                peer,
                detail: tls::describe(tls_err),
            };
        }
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                SmtpError::Timeout { peer, during }
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => SmtpError::Closed { peer, during },
            _ => SmtpError::Io {
                peer,
                during,
                error: err,
            },
        }
    }

    /// A reply with a code that has no place after `command`.
    pub(super) fn unexpected(&self, command: &'static str, reply: Reply) -> SmtpError {
        SmtpError::Unexpected {
            peer: self.peer.to_string(),
            command,
            reply,
        }
    }

    fn rejected(&self, context: &str, reply: Reply) -> SmtpError {
        SmtpError::Rejected {
            peer: self.peer.to_string(),
            context: context.to_string(),
            reply,
        }
    }

    fn protocol(&self, detail: &str) -> SmtpError {
        SmtpError::Protocol {
            peer: self.peer.to_string(),
            detail: detail.to_string(),
        }
    }

    fn tls_error(&self, detail: String) -> SmtpError {
        SmtpError::Tls {
            peer: self.peer.to_string(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::test_server::{Step, domain, options, server};

    #[test]
    fn a_trickled_reply_is_cut_off_when_its_limit_is_spent() {
        // One byte every 100 ms: each read gets something long before the 700 ms limit, which a
        // limit per read would renew until the whole greeting had arrived, four seconds later.
        let (addr, server) = server(
            "",
            vec![Step::Trickle(
                0,
                "220-sink.example ESMTP\r\n220 trickling along\r\n",
                Duration::from_millis(100),
            )],
        );
        let opts = ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_millis(700)),
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        let err = conn.greeting().unwrap_err();
        assert!(
            matches!(&err, SmtpError::Timeout { during, .. } if during == "waiting for the greeting"),
            "{err}"
        );
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(seen, ["-- cut off"]);
    }

    #[test]
    fn a_reply_in_pieces_within_its_limit_is_read_whole() {
        let (addr, server) = server(
            "",
            vec![
                Step::Trickle(
                    0,
                    "220-sink.example\r\n220 ready\r\n",
                    Duration::from_millis(5),
                ),
                Step::Lines(1, "250 sink.example\r\n"),
            ],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        let greeting = conn.greeting().unwrap();
        assert_eq!(greeting.to_string(), "220 sink.example ready");
        conn.hello(&domain("client.example")).unwrap();
        drop(conn);
        server.join().unwrap();
    }

    #[test]
    fn a_trickled_tls_handshake_is_one_step() {
        // The server says 220 to STARTTLS, then sends its handshake a byte at a time.
        let (addr, server) = server(
            "220 sink\r\n",
            vec![
                Step::Lines(1, "250-sink\r\n250 STARTTLS\r\n"),
                Step::Trickle(1, "220 go ahead\r\n", Duration::ZERO),
                // A record header announcing 64 bytes, and 60 of them: a limit per read would
                // wait the whole six seconds, then 700 ms more.
                Step::Trickle(0, HANDSHAKE_TRICKLE, Duration::from_millis(100)),
            ],
        );
        let opts = ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_millis(700)),
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let err = conn
            .starttls(&TlsClient::new(crate::smtp::Verification::Insecure))
            .unwrap_err();
        assert!(
            matches!(&err, SmtpError::Timeout { during, .. } if during == "during the TLS handshake"),
            "{err}"
        );
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(
            seen.last().map(String::as_str),
            Some("-- cut off"),
            "{seen:?}"
        );
    }

    const HANDSHAKE_TRICKLE: &str = concat!(
        "\u{16}\u{3}\u{3}\u{0}\u{40}",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    );

    #[test]
    fn the_transcript_shows_server_lines_printable() {
        let (addr, server) = server("220 \u{1b}]0;owned\u{7} hello\r\n", vec![]);
        let captured = Arc::new(Mutex::new(Vec::new()));
        let mut conn =
            Connection::open(addr, None, &options(Transcript::Capture(captured.clone()))).unwrap();
        let greeting = conn.greeting().unwrap();
        assert_eq!(greeting.to_string(), "220 ?]0;owned? hello");
        drop(conn);
        server.join().unwrap();
        let transcript = captured.lock().unwrap().join("\n");
        assert!(transcript.contains("220 ?]0;owned? hello"), "{transcript}");
        assert!(!transcript.contains('\u{1b}'), "{transcript:?}");
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let (addr, server) = server(
            "220 old\r\n",
            vec![
                Step::Lines(1, "502 5.5.1 EHLO not implemented\r\n"),
                Step::Lines(1, "250 old.example\r\n"),
            ],
        );
        let captured = Arc::new(Mutex::new(Vec::new()));
        let mut conn =
            Connection::open(addr, None, &options(Transcript::Capture(captured.clone()))).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        assert!(!conn.is_extended());
        assert!(!conn.capabilities().etrn());
        drop(conn);
        assert_eq!(server.join().unwrap()[1], "HELO client.example\r\n");
        let transcript = captured.lock().unwrap().join("\n");
        assert!(
            transcript.contains(">>> EHLO client.example"),
            "{transcript}"
        );
        assert!(transcript.contains("trying HELO"), "{transcript}");
    }

    #[test]
    fn data_before_the_handshake_is_refused() {
        let (addr, _server) = server(
            "220 evil\r\n",
            vec![Step::Lines(1, "220 go ahead\r\n250 injected\r\n")],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        conn.greeting().unwrap();
        let err = conn
            .starttls(&TlsClient::new(crate::smtp::Verification::Insecure))
            .unwrap_err();
        assert!(matches!(err, SmtpError::Protocol { .. }), "{err}");
    }

    #[test]
    fn a_negative_greeting_is_an_error_with_the_reply() {
        let (addr, _server) = server("421 4.3.2 too busy\r\n", vec![]);
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        let err = conn.greeting().unwrap_err();
        assert_eq!(err.reply().unwrap().to_string(), "421 4.3.2 too busy");
        assert!(err.is_transient());
    }

    #[test]
    fn a_closed_connection_says_what_was_awaited() {
        let (addr, _server) = server("220-first line\r\n", vec![]);
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        let err = conn.greeting().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("lost connection waiting for the greeting"),
            "{err}"
        );
    }

    #[test]
    fn resolving_an_address_literal_needs_no_resolver() {
        let host = RelayHost::Ip("::1".parse().unwrap());
        assert_eq!(resolve(&host, 25, AddressFamily::Any).unwrap().len(), 1);
        let err = resolve(&host, 25, AddressFamily::V4).unwrap_err();
        assert!(matches!(err, SmtpError::NoHost { .. }));
    }
}
