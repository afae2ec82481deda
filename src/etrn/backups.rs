//! `etrn-send --mx`: ETRN to every backup MX host of a domain at once.
//!
//! An ISP often runs two or three backup MX hosts at one preference, and the site's mail may wait
//! on any of them. The hosts are found in the domain's MX records: every host but those at the
//! best (lowest) preference, which is the site's own, and but this host's own names. Each is asked
//! in its own session, in parallel, so that one slow or dead host does not hold the others back;
//! the worst outcome decides the exit status, as it does for one server.
//!
//! # Promises
//!
//! - Only hosts named in the domain's MX records are contacted; a record whose target is not a
//!   host name is left out, as delivery leaves it out.
//! - Every host's answers are printed, prefixed with the host, in the order of the records; a
//!   host whose session failed gets one line on standard error.
//!
//! # Limits
//!
//! At most [`MAX_HOSTS`] hosts are asked, the first ones by preference: a domain with more backup
//! MX hosts than that is a misconfiguration, not a reason to open dozens of connections.

use std::io::Write;
use std::net::IpAddr;

use anyhow::Context;

use super::{Report, Request, severity};
use crate::address::Domain;
use crate::dns::{DnsError, MxRecord, Resolver};
use crate::route::RelayHost;
use crate::smtp::SmtpError;
use crate::sysexits::{Failure, Status};

/// How many backup MX hosts one run asks at most.
pub const MAX_HOSTS: usize = 16;

/// The hosts to send ETRN to for a domain with MX `records`: every host but those at the best
/// preference and those named in `this_host`, each once, by preference, then as published.
pub fn backup_hosts(
    domain: &Domain,
    records: &[MxRecord],
    this_host: &[Domain],
) -> Result<Vec<Domain>, Failure> {
    if records.iter().any(MxRecord::is_root) {
        return Err(Failure::new(
            Status::NoHost,
            format!("{domain} publishes a null MX: it accepts no mail"),
        ));
    }
    let best = records
        .iter()
        .map(|r| r.preference)
        .min()
        .ok_or_else(|| Failure::new(Status::NoHost, format!("{domain} has no MX records")))?;
    let mut records: Vec<&MxRecord> = records.iter().filter(|r| r.preference > best).collect();
    records.sort_by_key(|r| r.preference);
    let mut hosts: Vec<Domain> = Vec::new();
    for record in records {
        let Ok(host) = Domain::parse(&record.exchange) else {
            continue;
        };
        let same = |other: &Domain| other.as_str().eq_ignore_ascii_case(host.as_str());
        if !this_host.iter().any(same) && !hosts.iter().any(same) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return Err(Failure::new(
            Status::NoHost,
            format!(
                "{domain} has no backup MX: every MX host has preference {best} or is this host"
            ),
        ));
    }
    hosts.truncate(MAX_HOSTS);
    Ok(hosts)
}

/// A backup MX host and its addresses, or why it has none.
#[derive(Debug)]
pub struct Backup {
    pub host: Domain,
    pub addresses: Result<Vec<IpAddr>, DnsError>,
}

/// Finds `domain`'s backup MX hosts and their addresses through `resolver`, so that one
/// resolver (the configuration's `dns.nameservers`, or `--nameserver`) answers every question.
pub fn find_backups(
    resolver: &Resolver,
    domain: &Domain,
    this_host: &[Domain],
) -> anyhow::Result<Vec<Backup>> {
    let records = resolver
        .mx(domain)
        .with_context(|| format!("looking up the MX records of {domain}"))?;
    Ok(backup_hosts(domain, &records, this_host)?
        .into_iter()
        .map(|host| Backup {
            addresses: resolver.addresses(host.as_str()),
            host,
        })
        .collect())
}

/// What asking every host came to.
#[derive(Debug)]
pub struct Fanout {
    /// The worst outcome of all hosts.
    pub status: Status,
    /// One line for each host whose session failed: `HOST: what went wrong`.
    pub failures: Vec<String>,
}

