//! What can go wrong talking to an SMTP server, and the exit status each failure asks for.

use std::io;

use super::reply::Reply;
use crate::sysexits::{Status, Sysexit};

/// One failure of an SMTP conversation. `peer` strings read `host[ip]:port` as in mail logs. The
/// message of each variant is complete in itself (an I/O error's text included), so that it can
/// be logged or shown as one line.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The server's name has no address (or the resolver could not be asked).
    #[error("{host}: host name lookup failed: {detail}")]
    NoHost { host: String, detail: String },
    #[error("{peer}: cannot connect: {error}")]
    Connect { peer: String, error: io::Error },
    /// No answer within the configured time.
    #[error("{peer}: timed out {during}")]
    Timeout { peer: String, during: String },
    /// The server closed the connection where a reply was due.
    #[error("{peer}: lost connection {during}")]
    Closed { peer: String, during: String },
    #[error("{peer}: {during}: {error}")]
    Io {
        peer: String,
        during: String,
        error: io::Error,
    },
    /// The TLS handshake failed or the certificate was not trusted.
    #[error("{peer}: TLS: {detail}")]
    Tls { peer: String, detail: String },
    /// The server said something that is not SMTP.
    #[error("{peer}: protocol error: {detail}")]
    Protocol { peer: String, detail: String },
    /// The server answered with a code that has no place after the command: 250 to DATA, 354 to
    /// RCPT or to the end of the data, anything but 2xx to RSET. What the server will make of
    /// the next line is unknown, so the connection is given up.
    #[error("{peer}: protocol error: {reply} (in reply to {command})")]
    Unexpected {
        peer: String,
        command: &'static str,
        reply: Reply,
    },
    /// The server answered a command (or the greeting) with a failure reply.
    #[error("{peer}: {context}: {reply}")]
    Rejected {
        peer: String,
        context: String,
        reply: Reply,
    },
    /// The server does not offer an extension this conversation needs.
    #[error("{peer}: {detail}")]
    NotOffered { peer: String, detail: String },
    /// The message data could not be read from the queue.
    #[error("reading the message: {0}")]
    MessageRead(io::Error),
    /// The server refused the credentials for good (`535`, `534`...).
    #[error("{peer}: authentication failed: {reply}")]
    AuthFailed { peer: String, reply: Reply },
}

impl SmtpError {
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
