//! Opening an SMTP session: connect, greeting, EHLO (HELO when EHLO is refused), STARTTLS as
//! the TLS policy asks, EHLO again; [`establish`] is the one way every program does it.
//!
//! etrn-send, `mx-check --probe` and delivery differ only in what they pass: where to go
//! ([`Endpoint`]: a host whose addresses are tried in turn, or one address), the name for EHLO,
//! the STARTTLS policy ([`StartTls`]) and how certificates are checked ([`TlsClient`]). What
//! comes back is the [`Session`]: the connection (its peer and TLS state included), what the
//! server said while it was set up ([`Opening`]) and, when opportunistic TLS failed and the
//! session went on in clear, why. A failure ([`NotEstablished`]) keeps the [`Opening`] too, so a
//! report can say how far the server got.
//!
//! # Promises
//!
//! - After STARTTLS the server forgets what it said before (RFC 3207 §4.2): the extensions are
//!   cleared and EHLO is said again before anything else.
//! - Bytes received after STARTTLS's 220 and before the handshake are a protocol error: they
//!   were sent in clear and would be read as if protected.
//! - A server that does not offer STARTTLS when it is required is sent QUIT and refused
//!   ([`SmtpError::TlsNotOffered`]); nothing else is sent to it.
//! - Opportunistic TLS that fails is never continued on the same connection: the clear-text
//!   session gets a new one, to the same address.
//!
//! # Limits
//!
//! The fallback to clear text is tried once, on the address that answered first; a failure of
//! the clear-text session is the error returned.

use std::collections::VecDeque;
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use super::capabilities::Capabilities;
use super::command::Command;
use super::connection::{Connection, SocketLimits, Step, Timed};
use super::error::{SmtpError, TlsErrorKind};
use super::options::{ConnectOptions, Peer, RECIPIENT_LIMIT};
use super::reply::Reply;
use super::tls::{self, TlsClient, TlsInfo};
use crate::address::Domain;
use crate::route::RelayHost;

impl Connection {
    /// A client session on a connection that is open already: [`Connection::open`]'s, or an
    /// ODMR connection after the turnaround (RFC 2645), where the end that was the server now
    /// sends the commands. `tls` is the TLS session running on it, whichever side of the
    /// handshake this end took. The greeting is read next.
    pub fn over(
        tcp: TcpStream,
        tls: Option<rustls::Connection>,
        peer: Peer,
        options: &ConnectOptions,
    ) -> Connection {
        Connection {
            tcp,
            tls: tls.map(Box::new),
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
        }
    }

    /// Ends the client's part without QUIT and gives back what carries the connection: the
    /// socket, the TLS session on it, and the bytes received but not read as a reply. An ODMR
    /// client takes them to become the server after ATRN.
    pub fn into_parts(self) -> (TcpStream, Option<rustls::Connection>, Vec<u8>) {
        (self.tcp, self.tls.map(|tls| *tls), self.received)
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
            .map_err(|(kind, detail)| self.tls_error(kind, detail))?;
        let name = tls::server_name(self.peer.name.as_deref(), self.peer.addr.ip());
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| self.tls_error(TlsErrorKind::Handshake, e.to_string()))?;
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
        self.tls = Some(Box::new(rustls::Connection::Client(conn)));
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(self.tls_info.insert(TlsInfo {
            protocol,
            cipher_suite,
            verified,
            certificate,
        }))
    }
}

/// When a session takes STARTTLS, and what a STARTTLS that fails means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Never, even when offered.
    Off,
    /// When offered; a server without it is talked to in clear. A STARTTLS that fails ends the
    /// attempt with its error, for a caller that must not go on in clear after trying (AUTH
    /// credentials are about to follow) or that reports the failure itself.
    WhenOffered,
    /// When offered; a server without it is talked to in clear. When STARTTLS fails, the
    /// session is set up again in clear on a new connection to the same address, and the
    /// failure is kept in [`Session::tls_fallback`]: Postfix's `may` level.
    Opportunistic,
    /// Always: a server that does not offer it is sent QUIT and refused with
    /// [`SmtpError::TlsNotOffered`]; a STARTTLS that fails ends the attempt with its error.
    Required,
}

/// Where a session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or an address literal, and the port: the host's addresses are tried in turn
    /// until one answers, as [`Connection::connect`] does.
    Host { host: RelayHost, port: u16 },
    /// One address, with the host name it belongs to when known: the name labels errors and is
    /// the one the TLS certificate must carry.
    Address {
        addr: SocketAddr,
        name: Option<String>,
    },
}

/// What a session says and asks for while it is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The name this host gives in EHLO (and HELO).
    pub helo: &'a Domain,
    pub starttls: StartTls,
    /// Whether the certificate must be trusted; one client serves every session of a program, so
    /// the trust store is read once.
    pub tls: &'a TlsClient,
}

