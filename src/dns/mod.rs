//! DNS for mail: MX lists, host addresses, reverse names, and the RFC 5321 §5 routing rules.
//!
//! A blocking [`Resolver`] over hickory-resolver. It asks the system's name servers
//! (`/etc/resolv.conf`) or, when given, an explicit list (`--nameserver IP[:PORT]`, the
//! configuration's `dns.nameservers`), over UDP with a retry over TCP when UDP fails or the
//! answer is truncated. Every query is for an absolute name: the resolv.conf search list and
//! `/etc/hosts` are never consulted, so what this module sees is what another mail server on
//! the Internet sees.
//!
//! [`Resolver::mail_exchangers`] turns a domain into the hosts to try, in order: MX records
//! sorted by preference with equal preferences shuffled, the domain itself when it has no MX
//! (implicit MX), a null MX (RFC 7505) as its own outcome, and the backup-MX rule: when this
//! host's names are among the exchangers, only hosts with a strictly lower preference than our
//! own best entry are kept, so a backup MX never relays to itself or to an equal peer.
//!
//! ```no_run
//! use std::time::Duration;
//! use etrnq::address::Domain;
//! use etrnq::dns::{MxList, Resolver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let resolver = Resolver::with_nameservers(&["127.0.0.1:53".parse()?], Duration::from_secs(5))?;
//! let this_host = [Domain::parse("mx2.isp.example")?];
//! let domain = Domain::parse("customer.example")?;
//! match resolver.mail_exchangers(&domain, &this_host, &mut fastrand::Rng::new()) {
//!     Ok(MxList::NullMx) => println!("{domain} accepts no mail: bounce now"),
//!     Ok(MxList::ThisHostIsBest { .. }) => println!("hold mail for {domain} here"),
//!     Ok(list) => {
//!         for mx in list.hosts() {
//!             println!("try {} (MX {})", mx.host, mx.preference);
//!         }
//!     }
//!     Err(err) if err.is_transient() => println!("defer: {err}"),
//!     Err(err) => println!("bounce: {err}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Promises: failures are typed ([`DnsError`]): a name that does not exist (NXDOMAIN), a name
//! without records of the asked type (NODATA), a server failure (SERVFAIL), a timeout, anything
//! else. SERVFAIL and timeouts are temporary and never reported as "no such domain". Nothing is
//! cached between queries, so a record changed a second ago is seen by the next query.
//!
//! Security: answers are untrusted network input: names from answers become
//! [`Domain`](crate::address::Domain)s only after validation, and records that do not validate
//! are reported, never used as hosts. No DNSSEC validation is done; a forged answer can misroute
//! mail, as with any non-validating MTA.
//!
//! Limits: each query waits at most the configured timeout per try and is tried twice. Lookups run
//! one after another on a small runtime owned by the resolver; a caller that wants parallel
//! lookups uses one resolver per thread.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::rr::RecordType;

use crate::sysexits::{Status, Sysexit};

mod exchangers;
mod resolver;

pub use exchangers::{MailExchanger, MxList, MxRecord, Ordered, order_exchangers};
pub use resolver::Resolver;

#[cfg(test)]
mod tests;

/// The record types this module asks for, named in errors and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    Mx,
    A,
    Aaaa,
    Ptr,
    Cname,
}

impl Query {
    fn record_type(self) -> RecordType {
        match self {
            Query::Mx => RecordType::MX,
            Query::A => RecordType::A,
            Query::Aaaa => RecordType::AAAA,
            Query::Ptr => RecordType::PTR,
            Query::Cname => RecordType::CNAME,
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Query::Mx => "MX",
            Query::A => "A",
            Query::Aaaa => "AAAA",
            Query::Ptr => "PTR",
            Query::Cname => "CNAME",
        })
    }
}

/// Why a lookup gave no records. `name` is the name asked for, `query` the record type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist at all (NXDOMAIN): permanent.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain { name: String, query: Query },
    /// The name exists but has no records of this type (NODATA).
    #[error("{name}: no {query} record")]
    NoData { name: String, query: Query },
    /// The name server could not answer (SERVFAIL): temporary, often a broken delegation.
    #[error("{name} {query}: name server failure (SERVFAIL)")]
    ServFail { name: String, query: Query },
    /// No answer in time: temporary.
    #[error("{name} {query}: no answer from the name servers within {}s", timeout.as_secs_f32())]
    Timeout {
        name: String,
        query: Query,
        timeout: Duration,
    },
    /// Anything else: another response code (REFUSED, FORMERR), a network error, a bad name.
    #[error("{name} {query}: {reason}")]
    Other {
        name: String,
        query: Query,
        reason: String,
    },
    /// The resolver could not be set up (an unreadable `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
}

impl DnsError {
    /// True when asking again later may give another answer: SERVFAIL, timeouts, network
    /// trouble. NXDOMAIN and NODATA are answers, not failures.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }

    pub fn kind(&self) -> DnsErrorKind {
        match self {
            DnsError::NxDomain { .. } => DnsErrorKind::NxDomain,
            DnsError::NoData { .. } => DnsErrorKind::NoData,
            DnsError::ServFail { .. } => DnsErrorKind::ServFail,
            DnsError::Timeout { .. } => DnsErrorKind::Timeout,
            DnsError::Other { .. } | DnsError::Setup(_) => DnsErrorKind::Error,
        }
    }
}

/// The kind of a [`DnsError`], for callers that decide on it and for machine-readable output,
/// where it is written `nxdomain`, `nodata`, `servfail`, `timeout` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsErrorKind {
    NxDomain,
    NoData,
    ServFail,
    Timeout,
    Error,
}

impl DnsErrorKind {
    /// The tag machine-readable output writes.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsErrorKind::NxDomain => "nxdomain",
            DnsErrorKind::NoData => "nodata",
            DnsErrorKind::ServFail => "servfail",
            DnsErrorKind::Timeout => "timeout",
            DnsErrorKind::Error => "error",
        }
    }

    /// True when the DNS could not answer, as opposed to answering "no".
    pub fn is_transient(self) -> bool {
        !matches!(self, DnsErrorKind::NxDomain | DnsErrorKind::NoData)
    }
}

impl fmt::Display for DnsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind equals its tag, so that a report can be checked against the words it prints.
impl PartialEq<&str> for DnsErrorKind {
    fn eq(&self, tag: &&str) -> bool {
        self.as_str() == *tag
    }
}

impl Sysexit for DnsError {
    fn status(&self) -> Status {
        match self {
            DnsError::NxDomain { .. } | DnsError::NoData { .. } => Status::NoHost,
            DnsError::ServFail { .. } | DnsError::Timeout { .. } | DnsError::Other { .. } => {
                Status::TempFail
            }
            DnsError::Setup(_) => Status::OsErr,
        }
    }
}

/// The name servers a program asks: `given` on its command line, else the configuration's
/// `dns.nameservers`; `None` for the system's (`/etc/resolv.conf`).
pub fn chosen_nameservers<'a>(
    given: &'a [SocketAddr],
    config: &'a crate::config::Config,
) -> Option<&'a [SocketAddr]> {
    match (given, config.dns_nameservers.as_slice()) {
        ([], []) => None,
        ([], configured) => Some(configured),
        (given, _) => Some(given),
    }
}
