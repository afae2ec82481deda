//! Where a destination's mail goes: the hosts to try, in order, with their addresses.
//!
//! A bracketed route or smart host (`[relay.isp.test]:2525`) is that host alone, its name
//! resolved by the system resolver (so `/etc/hosts` works); an unbracketed one is looked up as
//! a mail domain. A destination domain goes to its MX hosts in preference order (or its own
//! address when it has none), resolved with the DNS module; an address literal
//! (`user@[192.0.2.1]`) goes straight to that address.
//!
//! When there is no host to try, the answer says whether that is permanent (`NoRoute`): a
//! domain or name that does not exist, a null MX or a bad literal fail the mail (5.1.x); DNS
//! trouble, a host without addresses, or mail that would loop back here defer it (4.4.x).
//!
//! Everything here comes from DNS or the configuration, never from the message; domains were
//! validated when the message was queued.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::address::Domain;
use crate::config::Config;
use crate::dns::{DnsError, MxList, Resolver};
use crate::route::{RelayHost, RelayTarget, SMTP_PORT};
use crate::smtp::EnhancedCode;

use super::outcome::{BAD_DESTINATION, DIRECTORY_FAILURE, NO_ANSWER, NULL_MX, ROUTING_LOOP};
use super::plan::Job;
use super::policy::Destination;

/// A host to try, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) name: Option<String>,
    pub(super) addr: SocketAddr,
}

/// Why a destination has no host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NoRoute {
    pub(super) permanent: bool,
    pub(super) status: EnhancedCode,
    pub(super) reason: String,
}

/// Finds the hosts for the jobs of one delivery thread, with one DNS resolver for them all.
pub(super) struct Router<'a> {
    config: &'a Config,
    resolver: Option<Resolver>,
}

