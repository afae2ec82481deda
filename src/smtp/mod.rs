//! The SMTP client every etrnq program speaks through.
//!
//! # Summary
//!
//! ```no_run
//! use etrnq::address::Domain;
//! use etrnq::route::RelayHost;
//! use etrnq::smtp::{
//!     Command, ConnectOptions, Endpoint, EtrnArgument, Setup, StartTls, TlsClient, Verification,
//!     establish,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let helo = Domain::parse("site.example")?;
//! let tls = TlsClient::new(Verification::Required);
//! let setup = Setup {
//!     helo: &helo,
//!     starttls: StartTls::WhenOffered,
//!     tls: &tls,
//! };
//! let endpoint = Endpoint::Host {
//!     host: RelayHost::Name(Domain::parse("mx2.isp.example")?),
//!     port: 25,
//! };
//! let mut conn = establish(&endpoint, &ConnectOptions::default(), &setup)?.connection;
//! let reply = conn.command(&Command::Etrn(EtrnArgument::parse("site.example")?))?;
//! println!("{reply}");
//! conn.quit();
//! # Ok(())
//! # }
//! ```
//!
//! # Description
//!
//! A blocking client over `std::net`, one connection per [`Connection`], for the three users of
//! SMTP in etrnq: queue-run delivers with it ([`Connection::deliver_all`]: PIPELINING,
//! per-recipient verdicts, SIZE, 8BITMIME, STARTTLS), mx-check probes with it (greeting, EHLO
//! [`Capabilities`], the STARTTLS certificate in [`TlsInfo`], MAIL FROM:<>/RCPT/RSET/QUIT through
//! [`Connection::command`]), and etrn-send sends ETRN with it. Each opens its session with
//! [`establish`].
//!
//! It is written here rather than taken from a mail crate because delivery needs what those
//! clients do not give: several commands written before their replies are read (RFC 2920,
//! [`Connection::send`] then [`Connection::flush`] then [`Connection::read_reply`]), and one
//! reply per recipient rather than one verdict per message.
//!
//! The pieces, one file each:
//!
//! ```text
//! command.rs       Command: each verb a variant whose Display is its exact wire form
//! reply.rs         Reply: parsed once into code, enhanced code and printable lines
//! capabilities.rs  Capabilities: the EHLO keywords
//! options.rs       ConnectOptions, Timeouts, Transcript, Peer: how to reach a server
//! connection.rs    Connection: connecting, deadlines, commands and replies on the socket
//! session.rs       greeting, EHLO/HELO, STARTTLS, and establish with the TLS policy
//! tls.rs           TlsClient: rustls, the trust store, the certificate's verdict
//! auth.rs          Credentials and AUTH PLAIN/LOGIN
//! transaction.rs   deliver_all with an Outbox: MAIL, RCPT, DATA, pipelined when offered
//!   ledger.rs      verdicts per recipient, messages in flight, the order of reports
//!   data.rs        message data: CRLF, dot-stuffing, blocks
//! error.rs         SmtpError: each failure carries its peer, its reply and its status
//! ```
//!
//! # Promises
//!
//! - Every reply is read whole and checked: all lines carry one code, continuation marks are
//!   consistent, a line is at most 8192 octets and a reply at most 500 lines; anything else is a
//!   protocol error, never a panic.
//! - Each step has a deadline ([`Timeouts`], RFC 5321 §4.5.3.2 values by default): a reply with
//!   all its lines, a write of commands, a block of message data, the TLS handshake. Bytes that
//!   trickle in do not renew it.
//! - Only a 2xx to the end of the data after a 354 to DATA delivers; a reply with no place after
//!   its command ends the connection and is never taken for a delivery or a refusal.
//! - Message data leaves with CRLF line ends only and every line dot-stuffed, whatever line ends
//!   the stored message has.
//! - Replies are matched to commands in order, so a pipelined reply cannot be taken for another
//!   command's, and an error names the command whose reply was awaited.
//!
//! # Security
//!
//! - Nothing the server sends is trusted to be text: non-UTF-8 bytes are replaced, control
//!   characters are made printable where replies are parsed (and in the transcript), lengths are
//!   bounded.
//! - Commands are built from validated types, and a command that would contain a line break is
//!   refused before it is written.
//! - After STARTTLS's 220, bytes already received are a protocol error (no plaintext injected
//!   into the TLS session).
//! - Certificates are checked against the system trust store unless
//!   [`Verification::Insecure`] is asked for; handshake signatures are checked in both modes.
//! - AUTH secrets never reach the transcript (`>>> AUTH PLAIN ****`) nor `Debug` output.
//!
//! # Limits
//!
//! - Host names are resolved with the system resolver (`getaddrinfo`); MX lookups and the
//!   configured `[dns]` servers belong to the DNS module.
//! - Message data is sent with DATA. CHUNKING is reported in [`Capabilities`] and BDAT can be
//!   written as a command, but [`Connection::deliver_all`] does not use it.
//! - SASL mechanisms: PLAIN and LOGIN only.
//! - The time limits bound each step, not a whole conversation: a conversation of many steps
//!   may take as long as their limits added up.

mod auth;
mod capabilities;
mod command;
mod connection;
mod error;
mod options;
mod reply;
mod session;
#[cfg(test)]
mod test_server;
mod tls;
mod transaction;

pub use auth::{Credentials, cram_md5_response};
pub use capabilities::Capabilities;
pub use command::{AuthMechanism, Command, EtrnArgument, Parameter};
pub use connection::{Connection, resolve};
pub use error::{SmtpError, TlsErrorKind};
pub use options::{
    AddressFamily, COMMAND_TIMEOUT, CONNECT_TIMEOUT, ConnectOptions, DATA_BLOCK_TIMEOUT,
    DATA_END_TIMEOUT, DATA_START_TIMEOUT, GREETING_TIMEOUT, Peer, RECIPIENT_LIMIT, Timeouts,
    Transcript,
};
pub use reply::{EnhancedCode, Reply, ReplyCode, printable};
pub use session::{Endpoint, Hello, NotEstablished, Opening, Session, Setup, StartTls, establish};
pub(crate) use tls::negotiated;
pub use tls::{CertificateInfo, TlsClient, TlsInfo, Verification};
pub use transaction::{Attempt, Body, Delivery, Message, Outbox, Sent, Stage, Verdict};
