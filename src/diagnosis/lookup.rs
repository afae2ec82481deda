//! What the DNS says about a domain's mail hosts, read into findings.
//!
//! [`diagnose`] asks for the MX records and, for every target, its CNAME, A, AAAA and reverse
//! names, as a sending MTA would see them, and judges what it finds: a missing or null MX, a
//! target that is an alias or an IP address, targets without addresses, and this host's place in
//! the list (the backup-MX view). Findings that depend on the whole list (no target with an
//! address at all) are judged once every target has been looked up.
//!
//! Limits: one query per record type and target, each bounded by the resolver's timeout; the
//! answers are taken as given (no DNSSEC validation).

use std::net::IpAddr;

use super::{Diagnosis, Exchanger, HostAddress, LookupFailure, OwnPlace, Routing, Severity};
use crate::address::Domain;
use crate::dns::{DnsError, DnsErrorKind, MxRecord, Resolver};

/// What the DNS says about `domain`'s mail: MX records, their targets' addresses and reverse
/// names, and the findings they give rise to.
pub fn diagnose(domain: &Domain, resolver: &Resolver, this_host: &[Domain]) -> Diagnosis {
    let mut diagnosis = Diagnosis {
        domain: domain.to_string(),
        nameservers: Vec::new(),
        routing: Routing::Mx,
        mx_error: None,
        exchangers: Vec::new(),
        this_host: None,
        findings: Vec::new(),
    };
    let records = match resolver.mx(domain) {
        Ok(records) => records,
        Err(DnsError::NoData { .. }) => Vec::new(),
        Err(err) => {
            mx_lookup_failed(&mut diagnosis, &err);
            return diagnosis;
        }
    };
    if records.is_empty() {
        implicit(&mut diagnosis, domain, resolver, this_host);
        return diagnosis;
    }
    if let [only] = records.as_slice()
        && only.is_root()
    {
        diagnosis.routing = Routing::NullMx;
        diagnosis.add(
            Severity::Critical,
            None,
            format!(
                "{domain} has a null MX (RFC 7505): it accepts no mail, senders bounce at once"
            ),
        );
        return diagnosis;
    }
    let mut records = records;
    records.sort_by(|a, b| {
        (a.preference, a.exchange.to_ascii_lowercase())
            .cmp(&(b.preference, b.exchange.to_ascii_lowercase()))
    });
    for record in &records {
        if record.is_root() {
            diagnosis.add(
                Severity::Warning,
                None,
                format!(
                    "null MX (MX {} .) listed beside other MX records; RFC 7505 forbids mixing them",
                    record.preference
                ),
            );
            continue;
        }
        let exchanger = examine(&mut diagnosis, record, resolver, this_host);
        diagnosis.exchangers.push(exchanger);
    }
    judge_addresses(&mut diagnosis);
    place_this_host(&mut diagnosis);
    diagnosis
}

fn mx_lookup_failed(diagnosis: &mut Diagnosis, err: &DnsError) {
    diagnosis.mx_error = Some(err.into());
    let domain = diagnosis.domain.clone();
    match err {
        DnsError::NxDomain { .. } => {
            diagnosis.routing = Routing::Undeliverable;
            diagnosis.add(
                Severity::Critical,
                None,
                format!("{domain} does not exist (NXDOMAIN): senders bounce mail at once"),
            );
        }
        DnsError::ServFail { .. } => {
            diagnosis.routing = Routing::Failed;
            diagnosis.add(
                Severity::Critical,
                None,
                format!(
                    "MX lookup for {domain} failed with SERVFAIL (not NXDOMAIN): the domain's \
                     name servers are broken or lame; senders defer mail until it is fixed"
                ),
            );
        }
        _ => {
            diagnosis.routing = Routing::Failed;
            diagnosis.add(
                Severity::Unknown,
                None,
                format!("cannot tell where mail goes: {err}"),
            );
        }
    }
}