impl<'a> Router<'a> {
    pub(super) fn new(config: &'a Config) -> Router<'a> {
        Router {
            config,
            resolver: None,
        }
    }

    /// The hosts to try for a destination, in order, with their addresses.
    pub(super) fn targets(&mut self, job: &Job) -> Result<Vec<Target>, NoRoute> {
        match (&job.relay, &job.destination) {
            (Some(relay), _) if !relay.mx_lookup => relay_targets(relay),
            (Some(relay), _) => match &relay.host {
                RelayHost::Name(name) => self.mx_targets(name, relay.port),
                RelayHost::Ip(ip) => Ok(vec![Target {
                    name: None,
                    addr: SocketAddr::new(*ip, relay.port),
                }]),
            },
            (None, Destination::Turnaround) => Err(NoRoute {
                permanent: false,
                status: NO_ANSWER,
                reason: "the ODMR connection is not routed".to_string(),
            }),
            (None, Destination::Domain(domain)) | (None, Destination::Relay(domain)) => {
                match Domain::parse(domain) {
                    Ok(d) => match d.literal() {
                        Some(ip) => Ok(literal_target(ip)),
                        None => self.mx_targets(&d, SMTP_PORT),
                    },
                    Err(e) => Err(NoRoute {
                        permanent: true,
                        status: BAD_DESTINATION,
                        reason: format!("bad destination domain: {e}"),
                    }),
                }
            }
        }
    }

    fn resolver(&mut self) -> Result<&Resolver, NoRoute> {
        if self.resolver.is_none() {
            let resolver = Resolver::for_program(&[], self.config, Duration::from_secs(10))
                .map_err(|e| NoRoute {
                    permanent: false,
                    status: DIRECTORY_FAILURE,
                    reason: format!("cannot set up DNS: {e}"),
                })?;
            self.resolver = Some(resolver);
        }
        self.resolver.as_ref().ok_or_else(|| NoRoute {
            permanent: false,
            status: DIRECTORY_FAILURE,
            reason: "no DNS resolver".to_string(),
        })
    }

    fn mx_targets(&mut self, domain: &Domain, port: u16) -> Result<Vec<Target>, NoRoute> {
        let hostnames = self.config.hostnames.clone();
        let resolver = self.resolver()?;
        let mut rng = fastrand::Rng::new();
        let list = resolver
            .mail_exchangers(domain, &hostnames, &mut rng)
            .map_err(|e| dns_no_route(domain, &e))?;
        let hosts = match list {
            MxList::NullMx => {
                return Err(NoRoute {
                    permanent: true,
                    status: NULL_MX,
                    reason: format!("{domain} accepts no mail (null MX)"),
                });
            }
            MxList::ThisHostIsBest { preference } => {
                return Err(NoRoute {
                    permanent: false,
                    status: ROUTING_LOOP,
                    reason: format!(
                        "mail for {domain} loops back to myself: this host is its best MX ({preference})"
                    ),
                });
            }
            list => list.hosts().to_vec(),
        };
        let mut targets = Vec::new();
        let mut last_error = None;
        for mx in hosts {
            let name = mx.host.as_str();
            match resolver.addresses(name) {
                Ok(addresses) => targets.extend(addresses.into_iter().map(|ip| Target {
                    name: Some(name.to_string()),
                    addr: SocketAddr::new(ip, port),
                })),
                Err(e) => last_error = Some(e),
            }
        }
        if targets.is_empty() {
            return Err(match last_error {
                Some(e) => dns_no_route(domain, &e),
                None => NoRoute {
                    permanent: false,
                    status: DIRECTORY_FAILURE,
                    reason: format!("no address for any MX host of {domain}"),
                },
            });
        }
        Ok(targets)
    }
}

/// A bracketed route: the host itself, no MX lookup; names through the system resolver.
fn relay_targets(relay: &RelayTarget) -> Result<Vec<Target>, NoRoute> {
    let name = match &relay.host {
        RelayHost::Name(name) => Some(name.to_string()),
        RelayHost::Ip(_) => None,
    };
    crate::smtp::resolve(&relay.host, relay.port, Default::default())
        .map(|addrs| {
            addrs
                .into_iter()
                .map(|addr| Target {
                    name: name.clone(),
                    addr,
                })
                .collect()
        })
        .map_err(|e| NoRoute {
            permanent: false,
            status: DIRECTORY_FAILURE,
            reason: e.to_string(),
        })
}

/// `user@[192.0.2.1]`: straight to that address, which `Domain::parse` has already read.
fn literal_target(ip: IpAddr) -> Vec<Target> {
    vec![Target {
        name: None,
        addr: SocketAddr::new(ip, SMTP_PORT),
    }]
}

/// A DNS failure as a routing verdict: a name that does not exist fails, the rest defers.
fn dns_no_route(domain: &Domain, err: &DnsError) -> NoRoute {
    if err.is_transient() {
        NoRoute {
            permanent: false,
            status: DIRECTORY_FAILURE,
            reason: format!("DNS lookup for {domain} failed: {err}"),
        }
    } else {
        NoRoute {
            permanent: true,
            status: BAD_DESTINATION,
            reason: format!("host or domain name not found: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Query;
    use crate::queue::QueueId;

    fn to(ip: &str, port: u16) -> Vec<Target> {
        vec![Target {
            name: None,
            addr: SocketAddr::new(ip.parse().unwrap(), port),
        }]
    }

    fn refusal(permanent: bool, status: &str, reason: &str) -> NoRoute {
        NoRoute {
            permanent,
            status: EnhancedCode::parse(status).unwrap(),
            reason: reason.into(),
        }
    }

    #[test]
    fn an_address_literal_is_its_own_target() {
        let cases = [
            ("[192.0.2.1]", Ok(to("192.0.2.1", SMTP_PORT))),
            ("[IPv6:2001:db8::1]", Ok(to("2001:db8::1", SMTP_PORT))),
            ("[ipv6:2001:db8::1]", Ok(to("2001:db8::1", SMTP_PORT))),
            ("[ipv6:::1]", Ok(to("::1", SMTP_PORT))),
            ("[IPV6:2001:db8::2]", Ok(to("2001:db8::2", SMTP_PORT))),
            ("customer.test", Err(())),
        ];
        for (domain, targets) in cases {
            let domain = Domain::parse(domain).unwrap();
            let found = domain.literal().map(literal_target).ok_or(());
            assert_eq!(found, targets, "{domain}");
        }
    }

    #[test]
    fn a_name_that_does_not_exist_fails_and_other_dns_trouble_defers() {
        let domain = Domain::parse("customer.test").unwrap();
        let name = || "customer.test".to_string();
        let cases = [
            (
                DnsError::NxDomain {
                    name: name(),
                    query: Query::Mx,
                },
                refusal(
                    true,
                    "5.1.2",
                    "host or domain name not found: customer.test: no such domain (NXDOMAIN)",
                ),
            ),
            (
                DnsError::NoData {
                    name: name(),
                    query: Query::A,
                },
                refusal(
                    true,
                    "5.1.2",
                    &format!(
                        "host or domain name not found: customer.test: no {} record",
                        Query::A
                    ),
                ),
            ),
            (
                DnsError::ServFail {
                    name: name(),
                    query: Query::Mx,
                },
                refusal(
                    false,
                    "4.4.3",
                    &format!(
                        "DNS lookup for customer.test failed: customer.test {}: name server \
                         failure (SERVFAIL)",
                        Query::Mx
                    ),
                ),
            ),
            (
                DnsError::Timeout {
                    name: name(),
                    query: Query::Mx,
                    timeout: Duration::from_secs(10),
                },
                refusal(
                    false,
                    "4.4.3",
                    &format!(
                        "DNS lookup for customer.test failed: customer.test {}: no answer from \
                         the name servers within 10s",
                        Query::Mx
                    ),
                ),
            ),
            (
                DnsError::Other {
                    name: name(),
                    query: Query::Mx,
                    reason: "REFUSED".into(),
                },
                refusal(
                    false,
                    "4.4.3",
                    &format!(
                        "DNS lookup for customer.test failed: customer.test {}: REFUSED",
                        Query::Mx
                    ),
                ),
            ),
        ];
        for (error, no_route) in cases {
            assert_eq!(dns_no_route(&domain, &error), no_route, "{error}");
        }
    }

    #[test]
    fn targets_without_dns() {
        let config = Config::default();
        let job = |destination: Destination, relay: Option<RelayTarget>| Job {
            destination,
            relay,
            ids: vec![QueueId::parse("1xWNve3zklWKyw").unwrap()],
        };
        let relay = |text: &str| {
            let target = RelayTarget::parse(text).unwrap();
            job(Destination::Relay(target.to_string()), Some(target))
        };
        let domain = |text: &str| job(Destination::Domain(text.into()), None);
        let cases = [
            (
                "a bracketed address",
                relay("[192.0.2.7]:2525"),
                Ok(to("192.0.2.7", 2525)),
            ),
            (
                "an address",
                relay("192.0.2.7"),
                Ok(to("192.0.2.7", SMTP_PORT)),
            ),
            ("an IPv6 address", relay("[::1]:2526"), Ok(to("::1", 2526))),
            (
                "an address to look up as a mail domain",
                job(
                    Destination::Relay("192.0.2.8:26".into()),
                    Some(RelayTarget {
                        host: RelayHost::Ip("192.0.2.8".parse().unwrap()),
                        port: 26,
                        mx_lookup: true,
                    }),
                ),
                Ok(to("192.0.2.8", 26)),
            ),
            (
                "a literal domain",
                domain("[192.0.2.1]"),
                Ok(to("192.0.2.1", SMTP_PORT)),
            ),
            (
                "a literal IPv6 domain",
                domain("[ipv6:2001:db8::2]"),
                Ok(to("2001:db8::2", SMTP_PORT)),
            ),
            (
                "a domain that does not parse",
                domain("bad..test"),
                Err(refusal(
                    true,
                    "5.1.2",
                    &format!(
                        "bad destination domain: {}",
                        Domain::parse("bad..test").unwrap_err()
                    ),
                )),
            ),
            (
                "a relay destination without its target",
                job(Destination::Relay("[192.0.2.9]".into()), None),
                Ok(to("192.0.2.9", SMTP_PORT)),
            ),
        ];
        let mut router = Router::new(&config);
        for (why, job, targets) in cases {
            assert_eq!(router.targets(&job), targets, "{why}");
        }
        assert!(router.resolver.is_none(), "no DNS was needed");
    }
}
