//! mx-check's diagnosis: what the DNS says about a domain's mail hosts, what those hosts answer,
//! and how bad each finding is for the mail.
//!
//! [`diagnose`] asks the DNS for the domain's MX records and, for every target, its CNAME,
//! A, AAAA and reverse names, as a sending MTA would see them. [`probe::probe`] then talks
//! SMTP to every address (greeting, EHLO, STARTTLS, and RCPT with RSET and QUIT, never DATA;
//! after an accepted RCPT, one more for a user no site has).
//! Each observation that matters becomes a [`Finding`] with a [`Severity`]; the worst one is
//! the [`Verdict`], which is the monitoring exit status (Nagios plugin convention).
//!
//! The severities:
//!
//! - CRITICAL: mail cannot be delivered or is refused: the domain does not exist, its name
//!   servers fail (SERVFAIL), it has a null MX, no target has an address, no host answers, a
//!   host refuses RCPT with 5xx (the backup MX "relay access denied").
//! - UNKNOWN: the check itself could not tell: the MX query timed out or failed otherwise.
//! - WARNING: mail flows but something is wrong: no MX records (implicit MX), a target that is
//!   a CNAME or an IP address, a target without address or whose lookup failed while others
//!   work, a host that does not answer while others do, a failed STARTTLS handshake, an expired
//!   certificate, RCPT answered 4xx, a host that accepts any local part (backscatter).
//! - Notes (OK): this host's place in the list, missing reverse names, no STARTTLS, an
//!   untrusted certificate, a backup MX without ETRN.
//!
//! The verdict ranks CRITICAL over UNKNOWN over WARNING over OK.
//!
//! Security: everything shown comes from the network; names and replies are printed as data, with
//! control characters replaced, never interpreted.

pub mod probe;
pub mod render;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use anyhow::Context;

use crate::address::{Address, Domain};
use crate::config::Config;
use crate::dns::{DnsError, DnsErrorKind, MxRecord, Resolver, chosen_nameservers};
use crate::sysexits::{Failure, Status};

/// How bad a finding is for the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Unknown,
    Critical,
}

impl Severity {
    fn rank(self) -> u8 {
        match self {
            Severity::Note => 0,
            Severity::Warning => 1,
            Severity::Unknown => 2,
            Severity::Critical => 3,
        }
    }
}

/// The outcome of a check, in the Nagios plugin convention: the exit status is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// One thing worth telling the administrator, about the domain or one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The host or address it concerns; `None` for the domain as a whole.
    pub subject: Option<String>,
    pub message: String,
}

/// A failed lookup, kept for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupFailure {
    pub query: String,
    /// Written `nxdomain`, `nodata`, `servfail`, `timeout` or `error`.
    pub kind: DnsErrorKind,
    pub message: String,
}

