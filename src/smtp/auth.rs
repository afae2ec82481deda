//! AUTH for the client (RFC 4954): PLAIN when the server offers it, else LOGIN; CRAM-MD5
//! (RFC 2195) when the caller asks for it, as ODMR does.
//!
//! Secrets never reach the transcript (`>>> AUTH PLAIN ****`: commands are redacted before they
//! are shown) nor `Debug` output. Credentials are sent as the server asks, whether or not the
//! connection is encrypted: the caller decides whether that is acceptable (etrn-send asks for
//! `--starttls` with `--auth-user`).
//!
//! [`cram_md5_response`] is the one computation of a CRAM-MD5 answer, for the client here and
//! for the server that checks it.
//!
//! Limits: PLAIN, LOGIN and CRAM-MD5 only, no SASL security layer; a refusal is final for the connection
//! ([`SmtpError::AuthFailed`]), nothing is tried a second time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};

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
            AuthMechanism::CramMd5 => return self.authenticate_cram_md5(credentials),
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

impl Connection {
    /// Authenticates with CRAM-MD5 (RFC 2195): the secret itself never crosses the wire, so it
    /// may go in clear. The server must offer it.
    pub fn authenticate_cram_md5(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        if !self.capabilities.offers_auth(AuthMechanism::CramMd5) {
            return Err(SmtpError::NotOffered {
                peer: self.peer.to_string(),
                detail: "server does not offer AUTH CRAM-MD5".to_string(),
            });
        }
        let challenge = self.command(&Command::Auth {
            mechanism: AuthMechanism::CramMd5,
            initial_response: None,
        })?;
        if !challenge.is_intermediate() {
            return Err(SmtpError::AuthFailed {
                peer: self.peer.to_string(),
                reply: challenge,
            });
        }
        let text = challenge.lines.first().cloned().unwrap_or_default();
        let Ok(decoded) = BASE64.decode(text.trim()) else {
            return Err(self.protocol("the CRAM-MD5 challenge is not base64"));
        };
        let answer = cram_md5_response(&credentials.user, &credentials.password, &decoded);
        let reply = self.command(&Command::AuthResponse(BASE64.encode(answer)))?;
        if !reply.is_positive() {
            return Err(SmtpError::AuthFailed {
                peer: self.peer.to_string(),
                reply,
            });
        }
        Ok(reply)
    }
}

/// The CRAM-MD5 answer before base64: the user, a space, and HMAC-MD5 of the challenge keyed
/// with the secret, in lower-case hex (RFC 2195 §2).
pub fn cram_md5_response(user: &str, secret: &str, challenge: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let digest = match Hmac::<md5::Md5>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(challenge);
            mac.finalize().into_bytes()
        }
        Err(_) => return String::new(),
    };
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{user} {hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cram_md5_answer_is_the_one_of_rfc_2195() {
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        assert_eq!(
            cram_md5_response("tim", "tanstaaftanstaaf", challenge),
            "tim b913a602c7eda7a495b4e6e7334d3890"
        );
    }
}
