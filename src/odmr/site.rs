//! The site's SMTP server on the turned-around connection: the provider sends the held mail,
//! each message is spooled, handed off, and only then answered.
//!
//! The connection's socket and TLS session come from the client that said ATRN
//! ([`Connection::into_parts`]); commands and data are read by the SMTP server's own
//! [`Channel`] and parser, so the same strict line rules apply (only CRLF ends a line, only
//! `<CRLF>.<CRLF>` ends the data). The message is spooled to an unlinked temporary file, so
//! memory stays bounded and nothing is left behind.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use crate::address::{Address, ReversePath};
use crate::header::Lines;
use crate::smtp::{Connection, Reply};
use crate::smtpd::request::{self, ForwardPath, Request};
use crate::smtpd::wire::{Channel, LineFault};

use super::handoff::Verdict;
use super::{FetchError, Request as FetchRequest};

/// Recipients taken per message; the provider sends the others in another transaction.
const MAX_RECIPIENTS: usize = crate::smtpd::MAX_RECIPIENTS;
/// Refused commands after which the site hangs up on a provider that makes no sense.
const MAX_ERRORS: u32 = crate::smtpd::MAX_ERRORS;

/// What the turnaround brought.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Messages handed off and acknowledged with 250.
    pub delivered: usize,
    /// Messages answered 451 (left with the provider) or 550.
    pub deferred: usize,
    pub refused: usize,
    /// The provider ended with QUIT (not a lost connection).
    pub complete: bool,
}

/// Serves the provider until QUIT or the end of the connection.
pub fn serve(connection: Connection, request: &FetchRequest) -> Result<Taken, FetchError> {
    let peer = connection.peer().to_string();
    let failed = |detail: String| FetchError::Turnaround {
        peer: peer.clone(),
        detail,
    };
    let (tcp, tls, early) = connection.into_parts();
    if !early.is_empty() {
        return Err(failed(
            "the provider sent data before the site's greeting".into(),
        ));
    }
    let mut channel = channel(tcp, tls).map_err(|e| failed(e.to_string()))?;
    let transcript = &request.connect.transcript;
    let mut taken = Taken::default();
    let greeting = format!("{} ESMTP odmr-fetch", request.helo);
    channel
        .reply(&Reply::new(220, greeting))
        .map_err(|e| failed(e.to_string()))?;
    let mut envelope: Option<(ReversePath, Vec<Address>)> = None;
    let mut errors = 0;
    loop {
        let line = match channel.read_command() {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(taken),
            Err(e) => {
                transcript.note(&format!("turnaround ended: {e}"));
                return Ok(taken);
            }
        };
        let reply = match line {
            Err(LineFault::TooLong) => Reply::new(500, "5.5.2 Error: command line too long"),
            Err(LineFault::BareCrOrLf) => Reply::new(500, "5.5.2 Error: bare <CR> or <LF>"),
            Ok(bytes) => {
                transcript.received(&String::from_utf8_lossy(&bytes));
                match request::parse(&bytes) {
                    Err(refusal) => refusal,
                    Ok(Request::Ehlo(_)) => {
                        envelope = None;
                        Reply::new(
                            250,
                            format!(
                                "{}\nPIPELINING\n8BITMIME\nSIZE {}\nENHANCEDSTATUSCODES",
                                request.helo, request.max_message_size
                            ),
                        )
                    }
                    Ok(Request::Helo(_)) | Ok(Request::Rset) => {
                        envelope = None;
                        Reply::new(250, format!("2.0.0 {}", request.helo))
                    }
                    Ok(Request::Noop) => Reply::new(250, "2.0.0 Ok"),
                    Ok(Request::Mail { from, .. }) => match envelope {
                        Some(_) => Reply::new(503, "5.5.1 Error: nested MAIL command"),
                        None => {
                            envelope = Some((from, Vec::new()));
                            Reply::new(250, "2.1.0 Ok")
                        }
                    },
                    Ok(Request::Rcpt(to)) => match envelope.as_mut() {
                        None => Reply::new(503, "5.5.1 Error: need MAIL command"),
                        Some((_, recipients)) if recipients.len() >= MAX_RECIPIENTS => {
                            Reply::new(452, "4.5.3 Error: too many recipients")
                        }
                        Some((_, recipients)) => {
                            let to = match to {
                                ForwardPath::Mailbox(to) => to,
                                ForwardPath::Postmaster => Address::postmaster(&request.helo),
                            };
                            recipients.push(to);
                            Reply::new(250, "2.1.5 Ok")
                        }
                    },
                    Ok(Request::Data) => match envelope.take() {
                        Some((from, recipients)) if !recipients.is_empty() => {
                            let verdict = receive(&mut channel, request, &from, &recipients)
                                .map_err(|e| failed(e.to_string()));
                            let verdict = match verdict {
                                Ok(verdict) => verdict,
                                Err(e) => {
                                    transcript.note(&e.to_string());
                                    return Ok(taken);
                                }
                            };
                            match &verdict {
                                Verdict::Delivered => taken.delivered += 1,
                                Verdict::Deferred(_) => taken.deferred += 1,
                                Verdict::Refused(_) => taken.refused += 1,
                            }
                            verdict.reply()
                        }
                        _ => Reply::new(503, "5.5.1 Error: need RCPT command"),
                    },
                    Ok(Request::Quit) => {
                        taken.complete = true;
                        let bye = Reply::new(221, "2.0.0 Bye");
                        let _ = channel.reply(&bye).and_then(|()| channel.flush());
                        return Ok(taken);
                    }
                    Ok(_) => Reply::new(502, "5.5.1 Error: command not implemented"),
                }
            }
        };
        transcript.sent(&reply.to_string());
        if let Err(e) = channel.reply(&reply) {
            transcript.note(&format!("turnaround ended: {e}"));
            return Ok(taken);
        }
        if reply.is_permanent() && reply.code.value() != 550 {
            errors += 1;
            if errors >= MAX_ERRORS {
                transcript.note("too many refused commands; hanging up");
                let _ = channel.flush();
                return Ok(taken);
            }
        }
    }
}

