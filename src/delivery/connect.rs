//! Setting up a delivery session on the first host of a destination that will take one.
//!
//! The hosts are tried in order, each with [`establish`]: connect, greeting, EHLO, and STARTTLS
//! as the configured TLS policy asks. Opportunistic TLS that fails is retried in clear text on a
//! new connection to the same host, and the session then carries why, so that every log line of
//! it says so; required TLS that is not offered or fails moves on to the next host. When no host
//! will do, the destination is deferred (4.4.1) with the last host's failure.
//!
//! TLS encrypts but does not authenticate the server (Postfix's "may" and "encrypt" levels).
//! Everything the server says is bounded and made printable by the SMTP client.

use crate::config::TlsPolicy;
use crate::smtp::{ConnectOptions, Connection, Endpoint, Setup, StartTls, establish};

use super::outcome::NO_ANSWER;
use super::policy::Policy;
use super::targets::{NoRoute, Target};

/// Connects to the first target that greets and takes EHLO/HELO (and STARTTLS as the
/// policy wants). With the connection comes, when opportunistic TLS failed and the session
/// went on in clear text, why it failed: every log line of the session says so. Returns the
/// last failure when no target will do.
pub(super) fn connect(
    policy: &Policy<'_>,
    targets: &[Target],
) -> Result<(Connection, Option<String>), NoRoute> {
    let options = ConnectOptions {
        timeouts: policy.options.timeouts,
        family: Default::default(),
        transcript: policy.options.transcript.clone(),
    };
    let setup = Setup {
        helo: &policy.here,
        starttls: match policy.config.tls {
            TlsPolicy::Off => StartTls::Off,
            TlsPolicy::Opportunistic => StartTls::Opportunistic,
            TlsPolicy::Required => StartTls::Required,
        },
        tls: &policy.tls,
    };
    let mut last = String::from("no host to try");
    for target in targets {
        let endpoint = Endpoint::Address {
            addr: target.addr,
            name: target.name.clone(),
        };
        match establish(&endpoint, &options, &setup) {
            Ok(session) => {
                let clear_text = session.tls_fallback.map(|failure| failure.to_string());
                return Ok((session.connection, clear_text));
            }
            Err(failed) => last = failed.to_string(),
        }
    }
    Err(NoRoute {
        permanent: false,
        status: NO_ANSWER,
        reason: last,
    })
}
