//! DNS for mail: MX lists, host addresses, reverse names, and the RFC 5321 §5 routing rules.
//!
//! # Description
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
//! # Summary
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
//! # Promises
//!
//! Failures are typed ([`DnsError`]): a name that does not exist (NXDOMAIN), a name without
//! records of the asked type (NODATA), a server failure (SERVFAIL), a timeout, anything else.
//! SERVFAIL and timeouts are temporary and never reported as "no such domain". Nothing is
//! cached between queries, so a record changed a second ago is seen by the next query.
//!
//! # Security
//!
//! Answers are untrusted network input: names from answers become [`Domain`]s only after
//! validation, and records that do not validate are reported, never used as hosts. No DNSSEC
//! validation is done; a forged answer can misroute mail, as with any non-validating MTA.
//!
//! # Limits
//!
//! Each query waits at most the configured timeout per try and is tried twice. Lookups run
//! one after another on a small runtime owned by the resolver; a caller that wants parallel
//! lookups uses one resolver per thread.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::address::Domain;
use crate::sysexits::{Status, Sysexit};

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

/// One MX record as published: the exchange is the name in ASCII without its final dot, or `.`
/// for the root (the null MX target). It may not be a usable host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

impl MxRecord {
    /// True for the RFC 7505 null MX target `.`.
    pub fn is_root(&self) -> bool {
        self.exchange == "."
    }
}

/// A host to deliver to, with the preference it was published at (0 for an implicit MX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailExchanger {
    pub preference: u16,
    pub host: Domain,
}

/// Where mail for a domain goes, after RFC 5321 §5 and RFC 7505.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxList {
    /// Hosts from MX records, in the order to try them; never empty.
    Exchangers(Vec<MailExchanger>),
    /// No MX records, but the domain has an address: it is its own mail host.
    Implicit(MailExchanger),
    /// RFC 7505 null MX: the domain accepts no mail; fail at once, do not retry.
    NullMx,
    /// This host is the best (lowest preference) exchanger listed: there is no better host to
    /// relay to. Mail for the domain must stay here (a backup MX holds it for ETRN) or is
    /// delivered locally.
    ThisHostIsBest { preference: u16 },
}

impl MxList {
    /// The hosts to try, in order; empty for a null MX or when this host is the best MX.
    pub fn hosts(&self) -> &[MailExchanger] {
        match self {
            MxList::Exchangers(hosts) => hosts,
            MxList::Implicit(host) => std::slice::from_ref(host),
            MxList::NullMx | MxList::ThisHostIsBest { .. } => &[],
        }
    }
}

/// The outcome of applying RFC 5321 §5 to a set of MX records, before any implicit-MX lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordered {
    /// Usable hosts in the order to try them; empty when the records held no usable name.
    Hosts(Vec<MailExchanger>),
    NullMx,
    ThisHostIsBest {
        preference: u16,
    },
}

/// Sorts MX records by preference and shuffles each group of equal preference with `rng`, drops
/// targets that are not host names (the root, names that fail [`Domain`] validation), recognises
/// the null MX, and applies the backup-MX rule for `this_host`'s names.
pub fn order_exchangers(
    records: &[MxRecord],
    this_host: &[Domain],
    rng: &mut fastrand::Rng,
) -> Ordered {
    if let [only] = records
        && only.is_root()
    {
        return Ordered::NullMx;
    }
    let mut hosts: Vec<MailExchanger> = records
        .iter()
        .filter(|record| !record.is_root())
        .filter_map(|record| {
            let host = Domain::parse(&record.exchange).ok()?;
            Some(MailExchanger {
                preference: record.preference,
                host,
            })
        })
        .filter(|mx| !mx.host.is_literal())
        .collect();
    hosts.sort_by_key(|mx| mx.preference);
    shuffle_equal_preferences(&mut hosts, rng);

    let own_best = hosts
        .iter()
        .filter(|mx| this_host.contains(&mx.host))
        .map(|mx| mx.preference)
        .min();
    if let Some(own) = own_best {
        hosts.retain(|mx| mx.preference < own);
        if hosts.is_empty() {
            return Ordered::ThisHostIsBest { preference: own };
        }
    }
    Ordered::Hosts(hosts)
}

fn shuffle_equal_preferences(hosts: &mut [MailExchanger], rng: &mut fastrand::Rng) {
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].preference;
        let end = hosts[start..]
            .iter()
            .position(|mx| mx.preference != preference)
            .map_or(hosts.len(), |offset| start + offset);
        rng.shuffle(&mut hosts[start..end]);
        start = end;
    }
}