/// What the server said while a session was set up; kept when a later step fails, so that a
/// report can say how far the server got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opening {
    /// The greeting, once it was read and was positive.
    pub greeting: Option<Reply>,
    /// The answer to the first EHLO (or HELO), before any STARTTLS.
    pub hello: Option<Hello>,
    /// The handshake's outcome, once STARTTLS succeeded (kept when the EHLO after it fails).
    pub tls: Option<TlsInfo>,
}

/// What EHLO, or HELO after a refused EHLO, established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// True when the server accepted EHLO, false after the HELO fallback.
    pub extended: bool,
    /// The extensions the server announced (none after HELO).
    pub capabilities: Capabilities,
}

/// A session ready for its first command: greeted, said hello to, encrypted as the policy asks.
pub struct Session {
    /// The connection, its peer ([`Connection::peer`]) and its TLS state
    /// ([`Connection::tls_info`]) included.
    pub connection: Connection,
    pub opening: Opening,
    /// Why the session is in clear text although STARTTLS was offered: opportunistic TLS failed
    /// on a first connection, and this one was set up without it.
    pub tls_fallback: Option<SmtpError>,
}

/// A session that could not be set up: why, and what the server had said by then.
#[derive(Debug)]
pub struct NotEstablished {
    pub error: SmtpError,
    pub opening: Box<Opening>,
}

impl fmt::Display for NotEstablished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for NotEstablished {}

impl From<NotEstablished> for SmtpError {
    fn from(failed: NotEstablished) -> SmtpError {
        failed.error
    }
}

/// Connects, reads the greeting, says EHLO (HELO when EHLO is refused), and takes STARTTLS as
/// `setup.starttls` asks, saying EHLO again over TLS. The one way every program opens an SMTP
/// session.
pub fn establish(
    endpoint: &Endpoint,
    options: &ConnectOptions,
    setup: &Setup<'_>,
) -> Result<Session, NotEstablished> {
    let connected = match endpoint {
        Endpoint::Host { host, port } => Connection::connect(host, *port, options),
        Endpoint::Address { addr, name } => Connection::open(*addr, name.clone(), options),
    };
    let mut connection = connected.map_err(|error| NotEstablished {
        error,
        opening: Box::default(),
    })?;
    let mut opening = Opening::default();
    let error = match open(&mut connection, setup, &mut opening) {
        Ok(()) => {
            return Ok(Session {
                connection,
                opening,
                tls_fallback: None,
            });
        }
        Err(Stop::NotOffered) => {
            let error = SmtpError::TlsNotOffered {
                peer: connection.peer().to_string(),
            };
            connection.quit();
            error
        }
        Err(Stop::StartTls(error)) if setup.starttls == StartTls::Opportunistic => {
            // What the server makes of the connection after a failed handshake is unknown, so
            // the clear-text session gets a connection of its own.
            let peer = connection.peer().clone();
            drop(connection);
            options
                .transcript
                .note(&format!("{error}; connecting again without TLS"));
            let clear = Setup {
                starttls: StartTls::Off,
                ..*setup
            };
            let again = Endpoint::Address {
                addr: peer.addr,
                name: peer.name,
            };
            let mut session = establish(&again, options, &clear)?;
            session.tls_fallback = Some(error);
            return Ok(session);
        }
        Err(Stop::Failed(error) | Stop::StartTls(error)) => error,
    };
    Err(NotEstablished {
        error,
        opening: Box::new(opening),
    })
}

/// Why [`open`] stopped.
enum Stop {
    Failed(SmtpError),
    /// STARTTLS was refused or its handshake failed.
    StartTls(SmtpError),
    /// STARTTLS is required and not offered.
    NotOffered,
}

/// The steps of [`establish`] on a connection, each one's outcome put in `opening` as it comes.
fn open(connection: &mut Connection, setup: &Setup<'_>, opening: &mut Opening) -> Result<(), Stop> {
    opening.greeting = Some(connection.greeting().map_err(Stop::Failed)?);
    connection.hello(setup.helo).map_err(Stop::Failed)?;
    opening.hello = Some(Hello {
        extended: connection.is_extended(),
        capabilities: connection.capabilities().clone(),
    });
    if setup.starttls == StartTls::Off {
        return Ok(());
    }
    if !connection.capabilities().starttls() {
        if setup.starttls == StartTls::Required {
            return Err(Stop::NotOffered);
        }
        connection.note("server does not offer STARTTLS; continuing without TLS");
        return Ok(());
    }
    let tls = connection.starttls(setup.tls).map_err(Stop::StartTls)?;
    opening.tls = Some(tls.clone());
    connection.hello(setup.helo).map_err(Stop::Failed)?;
    Ok(())
}

#[cfg(test)]
mod tests;