/// Sends `template`'s ETRN arguments to each of `backups` at once and writes each answer to
/// `out` as `HOST ARGUMENT REPLY`, host by host in the order given.
pub fn run_on_hosts(
    template: &Request,
    backups: &[Backup],
    out: &mut dyn Write,
) -> anyhow::Result<Fanout> {
    let reports: Vec<Report> = std::thread::scope(|scope| {
        let sessions: Vec<_> = backups
            .iter()
            .map(|backup| {
                let request = Request {
                    host: RelayHost::Name(backup.host.clone()),
                    addresses: backup.addresses.as_ref().cloned().unwrap_or_default(),
                    ..template.clone()
                };
                let unresolved = match &backup.addresses {
                    Ok(found) if found.is_empty() => Some("the name has no address".to_string()),
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                scope.spawn(move || match unresolved {
                    None => super::send(&request),
                    Some(detail) => Report {
                        outcomes: Vec::new(),
                        failure: Some(SmtpError::NoHost {
                            host: request.host.to_string(),
                            detail,
                        }),
                    },
                })
            })
            .collect();
        sessions
            .into_iter()
            .map(|session| {
                session
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut fanout = Fanout {
        status: Status::Ok,
        failures: Vec::new(),
    };
    for (backup, report) in backups.iter().zip(&reports) {
        let host = &backup.host;
        for outcome in &report.outcomes {
            writeln!(out, "{host} {outcome}").context("writing to standard output")?;
        }
        if let Some(failure) = &report.failure {
            fanout.failures.push(format!("{host}: {failure}"));
        }
        let status = report.status();
        if severity(status) > severity(fanout.status) {
            fanout.status = status;
        }
    }
    out.flush().context("writing to standard output")?;
    Ok(fanout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(list: &[(u16, &str)]) -> Vec<MxRecord> {
        list.iter()
            .map(|&(preference, exchange)| MxRecord {
                preference,
                exchange: exchange.to_string(),
            })
            .collect()
    }

    fn domain(text: &str) -> Domain {
        Domain::parse(text).unwrap()
    }

    fn names(hosts: &[Domain]) -> Vec<&str> {
        hosts.iter().map(Domain::as_str).collect()
    }

    #[test]
    fn the_site_and_this_host_are_left_out() {
        let site = domain("customer.example");
        let mx = records(&[
            (20, "mx2.isp.example"),
            (10, "mail.customer.example"),
            (20, "MX1.isp.example"),
            (30, "mx3.isp.example"),
            (20, "mx2.isp.example"),
            (20, "not a host"),
        ]);
        let hosts = backup_hosts(&site, &mx, &[]).unwrap();
        assert_eq!(
            names(&hosts),
            ["mx2.isp.example", "MX1.isp.example", "mx3.isp.example"]
        );
        let hosts = backup_hosts(&site, &mx, &[domain("mx1.ISP.example")]).unwrap();
        assert_eq!(names(&hosts), ["mx2.isp.example", "mx3.isp.example"]);
    }

    #[test]
    fn a_domain_without_backups_is_refused_with_the_reason() {
        let site = domain("customer.example");
        let why = |list: &[(u16, &str)], this: &[Domain]| {
            let failure = backup_hosts(&site, &records(list), this).unwrap_err();
            assert_eq!(failure.status, Status::NoHost);
            failure.message
        };
        assert_eq!(why(&[], &[]), "customer.example has no MX records");
        assert_eq!(
            why(&[(0, ".")], &[]),
            "customer.example publishes a null MX: it accepts no mail"
        );
        assert_eq!(
            why(&[(10, "a.example"), (10, "b.example")], &[]),
            "customer.example has no backup MX: every MX host has preference 10 or is this host"
        );
        assert!(
            why(
                &[(10, "a.example"), (20, "b.example")],
                &[domain("b.example")]
            )
            .contains("no backup MX")
        );
    }

    #[test]
    fn no_more_than_the_limit_is_asked() {
        let mut list = vec![(10, "site.example".to_string())];
        list.extend((0..40).map(|i| (20 + i as u16, format!("mx{i}.isp.example"))));
        let list: Vec<(u16, &str)> = list.iter().map(|(p, h)| (*p, h.as_str())).collect();
        let hosts = backup_hosts(&domain("site.example"), &records(&list), &[]).unwrap();
        assert_eq!(hosts.len(), MAX_HOSTS);
        assert_eq!(hosts[0].as_str(), "mx0.isp.example");
    }
}
