//! What can go wrong talking to an SMTP server, and the exit status each failure asks for.
//!
//! Each failure is a variant that carries what callers decide on: the server (`peer`, as mail
//! logs name it), the reply when there was one, the kind of TLS failure. Callers never take a
//! message apart to decide: [`SmtpError::peer`] and [`SmtpError::detail`] give its two halves.

use std::fmt;
use std::io;

use super::reply::Reply;
use crate::sysexits::{Status, Sysexit};

/// One failure of an SMTP conversation. `peer` strings read `host[ip]:port` as in mail logs. The
/// message of each variant is complete in itself (an I/O error's text included), so that it can
/// be logged or shown as one line: `peer: detail`.
#[derive(Debug)]
pub enum SmtpError {
    /// The server's name has no address (or the resolver could not be asked).
    NoHost {
        host: String,
        detail: String,
    },
    Connect {
        peer: String,
        error: io::Error,
    },
    /// No answer within the configured time.
    Timeout {
        peer: String,
        during: String,
    },
    /// The server closed the connection where a reply was due.
    Closed {
        peer: String,
        during: String,
    },
    Io {
        peer: String,
        during: String,
        error: io::Error,
    },
    /// The TLS handshake failed or the certificate was not trusted.
    Tls {
        peer: String,
        kind: TlsErrorKind,
        detail: String,
    },
    /// STARTTLS is required and the server does not offer it.
    TlsNotOffered {
        peer: String,
    },
    /// The server said something that is not SMTP.
    Protocol {
        peer: String,
        detail: String,
    },
    /// The server answered with a code that has no place after the command: 250 to DATA, 354 to
    /// RCPT or to the end of the data, anything but 2xx to RSET. What the server will make of
    /// the next line is unknown, so the connection is given up.
    Unexpected {
        peer: String,
        command: &'static str,
        reply: Reply,
    },
    /// The server answered a command (or the greeting) with a failure reply.
    Rejected {
        peer: String,
        context: String,
        reply: Reply,
    },
    /// The server does not offer an extension this conversation needs.
    NotOffered {
        peer: String,
        detail: String,
    },
    /// The message data could not be read from the queue.
    MessageRead(io::Error),
    /// The server refused the credentials for good (`535`, `534`...).
    AuthFailed {
        peer: String,
        reply: Reply,
    },
}

/// Why a TLS handshake failed, as far as a caller's choice depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsErrorKind {
    /// The server's certificate was not trusted (unknown issuer, expired, another host's name,
    /// none sent), or there is no trust store to check it against. Accepting any certificate
    /// would have let the handshake succeed.
    Certificate,
    /// Anything else: no common protocol or cipher, a broken record, an alert from the server.
    Handshake,
}

impl std::error::Error for SmtpError {}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer() {
            Some(peer) => write!(f, "{peer}: {}", self.detail()),
            None => f.write_str(&self.detail()),
        }
    }
}

impl SmtpError {
    /// The server the failure concerns, as mail logs name it (`host[ip]:port`); `None` when no
    /// connection was made yet or the failure is not the server's.
    pub fn peer(&self) -> Option<&str> {
        match self {
            SmtpError::Connect { peer, .. }
            | SmtpError::Timeout { peer, .. }
            | SmtpError::Closed { peer, .. }
            | SmtpError::Io { peer, .. }
            | SmtpError::Tls { peer, .. }
            | SmtpError::TlsNotOffered { peer }
            | SmtpError::Protocol { peer, .. }
            | SmtpError::Unexpected { peer, .. }
            | SmtpError::Rejected { peer, .. }
            | SmtpError::NotOffered { peer, .. }
            | SmtpError::AuthFailed { peer, .. } => Some(peer),
            SmtpError::NoHost { .. } | SmtpError::MessageRead(_) => None,
        }
    }

