//! mx-check: the MX records of a domain, their hosts, and what each answers on port 25.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use etrnq::address::Domain;
use etrnq::cli::finish_check;
use etrnq::cli::parse_check;
use etrnq::config::{parse_nameserver, parse_positive_interval};
use etrnq::diagnosis::{self, ProbeRequest, Request};

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
#[command(name = "mx-check", version, max_term_width = 100)]
struct Cli {
    /// The mail domain to check, e.g. customer.example.
    #[arg(value_name = "DOMAIN", value_parser = Domain::parse)]
    domain: Domain,

    /// Ask this name server instead of the system resolver (like dig @server); repeat for
    /// several. Replaces the configuration's dns.nameservers.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    nameserver: Vec<SocketAddr>,

    /// Configuration file (default $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,

    /// How long each DNS query waits for an answer per try (each query is tried twice):
    /// seconds, or with a unit (s, m).
    #[arg(long, value_name = "TIME", default_value = "5", value_parser = parse_positive_interval)]
    dns_timeout: Duration,

    /// Connect to every address of every MX host and report the greeting, the EHLO
    /// extensions (ETRN, STARTTLS, SIZE, PIPELINING, 8BITMIME) and the STARTTLS certificate.
    /// Addresses are probed in parallel; output stays in preference order.
    #[arg(long)]
    probe: bool,

    /// The SMTP port to probe.
    #[arg(long, value_name = "PORT", default_value_t = 25, requires = "probe")]
    port: u16,

    /// How long a probe waits to connect and for each reply: seconds, or with a unit (s, m).
    #[arg(long, value_name = "TIME", default_value = "10", value_parser = parse_positive_interval)]
    timeout: Duration,

    /// With --probe, ask each host whether it accepts mail for ADDRESS: MAIL FROM:<> and
    /// RCPT TO:<ADDRESS>, then RSET and QUIT; never DATA, so nothing is delivered. A bare name
    /// is taken as a mailbox of DOMAIN (--rcpt postmaster).
    #[arg(long, value_name = "ADDRESS", requires = "probe")]
    rcpt: Option<String>,

    /// Write one JSON object (schema in mx-check(1)) instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli: Cli = match parse_check("mx-check") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let request = Request {
        colour: !cli.json
            && stdout.is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        domain: cli.domain,
        nameservers: cli.nameserver,
        config: cli.config,
        dns_timeout: cli.dns_timeout,
        probe: cli.probe.then_some(ProbeRequest {
            port: cli.port,
            timeout: cli.timeout,
            rcpt: cli.rcpt,
        }),
        json: cli.json,
    };
    let outcome = diagnosis::check(&request, &mut stdout.lock());
    finish_check("mx-check", outcome.map(|verdict| verdict.exit_code()))
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