impl From<&DnsError> for LookupFailure {
    fn from(err: &DnsError) -> LookupFailure {
        let query = match err {
            DnsError::NxDomain { query, .. }
            | DnsError::NoData { query, .. }
            | DnsError::ServFail { query, .. }
            | DnsError::Timeout { query, .. }
            | DnsError::Other { query, .. } => query.to_string(),
            DnsError::Setup(_) => String::new(),
        };
        LookupFailure {
            query,
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

/// How the domain routes mail, as far as the DNS tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// MX records name the hosts.
    Mx,
    /// No MX records: the domain's own address receives mail (RFC 5321 §5.1).
    Implicit,
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// No MX and no address, or the domain does not exist: mail cannot be delivered.
    Undeliverable,
    /// The MX lookup failed: routing is unknown.
    Failed,
}

/// One address of an exchanger and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct HostAddress {
    pub address: IpAddr,
    pub reverse: Vec<String>,
    pub reverse_error: Option<LookupFailure>,
    /// What the address answered on the SMTP port, with `--probe`.
    pub probe: Option<probe::ProbeReport>,
}

/// One MX target (or the domain itself for an implicit MX).
#[derive(Debug, Clone, Serialize)]
pub struct Exchanger {
    pub preference: u16,
    pub host: String,
    pub implicit: bool,
    pub this_host: bool,
    pub cname: Option<String>,
    pub ip_literal: bool,
    pub addresses: Vec<HostAddress>,
    pub lookup_errors: Vec<LookupFailure>,
}

/// This host's place among the exchangers, from the configuration's `hostnames`.
#[derive(Debug, Clone, Serialize)]
pub struct OwnPlace {
    pub preference: u16,
    pub best: bool,
    /// The hosts mail for the domain is relayed to from here, strictly better than us.
    pub better: Vec<(u16, String)>,
}

/// Everything mx-check found about one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub domain: String,
    /// `system` or the name servers asked.
    pub nameservers: Vec<String>,
    pub routing: Routing,
    pub mx_error: Option<LookupFailure>,
    pub exchangers: Vec<Exchanger>,
    pub this_host: Option<OwnPlace>,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// The worst finding as a monitoring verdict.
    pub fn verdict(&self) -> Verdict {
        match self
            .findings
            .iter()
            .map(|f| f.severity)
            .max_by_key(|s| s.rank())
        {
            None | Some(Severity::Note) => Verdict::Ok,
            Some(Severity::Warning) => Verdict::Warning,
            Some(Severity::Unknown) => Verdict::Unknown,
            Some(Severity::Critical) => Verdict::Critical,
        }
    }

    fn add(&mut self, severity: Severity, subject: Option<&str>, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            subject: subject.map(str::to_string),
            message: message.into(),
        });
    }
}

/// What mx-check was asked to do, from its command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub domain: Domain,
    /// `--nameserver`: replaces the configuration's and the system's name servers.
    pub nameservers: Vec<SocketAddr>,
    /// `-C FILE`; else `$ETRNQ_CONFIG` or the default file.
    pub config: Option<PathBuf>,
    /// How long each DNS query waits per try.
    pub dns_timeout: Duration,
    /// `--probe`: talk SMTP to every address.
    pub probe: Option<ProbeRequest>,
    pub json: bool,
    /// Colour the table (stdout is a terminal and `NO_COLOR` is not set).
    pub colour: bool,
}

/// The `--probe` options as given on the command line.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub port: u16,
    pub timeout: Duration,
    /// `--rcpt`: a bare local part is taken as an address in the domain checked.
    pub rcpt: Option<String>,
}

/// mx-check from start to end: reads the configuration, asks the DNS, writes the report to
/// `out` and returns the verdict. An error means the check could not be made at all.
pub fn check(request: &Request, out: &mut dyn Write) -> anyhow::Result<Verdict> {
    if request.domain.is_literal() {
        return Err(Failure::new(
            Status::Usage,
            format!(
                "{}: an address literal has no MX records; give a domain name",
                request.domain
            ),
        )
        .into());
    }
    let config = Config::load(request.config.as_deref())?;
    let probe_options = match &request.probe {
        Some(probe) => Some(probe::ProbeOptions {
            port: probe.port,
            timeout: probe.timeout,
            rcpt: probe
                .rcpt
                .as_deref()
                .map(|rcpt| Address::parse(rcpt, &request.domain))
                .transpose()
                .context("--rcpt")?,
            helo: config.primary_hostname(),
        }),
        None => None,
    };
    let resolver = Resolver::for_program(&request.nameservers, &config, request.dns_timeout)?;
    let mut diagnosis = diagnose(&request.domain, &resolver, &config.hostnames);
    diagnosis.nameservers = match chosen_nameservers(&request.nameservers, &config) {
        None => vec!["system".to_string()],
        Some(servers) => servers.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(options) = &probe_options {
        probe::probe(&mut diagnosis, options);
    }
    if request.json {
        render::json(&diagnosis, out)?;
    } else {
        render::table(&diagnosis, request.colour, out)?;
    }
    out.flush()?;
    Ok(diagnosis.verdict())
}

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
fn place_this_host(diagnosis: &mut Diagnosis) {
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
fn describe_better(better: &[(u16, String)]) -> String {
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
