//! The provider side of On-Demand Mail Relay (RFC 2645): held mail for sites without a fixed
//! address, delivered down the connection the site opens.
//!
//! ```text
//!   site (odmr-fetch, fetchmail)          provider (queue-smtpd --odmr-listen :366)
//!   connects                        <--   220 isp.example ESMTP etrnq ODMR
//!   EHLO site.example               -->   250 AUTH CRAM-MD5, ATRN, STARTTLS
//!   AUTH CRAM-MD5 ...               -->   235 2.7.0 Authentication successful
//!   ATRN customer.example           -->   250 OK now reversing the connection
//!   220 site.example ESMTP          -->   EHLO, MAIL, RCPT, DATA ... (the held mail), QUIT
//! ```
//!
//! The service is a restricted SMTP profile (`session`): EHLO, STARTTLS when a certificate
//! is configured, AUTH, ATRN, NOOP, RSET, HELP and QUIT. Mail is never taken on it: MAIL, RCPT,
//! DATA, ETRN and VRFY get 502. AUTH checks the accounts file named by `odmr_accounts`
//! ([`accounts`]) with CRAM-MD5, or PLAIN and LOGIN under TLS (`sasl`). ATRN asks for some
//! or all of the account's domains, each exactly (not its subdomains): `530` before AUTH, `450
//! 4.7.1` for a domain that is not the account's (logged), `451` when another ODMR connection
//! is taking mail for one of them or the queue cannot be read, `453` when nothing waits, else
//! `250` and the turnaround (`turnaround`): the provider becomes the client on the same
//! connection and the normal delivery engine delivers the domains' mail down it, as
//! `queue-run -R` would, then says QUIT.
//!
//! # Promises
//!
//! - A message leaves the queue only on the customer's 250 to its final dot; anything else
//!   (4xx, 5xx, a cut connection) is recorded per recipient by the delivery engine as any run
//!   records it: deferred, failed and bounced, or stranded and left queued.
//! - The per-message locks of the queue are held across the conversation: an ODMR session, a
//!   `queue-run -R` and an ETRN for the same domain never deliver a message twice.
//! - One ODMR connection at a time takes a domain's mail in this server; a second gets 451.
//!
//! # Security
//!
//! - Only an authenticated account's own domains are delivered; a domain named in ATRN that is
//!   not the account's refuses the whole command.
//! - A failed login is answered after a delay that grows with the client address's recent
//!   failures (`FAILURE_DELAY` each, at most `MAX_DELAY`); three in one session end it, and
//!   an address with `MAX_CLIENT_FAILURES` recent failures is refused AUTH for a while.
//! - The accounts file holds secrets: it must be the server user's and no one else's (see
//!   [`accounts`]); the server refuses to start otherwise.
//!
//! # Limits
//!
//! - In inetd mode each session is a process of its own: the one-connection-per-domain rule
//!   and the failed-login counts hold per process there; the message locks still hold.
//! - No SASL security layer, no client certificates.
//! - A server asked to stop lets a turnaround under way finish its run.

pub mod accounts;
mod sasl;
mod session;
mod turnaround;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::address::Domain;
use crate::config::{Config, ConfigError};

pub use accounts::Accounts;
pub(super) use session::run;

/// The delay before a 535, for each recent failure of the client address.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// The longest delay before a 535.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failed logins in one session after which it ends.
pub const MAX_SESSION_FAILURES: u32 = 3;
/// Recent failed logins of one client address after which it is refused AUTH.
pub const MAX_CLIENT_FAILURES: u32 = 10;
/// How long failed logins count against an address.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// What the ODMR sessions of a server share.
#[derive(Debug)]
pub struct Provider {
    accounts: Accounts,
    /// Domains whose mail an ODMR connection is taking now.
    draining: Mutex<HashSet<Domain>>,
    /// Recent failed logins per client address, and the last one's time.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Provider {
    /// Reads `odmr_accounts`; a missing key or a file that cannot be used is a configuration
    /// error.
    pub fn load(config: &Config) -> Result<Provider, ConfigError> {
        let file = config
            .source
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let error = |reason: String| ConfigError {
            file: file.clone(),
            key: Some("odmr_accounts".to_string()),
            reason,
        };
        let Some(path) = &config.odmr_accounts else {
            return Err(error(
                "missing: the ODMR service needs an accounts file".into(),
            ));
        };
        Ok(Provider {
            accounts: Accounts::open(path).map_err(error)?,
            draining: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// Takes `domains` for one connection, or names the first that another one has.
    fn claim(&self, domains: &[Domain]) -> Result<Claim<'_>, Domain> {
        // The set is consistent whatever a panicking holder was doing: it only inserts and
        // removes whole entries.
        let mut draining = self
            .draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(taken) = domains.iter().find(|d| draining.contains(*d)) {
            return Err(taken.clone());
        }
        draining.extend(domains.iter().cloned());
        Ok(Claim {
            provider: self,
            domains: domains.to_vec(),
        })
    }

    /// Counts a failed login of `ip`; returns how long to wait before saying so.
    fn failed(&self, ip: Option<IpAddr>, now: Instant) -> Duration {
        let Some(ip) = ip else {
            return FAILURE_DELAY;
        };
        let Ok(mut failures) = self.failures.lock() else {
            return MAX_DELAY;
        };
        failures.retain(|_, (_, last)| now.saturating_duration_since(*last) < FAILURE_MEMORY);
        let entry = failures.entry(ip).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
        (FAILURE_DELAY * entry.0).min(MAX_DELAY)
    }

    /// True when `ip` failed too often lately to be let try again.
    fn is_barred(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let (Some(ip), Ok(failures)) = (ip, self.failures.lock()) else {
            return false;
        };
        failures.get(&ip).is_some_and(|(count, last)| {
            *count >= MAX_CLIENT_FAILURES && now.saturating_duration_since(*last) < FAILURE_MEMORY
        })
    }
}

/// Domains one connection is taking mail for; they are free again when it is dropped.
struct Claim<'p> {
    provider: &'p Provider,
    domains: Vec<Domain>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut draining) = self.provider.draining.lock() {
            for domain in &self.domains {
                draining.remove(domain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        std::fs::write(&path, "a s a.example\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Provider {
            accounts: Accounts::open(&path).unwrap(),
            draining: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    fn domain(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    #[test]
    fn a_domain_is_taken_by_one_connection_at_a_time() {
        let provider = provider();
        let first = provider
            .claim(&[domain("a.example"), domain("b.example")])
            .unwrap();
        assert_eq!(
            provider.claim(&[domain("B.example")]).err(),
            Some(domain("b.example"))
        );
        assert!(provider.claim(&[domain("c.example")]).is_ok());
        drop(first);
        assert!(provider.claim(&[domain("b.example")]).is_ok());
    }

    #[test]
    fn failed_logins_grow_the_delay_and_bar_the_address() {
        let provider = provider();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        assert_eq!(provider.failed(Some(ip), now), FAILURE_DELAY);
        assert_eq!(provider.failed(Some(ip), now), FAILURE_DELAY * 2);
        for _ in 2..MAX_CLIENT_FAILURES {
            assert!(!provider.is_barred(Some(ip), now));
            assert!(provider.failed(Some(ip), now) <= MAX_DELAY);
        }
        assert!(provider.is_barred(Some(ip), now));
        assert!(!provider.is_barred(Some("192.0.2.2".parse().unwrap()), now));
        assert!(!provider.is_barred(Some(ip), now + FAILURE_MEMORY));
    }
}
