//! etrn-send's command line: the server, the domains, and how to reach and authenticate.
//!
//! Only the definition lives here; the program turns it into an [`etrn::Request`] with the
//! configuration. The password never comes from argv: `--auth-password-file` or
//! `$ETRN_PASSWORD`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::address::Domain;
use crate::config::{TlsPolicy, parse_nameserver, parse_positive_interval};
#[cfg(doc)]
use crate::etrn;
use crate::etrn::Server;
use crate::smtp::EtrnArgument;

pub const PROGRAM: &str = "etrn-send";

/// Ask a mail server (usually the ISP's backup MX) to start delivering the mail it holds for
/// DOMAIN, with SMTP ETRN (RFC 1985).
///
/// Prints one line per DOMAIN: the domain and the server's reply. Exit status: 0 when every
/// domain got 250-253, 75 on a 4xx reply or a connection failure, 77 on 459 (not allowed for
/// this domain), 76 on a 5xx reply or when the server does not offer ETRN, 68 when SERVER does
/// not resolve, 64 on bad arguments.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, max_term_width = 100)]
pub struct Cli {
    /// The server to ask: a host name, an IPv4 address or a bracketed IPv6 address
    /// (`[2001:db8::25]`), optionally with :PORT.
    #[arg(value_name = "SERVER", value_parser = Server::parse)]
    pub server: Server,

    /// Domains to ask for. `@domain` also asks for its subdomains, `#queue` names a queue of
    /// the server's. Default: this host's `hostnames` from the configuration.
    #[arg(value_name = "DOMAIN", value_parser = EtrnArgument::parse)]
    pub domains: Vec<EtrnArgument>,

    /// SERVER is a domain: send ETRN to each of its backup MX hosts at once (every MX host but
    /// those at its best preference and this host's `hostnames`). DOMAIN defaults to it.
    #[arg(long)]
    pub mx: bool,

    /// With --mx: the name server to ask for the MX records, IP[:PORT]; repeat for several.
    /// Replaces the configuration's dns.nameservers.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver, requires = "mx")]
    pub nameserver: Vec<SocketAddr>,

    /// TCP port (default 25). Same as SERVER:PORT.
    #[arg(short, long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Name to give in EHLO/HELO (default: the first of `hostnames`, else this host's name).
    #[arg(long, value_name = "NAME", value_parser = Domain::parse)]
    pub helo: Option<Domain>,

    /// Time limit for connecting and for each reply, in seconds (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive_interval)]
    pub timeout: Duration,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Use STARTTLS: `required` (the default when given without a value) fails unless the
    /// server offers it and its certificate is trusted; `opportunistic` uses it when offered
    /// without checking the certificate; `off` never uses it (the default).
    #[arg(
        long,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "required",
        value_parser = tls_policy,
    )]
    pub starttls: Option<TlsPolicy>,

    /// Accept any TLS certificate with --starttls (a self-signed server you know).
    #[arg(long, requires = "starttls")]
    pub tls_insecure: bool,

    /// Authenticate as USER (AUTH PLAIN, else LOGIN). The password comes from
    /// --auth-password-file or the ETRN_PASSWORD environment variable, never from the command
    /// line. Use --starttls with it so that the password travels encrypted.
    #[arg(long, value_name = "USER")]
    pub auth_user: Option<String>,

    /// File whose first line is the password for --auth-user.
    #[arg(long, value_name = "FILE", requires = "auth_user")]
    pub auth_password_file: Option<PathBuf>,

    /// Send ETRN even when the server does not advertise it.
    #[arg(long)]
    pub force: bool,

    /// Try again up to N times after a connection failure or a temporary (4xx) reply.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,

    /// Seconds to wait between tries (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_positive_interval)]
    pub retry_wait: Duration,

    /// Show the SMTP conversation on standard error.
    #[arg(short, long)]
    pub verbose: bool,

    /// Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--starttls`'s values, as the configuration's `tls` key spells them.
fn tls_policy(text: &str) -> Result<TlsPolicy, String> {
    match text {
        "required" => Ok(TlsPolicy::Required),
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "off" => Ok(TlsPolicy::Off),
        other => Err(format!(
            "{other:?}: expected required, opportunistic or off"
        )),
    }
}
