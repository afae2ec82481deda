//! mx-check's command line: the domain, the name servers, and what to probe.
//!
//! A monitoring check: its usage errors exit 3 (UNKNOWN), see [`cli::parse_check`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::address::Domain;
#[cfg(doc)]
use crate::cli;
use crate::config::{parse_nameserver, parse_positive_interval};

pub const PROGRAM: &str = "mx-check";

/// Show a domain's MX records the way mail sees them, and what its mail hosts answer.
///
/// Lists the MX records by preference with each host's addresses and reverse names, and warns
/// about what breaks mail: no MX (implicit MX), a null MX, an MX target that is a CNAME or an IP
/// address or has no address, failing lookups (SERVFAIL is not NXDOMAIN), and this host's own
/// place in the list (configuration key `hostnames`).
///
/// Exit status, as a Nagios/Icinga plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also for
/// usage and configuration errors). See mx-check(1) for which finding is which.
#[derive(Parser, Debug)]
#[command(name = PROGRAM, version, max_term_width = 100)]
pub struct Cli {
    /// The mail domain to check, e.g. customer.example.
    #[arg(value_name = "DOMAIN", value_parser = Domain::parse)]
    pub domain: Domain,

    /// Ask this name server instead of the system resolver (like dig @server); repeat for
    /// several. Replaces the configuration's dns.nameservers.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    pub nameserver: Vec<SocketAddr>,

    /// Configuration file (default $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How long each DNS query waits for an answer per try (each query is tried twice):
    /// seconds, or with a unit (s, m).
    #[arg(long, value_name = "TIME", default_value = "5", value_parser = parse_positive_interval)]
    pub dns_timeout: Duration,

    /// Connect to every address of every MX host and report the greeting, the EHLO
    /// extensions (ETRN, STARTTLS, SIZE, PIPELINING, 8BITMIME) and the STARTTLS certificate.
    /// Addresses are probed in parallel; output stays in preference order.
    #[arg(long)]
    pub probe: bool,

    /// The SMTP port to probe.
    #[arg(long, value_name = "PORT", default_value_t = 25, requires = "probe")]
    pub port: u16,

    /// How long a probe waits to connect and for each reply: seconds, or with a unit (s, m).
    #[arg(long, value_name = "TIME", default_value = "10", value_parser = parse_positive_interval)]
    pub timeout: Duration,

    /// With --probe, ask each host whether it accepts mail for ADDRESS: MAIL FROM:<> and
    /// RCPT TO:<ADDRESS>, then RSET and QUIT; never DATA, so nothing is delivered. A bare name
    /// is taken as a mailbox of DOMAIN (--rcpt postmaster).
    #[arg(long, value_name = "ADDRESS", requires = "probe")]
    pub rcpt: Option<String>,

    /// Write one JSON object (schema in mx-check(1)) instead of the table.
    #[arg(long)]
    pub json: bool,
}
