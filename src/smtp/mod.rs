//! NAME
//!     smtp - the SMTP client every etrnq program speaks through
//!
//! SUMMARY
//!     let mut conn = Connection::connect(&host, 25, &ConnectOptions::default())?;
//!     conn.greeting()?;
//!     conn.hello(&helo_name)?;
//!     if conn.capabilities().starttls() { conn.starttls(&tls)?; conn.hello(&helo_name)?; }
//!     let reply = conn.command(&Command::Etrn(argument))?;
//!     let delivery = conn.deliver(&mail, &mut body)?;
//!     conn.quit();
//!
//! DESCRIPTION
//!     A blocking client over `std::net`, one connection per `Connection`, for the three users
//!     of SMTP in etrnq: queue-run delivers with it (PIPELINING, per-recipient replies, SIZE,
//!     8BITMIME, STARTTLS), mx-check probes with it (greeting, EHLO capabilities, the STARTTLS
//!     certificate, MAIL FROM:<>/RCPT/RSET/QUIT), and etrn-send sends ETRN with it.
//!
//!     It is written here rather than taken from a mail crate because delivery needs what those
//!     clients do not give: several commands written before their replies are read (RFC 2920),
//!     and one reply per recipient rather than one verdict per message.
//!
//!     The pieces: [`Command`] (each verb a variant whose `Display` is its exact wire form,
//!     without CRLF), [`Reply`] (parsed once into code, enhanced code and lines),
//!     [`Capabilities`] (the EHLO keywords), [`Connection`] (I/O, timeouts, transcript, TLS,
//!     AUTH, delivery) and [`SmtpError`] (each failure carries its `sysexits` status).
//!
//! PROMISES
//!     Every reply is read whole and checked: all lines carry one code, continuation marks are
//!     consistent, a line is at most 8192 octets and a reply at most 500 lines; anything else is
//!     a protocol error, never a panic. Every network read and write has a time limit
//!     ([`Timeouts`], RFC 5321 §4.5.3.2 values by default). Replies are matched to commands in
//!     order, so pipelined replies cannot be attributed to the wrong command.
//!
//! SECURITY
//!     Nothing the server sends is trusted to be text: non-UTF-8 bytes are replaced, lengths
//!     are bounded. Commands are built from validated types and a command that would contain a
//!     line break is refused before it is written. After STARTTLS's 220 any bytes already
//!     received are a protocol error (no plaintext injection into the TLS session). Certificates
//!     are checked against the system trust store unless [`Verification::Insecure`] is asked for;
//!     TLS handshake signatures are checked in both modes. AUTH secrets never reach the
//!     transcript (`>>> AUTH PLAIN ****`) nor `Debug` output.
//!
//! LIMITS
//!     Host names are resolved with the system resolver (`getaddrinfo`): MX lookups and the
//!     configured `[dns]` servers belong to the DNS module. Message data is sent with DATA;
//!     CHUNKING is reported in [`Capabilities`] and BDAT can be written as a command, but
//!     `deliver` does not use it. SASL mechanisms: PLAIN and LOGIN only. The time limits apply
//!     per read or write, not to a whole conversation.

mod capabilities;
mod command;
mod connection;
mod error;
mod reply;
mod tls;

pub use capabilities::Capabilities;
pub use command::{AuthMechanism, Command, EtrnArgument, Parameter};
pub use connection::{
    AddressFamily, COMMAND_TIMEOUT, CONNECT_TIMEOUT, ConnectOptions, Connection, Credentials,
    DATA_BLOCK_TIMEOUT, DATA_END_TIMEOUT, DATA_START_TIMEOUT, Delivery, GREETING_TIMEOUT, Mail,
    Peer, Timeouts, Transcript, resolve,
};
pub use error::SmtpError;
pub use reply::{EnhancedCode, Reply, ReplyCode};
pub use tls::{CertificateInfo, TlsClient, TlsInfo, Verification};