fn implicit(diagnosis: &mut Diagnosis, domain: &Domain, resolver: &Resolver, this_host: &[Domain]) {
    let record = MxRecord {
        preference: 0,
        exchange: domain.to_string(),
    };
    let mut exchanger = examine(diagnosis, &record, resolver, this_host);
    exchanger.implicit = true;
    let has_address = !exchanger.addresses.is_empty();
    let transient = exchanger
        .lookup_errors
        .iter()
        .find(|e| e.kind.is_transient())
        .cloned();
    diagnosis.exchangers.push(exchanger);
    if has_address {
        diagnosis.routing = Routing::Implicit;
        diagnosis.add(
            Severity::Warning,
            None,
            format!(
                "{domain} has no MX records: mail goes to the domain's own address (implicit MX, \
                 RFC 5321 §5.1); publish an MX record"
            ),
        );
    } else if let Some(failure) = transient {
        diagnosis.routing = Routing::Failed;
        diagnosis.add(
            Severity::Unknown,
            None,
            format!(
                "{domain} has no MX records and its address lookup failed: {}",
                failure.message
            ),
        );
    } else {
        diagnosis.routing = Routing::Undeliverable;
        diagnosis.add(
            Severity::Critical,
            None,
            format!("{domain} has neither MX records nor an address: mail cannot be delivered"),
        );
    }
    place_this_host(diagnosis);
}

/// Looks up one target: CNAME, A, AAAA and reverse names, with findings for what breaks mail.
fn examine(
    diagnosis: &mut Diagnosis,
    record: &MxRecord,
    resolver: &Resolver,
    this_host: &[Domain],
) -> Exchanger {
    let host = record.exchange.clone();
    let ip_literal =
        host.parse::<IpAddr>().is_ok() || (host.starts_with('[') && host.ends_with(']'));
    let mut exchanger = Exchanger {
        preference: record.preference,
        host: host.clone(),
        implicit: false,
        this_host: Domain::parse(&host).is_ok_and(|d| this_host.contains(&d)),
        cname: None,
        ip_literal,
        addresses: Vec::new(),
        lookup_errors: Vec::new(),
    };
    if ip_literal {
        diagnosis.add(
            Severity::Warning,
            Some(&host),
            format!(
                "MX target {host} is an IP address, not a host name (RFC 5321 §5.1); \
                 most senders look it up as a name and fail"
            ),
        );
        return exchanger;
    }
    if let Err(err) = Domain::parse(&host) {
        diagnosis.add(
            Severity::Warning,
            Some(&host),
            format!("MX target is not a valid host name: {err}"),
        );
        return exchanger;
    }
    let v4 = resolver.ipv4(&host);
    let v6 = resolver.ipv6(&host);
    let mut addresses: Vec<IpAddr> = Vec::new();
    match v4 {
        Ok(found) => addresses.extend(found.into_iter().map(IpAddr::V4)),
        Err(err) => exchanger.lookup_errors.push((&err).into()),
    }
    match v6 {
        Ok(found) => addresses.extend(found.into_iter().map(IpAddr::V6)),
        Err(err) => exchanger.lookup_errors.push((&err).into()),
    }
    match resolver.cname(&host) {
        Ok(Some(target)) => {
            diagnosis.add(
                Severity::Warning,
                Some(&host),
                format!(
                    "MX target {host} is a CNAME for {target}; RFC 5321 §5.1 wants the canonical \
                     name in the MX record (some senders refuse aliases)"
                ),
            );
            exchanger.cname = Some(target);
        }
        Ok(None) | Err(DnsError::NxDomain { .. }) => {}
        Err(err) => exchanger.lookup_errors.push((&err).into()),
    }
    exchanger.addresses = addresses
        .into_iter()
        .map(|address| match resolver.reverse(address) {
            Ok(reverse) => HostAddress {
                address,
                reverse,
                reverse_error: None,
                probe: None,
            },
            Err(err) => HostAddress {
                address,
                reverse: Vec::new(),
                reverse_error: Some((&err).into()),
                probe: None,
            },
        })
        .collect();
    exchanger
}