/// Says 354, spools the data, hands the message off; the verdict for its final dot.
fn receive(
    channel: &mut Channel,
    request: &FetchRequest,
    from: &ReversePath,
    recipients: &[Address],
) -> io::Result<Verdict> {
    channel.reply(&Reply::new(354, "End data with <CR><LF>.<CR><LF>"))?;
    let mut spool = spool_file()?;
    let mut lines = channel.data(request.max_message_size);
    let mut written = io::BufWriter::new(&mut spool);
    while let Some(line) = lines.next_line()? {
        written.write_all(line)?;
    }
    written.flush()?;
    drop(written);
    if let Some(fault) = lines.fault() {
        return Ok(Verdict::Refused(format!("message data refused: {fault:?}")));
    }
    spool.rewind()?;
    let size = spool.metadata()?.len();
    Ok(request
        .handoff
        .hand_off(from, recipients, BufReader::new(spool), size, request))
}

/// An unlinked file in the temporary directory: nothing is left behind, whatever happens.
fn spool_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    for _ in 0..16 {
        let path = dir.join(format!("odmr-fetch.{}", fastrand::u64(..)));
        match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot make a spool file"))
}

/// A server channel over the socket and, when it runs, the client side of TLS.
fn channel(tcp: TcpStream, tls: Option<rustls::Connection>) -> io::Result<Channel> {
    tcp.set_read_timeout(Some(crate::smtpd::COMMAND_TIMEOUT))?;
    tcp.set_write_timeout(Some(crate::smtpd::COMMAND_TIMEOUT))?;
    Ok(match tls {
        None => Channel::new(Box::new(tcp.try_clone()?), Box::new(tcp), None),
        Some(tls) => {
            let stream = Arc::new(Mutex::new(Tls { tls, tcp }));
            Channel::new(
                Box::new(Half(Arc::clone(&stream))),
                Box::new(Half(stream)),
                None,
            )
        }
    })
}

struct Tls {
    tls: rustls::Connection,
    tcp: TcpStream,
}

/// One end of the TLS stream; both share it, from one thread.
struct Half(Arc<Mutex<Tls>>);

impl Half {
    fn with<T>(&self, f: impl FnOnce(&mut Tls) -> io::Result<T>) -> io::Result<T> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("TLS stream lock poisoned"))?;
        f(&mut guard)
    }
}

impl Read for Half {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|s| match &mut s.tls {
            rustls::Connection::Client(c) => rustls::Stream::new(c, &mut s.tcp).read(buf),
            rustls::Connection::Server(c) => rustls::Stream::new(c, &mut s.tcp).read(buf),
        })
    }
}

impl Write for Half {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|s| match &mut s.tls {
            rustls::Connection::Client(c) => rustls::Stream::new(c, &mut s.tcp).write(buf),
            rustls::Connection::Server(c) => rustls::Stream::new(c, &mut s.tcp).write(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.with(|s| match &mut s.tls {
            rustls::Connection::Client(c) => rustls::Stream::new(c, &mut s.tcp).flush(),
            rustls::Connection::Server(c) => rustls::Stream::new(c, &mut s.tcp).flush(),
        })
    }
}
