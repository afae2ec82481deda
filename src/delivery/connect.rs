//! Setting up a delivery session: connect, greeting, EHLO, and STARTTLS as the TLS policy asks.
//!
//! The hosts are tried in order until one greets and takes EHLO (and STARTTLS, when the policy
//! wants it). Opportunistic TLS that fails is retried in clear text on the same host, and the
//! session then carries why, so that every log line of it says so; required TLS that is not
//! offered or fails moves on to the next host. When no host will do, the destination is
//! deferred (4.4.1) with the last host's failure.
//!
//! TLS encrypts but does not authenticate the server (Postfix's "may" and "encrypt" levels).
//! Everything the server says is bounded and made printable by the SMTP client.

use crate::config::TlsPolicy;
use crate::smtp::{ConnectOptions, Connection, SmtpError, TlsClient, Verification};

use super::outcome::NO_ANSWER;
use super::policy::Policy;
use super::targets::{NoRoute, Target};

/// Why a session could not be set up on one host.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error("{0}: TLS is required but the server does not offer STARTTLS")]
    TlsRequired(String),
    #[error(transparent)]
    TlsFailed(SmtpError),
}

/// Connects to the first target that greets and takes EHLO/HELO (and STARTTLS as the
/// policy wants). With the connection comes, when opportunistic TLS failed and the session
/// went on in clear text, why it failed: every log line of the session says so. Returns the
/// last failure when no target will do.
pub(super) fn connect(
    policy: &Policy<'_>,
    targets: &[Target],
) -> Result<(Connection, Option<String>), NoRoute> {
    let mut last = String::from("no host to try");
    for target in targets {
        let outcome = match session(policy, target, policy.config.tls) {
            // Opportunistic TLS that fails is retried in clear, as the policy promises.
            Err(SessionError::TlsFailed(failure))
                if policy.config.tls == TlsPolicy::Opportunistic =>
            {
                session(policy, target, TlsPolicy::Off)
                    .map(|conn| (conn, Some(failure.to_string())))
            }
            other => other.map(|conn| (conn, None)),
        };
        match outcome {
            Ok(session) => return Ok(session),
            Err(e) => last = e.to_string(),
        }
    }
    Err(NoRoute {
        permanent: false,
        status: NO_ANSWER,
        reason: last,
    })
}

/// One host's session: connect, greeting, EHLO, then STARTTLS and EHLO again as `tls` asks.
fn session(
    policy: &Policy<'_>,
    target: &Target,
    tls: TlsPolicy,
) -> Result<Connection, SessionError> {
    let options = ConnectOptions {
        timeouts: policy.options.timeouts,
        family: Default::default(),
        transcript: policy.options.transcript.clone(),
    };
    let mut conn = Connection::open(target.addr, target.name.clone(), &options)?;
    conn.greeting()?;
    conn.hello(&policy.here)?;
    let offered = conn.capabilities().starttls();
    match (tls, offered) {
        (TlsPolicy::Off, _) | (TlsPolicy::Opportunistic, false) => Ok(conn),
        (TlsPolicy::Required, false) => Err(SessionError::TlsRequired(conn.peer().to_string())),
        (_, true) => {
            let client = TlsClient::new(Verification::Insecure);
            conn.starttls(&client).map_err(SessionError::TlsFailed)?;
            conn.hello(&policy.here)?;
            Ok(conn)
        }
    }
}
