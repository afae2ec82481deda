//! How a connection reaches its server and what it shows of the conversation: the time limit of
//! each step, the address families to try, the transcript, and the server's name as logs give it.
//!
//! The default time limits are RFC 5321 §4.5.3.2's (and Postfix's `smtp_connect_timeout` for the
//! connection itself); a command-line `--timeout` sets one limit for every step.
//!
//! The transcript is for people: client lines start with `>>> `, the client's remarks with
//! `*** `, server lines appear as received but made printable, since a transcript goes to a
//! terminal. Commands reach it already redacted, so AUTH secrets never do.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::reply::printable;

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

/// Recipients per transaction unless
/// [`Connection::limit_recipients`](super::Connection::limit_recipients) says otherwise.
pub const RECIPIENT_LIMIT: usize = 50;

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
    pub(super) fn admits(self, ip: IpAddr) -> bool {
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
    pub(crate) fn sent(&self, line: &str) {
        self.emit(format!(">>> {line}"));
    }

    /// A server line, made printable as every reply is: a transcript goes to a terminal.
    pub(crate) fn received(&self, line: &str) {
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
