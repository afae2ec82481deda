//! The blocking resolver over hickory-resolver: absolute names only, UDP then TCP, each
//! failure classified into a [`DnsError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};

use crate::address::Domain;

use super::{
    DnsError, MailExchanger, MxList, MxRecord, Ordered, Query, chosen_nameservers, order_exchangers,
};

/// A blocking DNS resolver. Cheap to keep for a whole program run; not shared across threads.
pub struct Resolver {
    runtime: tokio::runtime::Runtime,
    inner: TokioResolver,
    timeout: Duration,
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

    /// The IPv4 then the IPv6 addresses of `host`; an error only when neither query gave an
    /// address and one of them failed.
    pub fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let v4 = self.ipv4(host);
        let v6 = self.ipv6(host);
        let addresses: Vec<IpAddr> = v4
            .iter()
            .flatten()
            .map(|ip| IpAddr::V4(*ip))
            .chain(v6.iter().flatten().map(|ip| IpAddr::V6(*ip)))
            .collect();
        match (addresses.is_empty(), v4, v6) {
            (true, Err(e), _) | (true, _, Err(e)) => Err(e),
            _ => Ok(addresses),
        }
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

pub(super) fn classify(err: NetError, name: &str, query: Query, timeout: Duration) -> DnsError {
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
