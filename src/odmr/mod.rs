//! The site's side of On-Demand Mail Relay (RFC 2645): ask the provider for the held mail,
//! then take it on the same connection and hand each message to the site's own mail system.
//!
//! ```text
//!   odmr-fetch                              provider (queue-smtpd --odmr-listen)
//!   EHLO, STARTTLS, EHLO, AUTH CRAM-MD5 -->
//!   ATRN site.example                   -->  250 OK now reversing the connection
//!   220 site.example ESMTP odmr-fetch   -->  EHLO, MAIL, RCPT, DATA, ... QUIT
//! ```
//!
//! [`fetch`] opens the session with the SMTP client ([`crate::smtp::establish`]): STARTTLS as
//! asked (required by default), AUTH CRAM-MD5 when offered, else PLAIN or LOGIN only under
//! TLS, then ATRN. After `250` the connection turns around and `site` serves SMTP on it;
//! each message goes to [`Handoff`] (`handoff`): SMTP to a local server, or a command.
//!
//! # Promises
//!
//! - The provider's final dot gets 250 only after the local hand-off succeeded; a hand-off that
//!   failed gets 451 (the provider keeps the message and tries again at the next ATRN), one
//!   that the local system refused for good gets 550.
//! - The secret never reaches the transcript or the command line.
//! - Exit status: 0 (mail taken, or none waiting: 453), 75 (a connection failure, a 4xx, or a
//!   message the site could not take now), 77 (credentials or a domain refused), 76 (a protocol
//!   error, ATRN not offered, or nothing safe to authenticate with), 68 (the provider does not
//!   resolve).
//!
//! # Limits
//!
//! - A message whose recipients the local system answers differently (some taken, some
//!   deferred) gets 451 as a whole: the provider sends it again later, so the recipients that
//!   took it may get it twice. Duplicates are preferred to loss.
//! - Time limits on the turned-around connection are per read, not per command.

mod handoff;
mod site;

use std::time::Duration;

use crate::address::Domain;
use crate::route::RelayHost;
use crate::smtp::{
    Command, ConnectOptions, Connection, Credentials, Endpoint, Setup, SmtpError, StartTls,
    TlsClient, Verification, establish,
};
use crate::sysexits::{Status, Sysexit};

pub use handoff::Handoff;
pub use site::Taken;

/// The ODMR port (RFC 2645).
pub const ODMR_PORT: u16 = 366;

/// What odmr-fetch was asked to do.
#[derive(Debug)]
pub struct Request {
    pub host: RelayHost,
    pub port: u16,
    /// Empty: every domain of the account.
    pub domains: Vec<Domain>,
    /// The name for EHLO, and the site's name in its greeting.
    pub helo: Domain,
    pub connect: ConnectOptions,
    pub starttls: StartTls,
    pub verification: Verification,
    pub credentials: Credentials,
    pub handoff: Handoff,
    /// The largest message taken.
    pub max_message_size: u64,
    pub retries: u32,
    pub retry_wait: Duration,
}

/// Why a fetch ended early.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error("{peer} does not offer ATRN")]
    NoAtrn { peer: String },
    #[error(
        "{peer} offers no AUTH CRAM-MD5, and the connection is not encrypted: the secret is not sent in clear"
    )]
    NoSafeAuth { peer: String },
    #[error("{peer} refused ATRN: {reply}")]
    Refused {
        peer: String,
        reply: crate::smtp::Reply,
    },
    #[error("{peer}: {detail}")]
    Turnaround { peer: String, detail: String },
}

impl Sysexit for FetchError {
    fn status(&self) -> Status {
        match self {
            FetchError::Smtp(e) => e.status(),
            FetchError::NoAtrn { .. } | FetchError::NoSafeAuth { .. } => Status::Protocol,
            FetchError::Refused { reply, .. } => {
                let refused = reply.code.value() == 530
                    || reply
                        .enhanced
                        .is_some_and(|e| e.class == 4 && e.subject == 7);
                if refused {
                    Status::NoPerm
                } else if reply.is_transient() {
                    Status::TempFail
                } else {
                    Status::Protocol
                }
            }
            FetchError::Turnaround { .. } => Status::TempFail,
        }
    }
}

/// What the provider said to ATRN, when it was not a refusal.
#[derive(Debug)]
pub enum Fetched {
    /// 453: nothing waits.
    NoMail,
    /// The turnaround ran: what was taken.
    Taken(Taken),
}

/// Connects, authenticates, says ATRN and takes the mail; tries again after a connection
/// failure or a 4xx, `request.retries` times, but never after the turnaround began.
pub fn fetch(request: &Request) -> Result<Fetched, FetchError> {
    let mut tries = 0;
    loop {
        match ask(request) {
            Err(e) if e.status() == Status::TempFail && tries < request.retries => {
                tries += 1;
                request
                    .connect
                    .transcript
                    .note(&format!("{e}; trying again in {:?}", request.retry_wait));
                std::thread::sleep(request.retry_wait);
            }
            Err(e) => return Err(e),
            Ok(None) => return Ok(Fetched::NoMail),
            Ok(Some(connection)) => {
                return site::serve(connection, request).map(Fetched::Taken);
            }
        }
    }
}

/// The session up to ATRN: the connection after its 250, or `None` after 453.
fn ask(request: &Request) -> Result<Option<Connection>, FetchError> {
    let tls = TlsClient::new(request.verification);
    let setup = Setup {
        helo: &request.helo,
        starttls: request.starttls,
        tls: &tls,
    };
    let endpoint = Endpoint::Host {
        host: request.host.clone(),
        port: request.port,
    };
    let mut connection = establish(&endpoint, &request.connect, &setup)
        .map_err(SmtpError::from)?
        .connection;
    let peer = connection.peer().to_string();
    if !connection.capabilities().atrn() {
        connection.quit();
        return Err(FetchError::NoAtrn { peer });
    }
    let offers_cram = connection
        .capabilities()
        .offers_auth(crate::smtp::AuthMechanism::CramMd5);
    let authenticated = if offers_cram {
        connection.authenticate_cram_md5(&request.credentials)
    } else if connection.tls_info().is_some() {
        connection.authenticate(&request.credentials)
    } else {
        connection.quit();
        return Err(FetchError::NoSafeAuth { peer });
    };
    if let Err(e) = authenticated {
        connection.quit();
        return Err(e.into());
    }
    let reply = connection.command(&Command::Atrn(request.domains.clone()))?;
    match reply.code.value() {
        250 => Ok(Some(connection)),
        453 => {
            connection.quit();
            Ok(None)
        }
        _ => {
            connection.quit();
            Err(FetchError::Refused { peer, reply })
        }
    }
}
