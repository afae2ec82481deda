//! AUTH on the ODMR service (RFC 4954): CRAM-MD5 always, PLAIN and LOGIN under TLS only.
//!
//! CRAM-MD5 (RFC 2195) sends a fresh challenge, `<random.time@host>`, and takes
//! `user hex(HMAC-MD5(secret, challenge))`; the secret never crosses the wire, so it is
//! offered in clear, as RFC 2645 requires. PLAIN and LOGIN send the secret itself and are
//! refused (538) on a connection without TLS. A client answers `*` to give up (501).
//!
//! Security: the answer is compared without an early exit; the user a failed login gave is
//! logged, never the secret nor the answer. Which of a user and a secret was wrong is not said.

use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::smtp::{Reply, cram_md5_response};
use crate::smtpd::wire::Channel;

use super::accounts::{Account, Table};

/// A mechanism the service takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    CramMd5,
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism an AUTH command names; `None` for one not taken here.
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "CRAM-MD5" => Some(Mechanism::CramMd5),
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            _ => None,
        }
    }

    /// True when it sends the secret itself, so needs TLS.
    pub fn needs_tls(self) -> bool {
        self != Mechanism::CramMd5
    }

    /// The AUTH keyword's list in EHLO.
    pub fn offered(tls: bool) -> &'static str {
        if tls {
            "CRAM-MD5 PLAIN LOGIN"
        } else {
            "CRAM-MD5"
        }
    }
}

/// How an exchange ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    Granted(Account),
    /// Wrong user or secret; the user the client gave, when it gave one.
    Denied(Option<String>),
    /// The client answered `*`.
    Cancelled,
    /// An answer that is not base64 or not of the mechanism's form.
    Malformed,
}

/// Runs the exchange for `mechanism` on the channel, after `AUTH mechanism [initial]`.
pub fn exchange(
    channel: &mut Channel,
    mechanism: Mechanism,
    initial: Option<&str>,
    table: &Table,
    host: &str,
    timeout: std::time::Duration,
) -> io::Result<Login> {
    let ask = |channel: &mut Channel, prompt: &str| -> io::Result<Option<Vec<u8>>> {
        channel.reply(&Reply::new(334, BASE64.encode(prompt)))?;
        channel.expect_command(timeout);
        let Some(line) = channel.read_command()? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the connection during AUTH",
            ));
        };
        Ok(line.ok())
    };
    let answer = |line: Option<Vec<u8>>| -> Result<Vec<u8>, Login> {
        let line = line.ok_or(Login::Malformed)?;
        if line == b"*" {
            return Err(Login::Cancelled);
        }
        BASE64
            .decode(line.trim_ascii())
            .map_err(|_| Login::Malformed)
    };
    let outcome = match mechanism {
        Mechanism::CramMd5 => {
            let challenge = format!(
                "<{}.{}@{host}>",
                fastrand::u64(..),
                chrono::Utc::now().timestamp()
            );
            let line = ask(channel, &challenge)?;
            answer(line).and_then(|decoded| cram_md5(table, challenge.as_bytes(), &decoded))
        }
        Mechanism::Plain => {
            let line = match initial {
                Some("=") => Some(Vec::new()),
                Some(text) => Some(text.as_bytes().to_vec()),
                None => ask(channel, "")?,
            };
            answer(line).and_then(|decoded| plain(table, &decoded))
        }
        Mechanism::Login => {
            let user = match initial {
                Some(text) => answer(Some(text.as_bytes().to_vec())),
                None => {
                    let line = ask(channel, "Username:")?;
                    answer(line)
                }
            };
            match user {
                Ok(user) => {
                    let line = ask(channel, "Password:")?;
                    answer(line).and_then(|secret| check(table, &user, &secret))
                }
                Err(outcome) => Err(outcome),
            }
        }
    };
    Ok(outcome.unwrap_or_else(|login| login))
}

/// `user hexdigest`, checked against the user's secret.
fn cram_md5(table: &Table, challenge: &[u8], decoded: &[u8]) -> Result<Login, Login> {
    let text = std::str::from_utf8(decoded).map_err(|_| Login::Malformed)?;
    let (user, digest) = text.rsplit_once(' ').ok_or(Login::Malformed)?;
    let Some(account) = table.get(user) else {
        return Ok(Login::Denied(Some(user.to_string())));
    };
    let expected = cram_md5_response(user, &account.secret, challenge);
    let given = format!("{user} {}", digest.to_ascii_lowercase());
    Ok(if same(expected.as_bytes(), given.as_bytes()) {
        Login::Granted(account.clone())
    } else {
        Login::Denied(Some(user.to_string()))
    })
}

/// `authzid NUL authcid NUL secret`; an authorization identity other than the user's is refused.
fn plain(table: &Table, decoded: &[u8]) -> Result<Login, Login> {
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Login::Malformed);
    };
    if !authz.is_empty() && authz != user {
        return Ok(Login::Denied(Some(
            String::from_utf8_lossy(user).into_owned(),
        )));
    }
    check(table, user, secret)
}

fn check(table: &Table, user: &[u8], secret: &[u8]) -> Result<Login, Login> {
    let user = std::str::from_utf8(user).map_err(|_| Login::Malformed)?;
    Ok(match table.get(user) {
        Some(account) if same(account.secret.as_bytes(), secret) => Login::Granted(account.clone()),
        _ => Login::Denied(Some(user.to_string())),
    })
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::accounts::parse;
    use super::*;

    fn table() -> Table {
        parse("alice s3cret alice.example\n").unwrap()
    }

    #[test]
    fn cram_md5_takes_the_right_digest_only() {
        let challenge = b"<1.2@isp.example>";
        let right = cram_md5_response("alice", "s3cret", challenge);
        let wrong = cram_md5_response("alice", "guess", challenge);
        let unknown = cram_md5_response("mallory", "s3cret", challenge);
        assert!(matches!(
            cram_md5(&table(), challenge, right.as_bytes()),
            Ok(Login::Granted(a)) if a.user == "alice"
        ));
        assert_eq!(
            cram_md5(
                &table(),
                challenge,
                right.to_uppercase().replace("ALICE", "alice").as_bytes()
            ),
            cram_md5(&table(), challenge, right.as_bytes()),
            "hex digits in either case"
        );
        assert_eq!(
            cram_md5(&table(), challenge, wrong.as_bytes()),
            Ok(Login::Denied(Some("alice".into())))
        );
        assert_eq!(
            cram_md5(&table(), challenge, unknown.as_bytes()),
            Ok(Login::Denied(Some("mallory".into())))
        );
        assert_eq!(
            cram_md5(&table(), challenge, b"no-space"),
            Err(Login::Malformed)
        );
    }

    #[test]
    fn plain_checks_the_secret_and_the_authorization_identity() {
        assert!(matches!(
            plain(&table(), b"\0alice\0s3cret"),
            Ok(Login::Granted(_))
        ));
        assert!(matches!(
            plain(&table(), b"alice\0alice\0s3cret"),
            Ok(Login::Granted(_))
        ));
        assert_eq!(
            plain(&table(), b"bob\0alice\0s3cret"),
            Ok(Login::Denied(Some("alice".into())))
        );
        assert_eq!(
            plain(&table(), b"\0alice\0wrong"),
            Ok(Login::Denied(Some("alice".into())))
        );
        assert_eq!(plain(&table(), b"\0alice"), Err(Login::Malformed));
    }
}