    /// The message without the peer in front, for a report that names the server already.
    pub fn detail(&self) -> String {
        match self {
            SmtpError::NoHost { host, detail } => {
                format!("{host}: host name lookup failed: {detail}")
            }
            SmtpError::Connect { error, .. } => format!("cannot connect: {error}"),
            SmtpError::Timeout { during, .. } => format!("timed out {during}"),
            SmtpError::Closed { during, .. } => format!("lost connection {during}"),
            SmtpError::Io { during, error, .. } => format!("{during}: {error}"),
            SmtpError::Tls { detail, .. } => format!("TLS: {detail}"),
            SmtpError::TlsNotOffered { .. } => {
                "TLS is required but the server does not offer STARTTLS".to_string()
            }
            SmtpError::Protocol { detail, .. } => format!("protocol error: {detail}"),
            SmtpError::Unexpected { command, reply, .. } => {
                format!("protocol error: {reply} (in reply to {command})")
            }
            SmtpError::Rejected { context, reply, .. } => format!("{context}: {reply}"),
            SmtpError::NotOffered { detail, .. } => detail.clone(),
            SmtpError::MessageRead(error) => format!("reading the message: {error}"),
            SmtpError::AuthFailed { reply, .. } => format!("authentication failed: {reply}"),
        }
    }

    /// True for failures that may go away by themselves: connection trouble, time-outs, 4xx
    /// replies, resolver failures (a name server not yet reachable on a link that just came up).
    pub fn is_transient(&self) -> bool {
        match self {
            SmtpError::NoHost { .. }
            | SmtpError::Connect { .. }
            | SmtpError::Timeout { .. }
            | SmtpError::Closed { .. }
            | SmtpError::Io { .. } => true,
            SmtpError::Rejected { reply, .. } | SmtpError::AuthFailed { reply, .. } => {
                reply.is_transient()
            }
            SmtpError::Tls { .. }
            | SmtpError::TlsNotOffered { .. }
            | SmtpError::Protocol { .. }
            | SmtpError::Unexpected { .. }
            | SmtpError::NotOffered { .. }
            | SmtpError::MessageRead(_) => false,
        }
    }

    /// The reply the server gave, when the failure is a reply.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SmtpError::Rejected { reply, .. }
            | SmtpError::AuthFailed { reply, .. }
            | SmtpError::Unexpected { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

impl Sysexit for SmtpError {
    fn status(&self) -> Status {
        match self {
            SmtpError::NoHost { .. } => Status::NoHost,
            SmtpError::Connect { .. }
            | SmtpError::Timeout { .. }
            | SmtpError::Closed { .. }
            | SmtpError::Io { .. }
            | SmtpError::Tls { .. } => Status::TempFail,
            SmtpError::Protocol { .. }
            | SmtpError::Unexpected { .. }
            | SmtpError::TlsNotOffered { .. }
            | SmtpError::NotOffered { .. } => Status::Protocol,
            SmtpError::Rejected { reply, .. } if reply.is_transient() => Status::TempFail,
            SmtpError::Rejected { .. } => Status::Protocol,
            SmtpError::AuthFailed { reply, .. } if reply.is_transient() => Status::TempFail,
            SmtpError::AuthFailed { .. } => Status::NoPerm,
            SmtpError::MessageRead(err) => Status::of_io(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(line: &str) -> SmtpError {
        SmtpError::Rejected {
            peer: "mx[127.0.0.1]:25".to_string(),
            context: "greeting".to_string(),
            reply: Reply::from_lines(&[line]).unwrap(),
        }
    }

    #[test]
    fn statuses() {
        let no_host = SmtpError::NoHost {
            host: "x.invalid".to_string(),
            detail: "not found".to_string(),
        };
        assert_eq!(no_host.status(), Status::NoHost);
        assert_eq!(rejected("421 busy").status(), Status::TempFail);
        assert_eq!(rejected("554 go away").status(), Status::Protocol);
        assert!(rejected("421 busy").is_transient());
        assert!(!rejected("554 go away").is_transient());
        let timeout = SmtpError::Timeout {
            peer: "p".to_string(),
            during: "waiting for the greeting".to_string(),
        };
        assert_eq!(timeout.status(), Status::TempFail);
        assert_eq!(timeout.to_string(), "p: timed out waiting for the greeting");
    }
}