/// A blocking DNS resolver. Cheap to keep for a whole program run; not shared across threads.
pub struct Resolver {
    runtime: tokio::runtime::Runtime,
    inner: TokioResolver,
    timeout: Duration,
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

impl Resolver {
    /// A resolver over the system's name servers (`/etc/resolv.conf`), with our timeout.
    pub fn system(timeout: Duration) -> Result<Resolver, DnsError> {
        Resolver::build(None, timeout)
    }

    /// A resolver that asks exactly these servers, in this order (UDP, then TCP on failure).
    pub fn with_nameservers(
        nameservers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Resolver, DnsError> {
        if nameservers.is_empty() {
            return Err(DnsError::Setup("no name servers given".into()));
        }
        Resolver::build(Some(nameservers), timeout)
    }

    /// The resolver a program should use: `nameservers` from the command line when given, else
    /// the configuration's `dns.nameservers`, else the system's.
    pub fn for_program(
        nameservers: &[SocketAddr],
        config: &crate::config::Config,
        timeout: Duration,
    ) -> Result<Resolver, DnsError> {
        match chosen_nameservers(nameservers, config) {
            None => Resolver::system(timeout),
            Some(servers) => Resolver::with_nameservers(servers, timeout),
        }
    }

    fn build(nameservers: Option<&[SocketAddr]>, timeout: Duration) -> Result<Resolver, DnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        // The provider binds to the runtime it is created in.
        let _entered = runtime.enter();
        let provider = TokioRuntimeProvider::default();
        let mut builder = match nameservers {
            Some(servers) => {
                let config = ResolverConfig::from_name_servers(
                    servers.iter().map(|server| nameserver(*server)).collect(),
                );
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| DnsError::Setup(format!("reading /etc/resolv.conf: {e}")))?,
        };
        let options = builder.options_mut();
        options.timeout = timeout;
        options.attempts = 1;
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.try_tcp_on_error = true;
        options.preserve_intermediates = true;
        if nameservers.is_some() {
            options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        }
        let inner = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver {
            runtime,
            inner,
            timeout,
        })
    }

