//! AUTH for the client (RFC 4954): PLAIN when the server offers it, else LOGIN.
//!
//! Secrets never reach the transcript (`>>> AUTH PLAIN ****`: commands are redacted before they
//! are shown) nor `Debug` output. Credentials are sent as the server asks, whether or not the
//! connection is encrypted: the caller decides whether that is acceptable (etrn-send asks for
//! `--starttls` with `--auth-user`).
//!
//! Limits: PLAIN and LOGIN only, no SASL security layer; a refusal is final for the connection
//! ([`SmtpError::AuthFailed`]), nothing is tried a second time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::command::{AuthMechanism, Command};
use super::connection::Connection;
use super::error::SmtpError;
use super::reply::Reply;

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

impl Connection {
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
}
