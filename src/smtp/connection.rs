//! One blocking SMTP connection over TCP, optionally upgraded to TLS with STARTTLS.
//!
//! Time limits are deadlines: each reply (all its lines), each write of commands, each block of
//! message data and the TLS handshake is one step whose limit starts with its first wait on the
//! socket and is spent, not renewed, by every byte that arrives. A server that trickles a byte
//! every few seconds is cut off when the step's limit is spent.
//!
//! Replies are read whole and checked here: a line of at most 8192 octets, a reply of at most
//! 500 lines, one code throughout, each reply matched to the oldest command still awaiting one.
//! The commands that open a session (greeting, EHLO, STARTTLS) are in `session.rs`, AUTH in
//! `auth.rs`, mail transactions and their data under `transaction.rs`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::capabilities::Capabilities;
use super::command::Command;
use super::error::{SmtpError, TlsErrorKind};
use super::options::{AddressFamily, ConnectOptions, Peer, Timeouts, Transcript};
use super::reply::{Reply, split_line};
use super::tls::{self, TlsInfo};
use crate::route::RelayHost;

/// A reply line longer than this is not SMTP (RFC 5321 allows 512 octets).
const MAX_LINE: usize = 8192;
/// A reply with more lines than this is not SMTP either; the bound keeps memory bounded.
const MAX_REPLY_LINES: usize = 500;
/// Message data is written in blocks of about this size.
pub(super) const DATA_BLOCK: usize = 64 * 1024;

/// One step's time limit. The deadline is fixed at the step's first wait on the socket, so what
/// arrives meanwhile, however little and however often, cannot stretch it.
pub(super) struct Step {
    limit: Duration,
    deadline: Option<Instant>,
}

impl Step {
    pub(super) fn new(limit: Duration) -> Step {
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
pub(super) struct SocketLimits {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// The TCP socket as one step sees it: every read and write waits at most what is left of the
/// step. TLS reads and writes go through it too, so a handshake or a record trickled byte by
/// byte is bounded the same way.
pub(super) struct Timed<'a> {
    pub(super) tcp: &'a TcpStream,
    pub(super) step: &'a mut Step,
    pub(super) limits: &'a mut SocketLimits,
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
    pub(super) tcp: TcpStream,
    /// Our side of TLS: the client's after STARTTLS, or the server's on a connection that
    /// turned around ([`Connection::over`]).
    pub(super) tls: Option<Box<rustls::Connection>>,
    pub(super) tls_info: Option<TlsInfo>,
    pub(super) peer: Peer,
    pub(super) timeouts: Timeouts,
    pub(super) transcript: Transcript,
    pub(super) capabilities: Capabilities,
    pub(super) extended: bool,
    pub(super) received: Vec<u8>,
    pub(super) limits: SocketLimits,
    pub(super) unsent: Vec<u8>,
    /// What each reply still due answers, with how long it may take.
    pub(super) awaited: VecDeque<(&'static str, Duration)>,
    /// At most this many recipients in one mail transaction.
    pub(super) recipient_limit: usize,
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
        Ok(Connection::over(tcp, None, peer, options))
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
            // The reply comes once the chunk's data is in, and after LAST once it is stored.
            Command::Bdat { .. } => self.timeouts.data_end,
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

    /// Keeps the write buffer's allocation for the next message.
    pub(super) fn recycle(&mut self, mut written: Vec<u8>) {
        if self.unsent.is_empty() && written.capacity() <= 2 * DATA_BLOCK {
            written.clear();
            self.unsent = written;
        }
    }

    /// Writes `bytes` as one step: however the kernel takes them, all within `limit`.
    pub(super) fn write_all(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        let mut step = Step::new(limit);
        let mut timed = Timed {
            tcp: &self.tcp,
            step: &mut step,
            limits: &mut self.limits,
        };
        match self.tls.as_deref_mut() {
            Some(rustls::Connection::Client(tls)) => {
                let mut stream = rustls::Stream::new(tls, &mut timed);
                stream.write_all(bytes)?;
                stream.flush()
            }
            Some(rustls::Connection::Server(tls)) => {
                let mut stream = rustls::Stream::new(tls, &mut timed);
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
            let read = match self.tls.as_deref_mut() {
                Some(rustls::Connection::Client(tls)) => {
                    rustls::Stream::new(tls, &mut timed).read(&mut chunk)
                }
                Some(rustls::Connection::Server(tls)) => {
                    rustls::Stream::new(tls, &mut timed).read(&mut chunk)
                }
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

    pub(super) fn failure(&self, err: io::Error, during: &str) -> SmtpError {
        let peer = self.peer.to_string();
        let during = during.to_string();
        if let Some(tls_err) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return SmtpError::Tls {
                peer,
                kind: tls::kind(tls_err),
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

    pub(super) fn rejected(&self, context: &str, reply: Reply) -> SmtpError {
        SmtpError::Rejected {
            peer: self.peer.to_string(),
            context: context.to_string(),
            reply,
        }
    }

    pub(super) fn protocol(&self, detail: &str) -> SmtpError {
        SmtpError::Protocol {
            peer: self.peer.to_string(),
            detail: detail.to_string(),
        }
    }

    pub(super) fn tls_error(&self, kind: TlsErrorKind, detail: String) -> SmtpError {
        SmtpError::Tls {
            peer: self.peer.to_string(),
            kind,
            detail,
        }
    }
}

#[cfg(test)]
mod tests;