    /// The MX records of `domain` as published, unsorted.
    pub fn mx(&self, domain: &Domain) -> Result<Vec<MxRecord>, DnsError> {
        let answers = self.lookup(domain.as_str(), Query::Mx)?;
        Ok(answers
            .into_iter()
            .filter_map(|data| match data {
                RData::MX(mx) => Some(MxRecord {
                    preference: mx.preference,
                    exchange: display_name(&mx.exchange),
                }),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 addresses of `host` (A records, following CNAMEs).
    pub fn ipv4(&self, host: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let answers = self.lookup(host, Query::A)?;
        Ok(answers
            .into_iter()
            .filter_map(|data| match data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// The IPv6 addresses of `host` (AAAA records, following CNAMEs).
    pub fn ipv6(&self, host: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        let answers = self.lookup(host, Query::Aaaa)?;
        Ok(answers
            .into_iter()
            .filter_map(|data| match data {
                RData::AAAA(aaaa) => Some(aaaa.0),
                _ => None,
            })
            .collect())
    }

    /// The reverse names (PTR) of an address.
    pub fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let mut name = Name::from(ip);
        name.set_fqdn(true);
        let answers = self.lookup_name(name, &ip.to_string(), Query::Ptr)?;
        Ok(answers
            .into_iter()
            .filter_map(|data| match data {
                RData::PTR(ptr) => Some(display_name(&ptr.0)),
                _ => None,
            })
            .collect())
    }

    /// The target when `name` is an alias (a CNAME), else `None`. RFC 5321 §5.1 wants MX targets
    /// to be canonical names; many MTAs tolerate aliases, some do not.
    pub fn cname(&self, name: &str) -> Result<Option<String>, DnsError> {
        let answers = match self.lookup(name, Query::Cname) {
            Ok(answers) => answers,
            Err(DnsError::NoData { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(answers.into_iter().find_map(|data| match data {
            RData::CNAME(cname) => Some(display_name(&cname.0)),
            _ => None,
        }))
    }

    /// Where mail for `domain` goes (RFC 5321 §5, RFC 7505), with `this_host`'s names excluded as
    /// the backup-MX rule wants and equal preferences shuffled by `rng`. A domain without MX
    /// records is its own mail host when it has an A or AAAA record; without either, the NODATA
    /// or NXDOMAIN answer is the error.
    pub fn mail_exchangers(
        &self,
        domain: &Domain,
        this_host: &[Domain],
        rng: &mut fastrand::Rng,
    ) -> Result<MxList, DnsError> {
        let records = match self.mx(domain) {
            Ok(records) => records,
            Err(DnsError::NoData { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        if records.is_empty() {
            return self.implicit_exchanger(domain, this_host);
        }
        match order_exchangers(&records, this_host, rng) {
            Ordered::NullMx => Ok(MxList::NullMx),
            Ordered::ThisHostIsBest { preference } => Ok(MxList::ThisHostIsBest { preference }),
            Ordered::Hosts(hosts) if hosts.is_empty() => Err(DnsError::Other {
                name: domain.to_string(),
                query: Query::Mx,
                reason: "no MX record names a usable host".into(),
            }),
            Ordered::Hosts(hosts) => Ok(MxList::Exchangers(hosts)),
        }
    }

    fn implicit_exchanger(
        &self,
        domain: &Domain,
        this_host: &[Domain],
    ) -> Result<MxList, DnsError> {
        let v4 = self.ipv4(domain.as_str());
        let has_address = match v4 {
            Ok(ref addresses) if !addresses.is_empty() => true,
            Err(ref e) if e.is_transient() => return Err(e.clone()),
            _ => match self.ipv6(domain.as_str()) {
                Ok(addresses) => !addresses.is_empty(),
                Err(DnsError::NoData { .. }) => false,
                Err(e) => return Err(e),
            },
        };
        if !has_address {
            // The A answer says more than the AAAA one when the name does not exist.
            return Err(v4.err().unwrap_or(DnsError::NoData {
                name: domain.to_string(),
                query: Query::A,
            }));
        }
        if this_host.contains(domain) {
            return Ok(MxList::ThisHostIsBest { preference: 0 });
        }
        Ok(MxList::Implicit(MailExchanger {
            preference: 0,
            host: domain.clone(),
        }))
    }

    fn lookup(&self, name: &str, query: Query) -> Result<Vec<RData>, DnsError> {
        let other = |reason: String| DnsError::Other {
            name: name.to_string(),
            query,
            reason,
        };
        let mut absolute = Name::from_ascii(name).map_err(|e| other(e.to_string()))?;
        absolute.set_fqdn(true);
        self.lookup_name(absolute, name, query)
    }

    fn lookup_name(&self, name: Name, shown: &str, query: Query) -> Result<Vec<RData>, DnsError> {
        let record_type = query.record_type();
        let result = self.runtime.block_on(self.inner.lookup(name, record_type));
        let lookup = result.map_err(|e| classify(e, shown, query, self.timeout))?;
        let data: Vec<RData> = lookup
            .answers()
            .iter()
            .filter(|record| record.record_type() == record_type)
            .map(|record| record.data.clone())
            .collect();
        if data.is_empty() {
            return Err(DnsError::NoData {
                name: shown.to_string(),
                query,
            });
        }
        Ok(data)
    }
}

/// A name server at `addr`: UDP first, TCP for truncated answers and after UDP failures.
fn nameserver(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// A name as mail administrators write it: ASCII, no final dot; the root stays `.`.
fn display_name(name: &Name) -> String {
    if name.is_root() {
        return ".".to_string();
    }
    let ascii = name.to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_string()
}

fn classify(err: NetError, name: &str, query: Query, timeout: Duration) -> DnsError {
    let name = name.to_string();
    let code = match &err {
        NetError::Timeout => {
            return DnsError::Timeout {
                name,
                query,
                timeout,
            };
        }
        NetError::Dns(WireError::NoRecordsFound(NoRecords { response_code, .. })) => *response_code,
        NetError::Dns(WireError::ResponseCode(code)) => *code,
        _ => {
            return DnsError::Other {
                name,
                query,
                reason: err.to_string(),
            };
        }
    };
    match code {
        ResponseCode::NXDomain => DnsError::NxDomain { name, query },
        ResponseCode::NoError => DnsError::NoData { name, query },
        ResponseCode::ServFail => DnsError::ServFail { name, query },
        other => DnsError::Other {
            name,
            query,
            reason: format!("name server answered {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, exchange: &str) -> MxRecord {
        MxRecord {
            preference,
            exchange: exchange.to_string(),
        }
    }

    fn domain(name: &str) -> Domain {
        Domain::parse(name).unwrap()
    }

    fn names(ordered: &Ordered) -> Vec<(u16, String)> {
        match ordered {
            Ordered::Hosts(hosts) => hosts
                .iter()
                .map(|mx| (mx.preference, mx.host.to_string()))
                .collect(),
            other => panic!("expected hosts, got {other:?}"),
        }
    }

    #[test]
    fn sorted_by_preference() {
        let records = [
            mx(30, "c.example"),
            mx(10, "a.example"),
            mx(20, "b.example"),
        ];
        let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
        assert_eq!(
            names(&ordered),
            [
                (10, "a.example".to_string()),
                (20, "b.example".to_string()),
                (30, "c.example".to_string())
            ]
        );
    }

    #[test]
    fn equal_preferences_are_shuffled_within_their_group_only() {
        let records = [
            mx(20, "b1.example"),
            mx(20, "b2.example"),
            mx(20, "b3.example"),
            mx(10, "a.example"),
            mx(30, "c.example"),
        ];
        let mut seen_first_of_group = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(seed));
            let hosts = names(&ordered);
            assert_eq!(hosts[0], (10, "a.example".to_string()));
            assert_eq!(hosts[4], (30, "c.example".to_string()));
            assert!(hosts[1..4].iter().all(|(p, _)| *p == 20));
            seen_first_of_group.insert(hosts[1].1.clone());
        }
        assert_eq!(
            seen_first_of_group.len(),
            3,
            "equal preferences never shuffled"
        );
    }

    #[test]
    fn same_seed_same_order() {
        let records = [
            mx(10, "a.example"),
            mx(10, "b.example"),
            mx(10, "c.example"),
        ];
        let first = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(7));
        let again = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(7));
        assert_eq!(first, again);
    }

    #[test]
    fn null_mx_is_its_own_outcome() {
        let ordered = order_exchangers(&[mx(0, ".")], &[], &mut fastrand::Rng::with_seed(1));
        assert_eq!(ordered, Ordered::NullMx);
    }

    #[test]
    fn a_root_target_among_others_is_skipped() {
        let records = [mx(0, "."), mx(10, "a.example")];
        let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&ordered), [(10, "a.example".to_string())]);
    }

    #[test]
    fn backup_mx_keeps_only_strictly_better_hosts() {
        let records = [
            mx(10, "mx.customer.example"),
            mx(20, "MX2.isp.example"),
            mx(20, "mx3.isp.example"),
            mx(30, "mx4.isp.example"),
        ];
        let ours = [domain("mx2.isp.example")];
        let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&ordered), [(10, "mx.customer.example".to_string())]);
    }

    #[test]
    fn our_lowest_entry_counts_when_listed_twice() {
        let records = [
            mx(5, "other.example"),
            mx(10, "mx2.isp.example"),
            mx(50, "mx2.isp.example"),
        ];
        let ours = [domain("mx2.isp.example")];
        let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&ordered), [(5, "other.example".to_string())]);
    }

    #[test]
    fn best_mx_is_a_distinct_outcome() {
        let records = [mx(10, "mx.customer.example"), mx(10, "peer.example")];
        let ours = [domain("alias.example"), domain("mx.customer.example")];
        let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
        assert_eq!(ordered, Ordered::ThisHostIsBest { preference: 10 });
    }

    #[test]
    fn unusable_targets_are_dropped() {
        let records = [mx(10, "bad name.example"), mx(20, "good.example")];
        let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
        assert_eq!(names(&ordered), [(20, "good.example".to_string())]);
    }

    #[test]
    fn mx_list_hosts() {
        assert!(MxList::NullMx.hosts().is_empty());
        assert!(MxList::ThisHostIsBest { preference: 10 }.hosts().is_empty());
        let implicit = MxList::Implicit(MailExchanger {
            preference: 0,
            host: domain("customer.example"),
        });
        assert_eq!(implicit.hosts().len(), 1);
    }

    #[test]
    fn error_classes() {
        let servfail = DnsError::ServFail {
            name: "x.example".into(),
            query: Query::Mx,
        };
        let nx = DnsError::NxDomain {
            name: "x.example".into(),
            query: Query::Mx,
        };
        assert!(servfail.is_transient());
        assert!(!nx.is_transient());
        assert_eq!(servfail.status(), Status::TempFail);
        assert_eq!(nx.status(), Status::NoHost);
        assert_eq!(nx.to_string(), "x.example: no such domain (NXDOMAIN)");
        assert_ne!(servfail.kind(), nx.kind());
    }

    #[test]
    fn wire_errors_are_classified() {
        let timeout = Duration::from_secs(1);
        let servfail = NetError::Dns(WireError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(
            classify(servfail, "x.example", Query::Mx, timeout).kind(),
            "servfail"
        );
        let refused = NetError::Dns(WireError::ResponseCode(ResponseCode::Refused));
        assert_eq!(
            classify(refused, "x.example", Query::Mx, timeout).kind(),
            "error"
        );
        assert_eq!(
            classify(NetError::Timeout, "x.example", Query::A, timeout).kind(),
            "timeout"
        );
    }
}