/// Findings about addresses need the whole list: a target without address is a warning while
/// others work and critical when none does.
fn judge_addresses(diagnosis: &mut Diagnosis) {
    let usable = diagnosis
        .exchangers
        .iter()
        .filter(|e| !e.addresses.is_empty())
        .count();
    let mut findings = Vec::new();
    for exchanger in &diagnosis.exchangers {
        if exchanger.ip_literal || Domain::parse(&exchanger.host).is_err() {
            continue;
        }
        let failed: Vec<&LookupFailure> = exchanger
            .lookup_errors
            .iter()
            .filter(|e| e.kind.is_transient())
            .collect();
        // One finding per host: its A, AAAA and CNAME queries usually fail together.
        if let Some(first) = failed.first() {
            findings.push((
                Severity::Warning,
                exchanger.host.clone(),
                format!(
                    "lookup failed: {}; senders cannot use this host until its DNS answers",
                    first.message
                ),
            ));
        }
        if exchanger.addresses.is_empty() && failed.is_empty() {
            let why = if exchanger
                .lookup_errors
                .iter()
                .any(|e| e.kind == DnsErrorKind::NxDomain)
            {
                "does not exist (NXDOMAIN)"
            } else {
                "has no A or AAAA record"
            };
            findings.push((
                Severity::Warning,
                exchanger.host.clone(),
                format!(
                    "MX {} target {} {why}: senders skip it",
                    exchanger.preference, exchanger.host
                ),
            ));
        }
        for address in &exchanger.addresses {
            if address.reverse.is_empty() {
                findings.push((
                    Severity::Note,
                    format!("{} [{}]", exchanger.host, address.address),
                    "no reverse name (PTR); receivers may distrust mail this host sends".into(),
                ));
            }
        }
    }
    for (severity, subject, message) in findings {
        diagnosis.add(severity, Some(&subject), message);
    }
    if usable == 0 {
        let domain = diagnosis.domain.clone();
        diagnosis.routing = Routing::Undeliverable;
        diagnosis.add(
            Severity::Critical,
            None,
            format!("no MX target of {domain} has an address: mail cannot be delivered"),
        );
    }
}

/// The backup-MX view: where this host stands and where it relays to.
pub(super) fn place_this_host(diagnosis: &mut Diagnosis) {
    let Some(own) = diagnosis
        .exchangers
        .iter()
        .filter(|e| e.this_host)
        .map(|e| e.preference)
        .min()
    else {
        return;
    };
    let better: Vec<(u16, String)> = diagnosis
        .exchangers
        .iter()
        .filter(|e| e.preference < own)
        .map(|e| (e.preference, e.host.clone()))
        .collect();
    let message = if better.is_empty() {
        format!(
            "this host is the best MX ({own}) for {}: mail for it is not relayed from here",
            diagnosis.domain
        )
    } else {
        format!("this host is MX {own}; {}", describe_better(&better))
    };
    diagnosis.this_host = Some(OwnPlace {
        preference: own,
        best: better.is_empty(),
        better,
    });
    diagnosis.add(Severity::Note, None, message);
}

/// `10 is mx.customer.example; 15 is a.example, b.example`
pub(super) fn describe_better(better: &[(u16, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut index = 0;
    while index < better.len() {
        let preference = better[index].0;
        let hosts: Vec<&str> = better[index..]
            .iter()
            .take_while(|(p, _)| *p == preference)
            .map(|(_, h)| h.as_str())
            .collect();
        index += hosts.len();
        let verb = if hosts.len() == 1 { "is" } else { "are" };
        parts.push(format!("{preference} {verb} {}", hosts.join(", ")));
    }
    parts.join("; ")
}
