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

mod lookup;
pub mod probe;
pub mod render;
mod report;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use lookup::diagnose;
pub use report::{
    Diagnosis, Exchanger, Finding, HostAddress, LookupFailure, OwnPlace, Routing, Severity, Verdict,
};

use crate::address::{Address, Domain};
use crate::config::Config;
use crate::dns::{Resolver, chosen_nameservers};
use crate::sysexits::{Failure, Status};

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
