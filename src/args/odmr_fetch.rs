//! odmr-fetch's command line: the provider, the account, the domains, and where mail is handed.
//!
//! Only the definition lives here; the program turns it into an ODMR request with the
//! configuration. The password never comes from argv: `--auth-password-file` or
//! `$ODMR_PASSWORD`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::address::Domain;
use crate::config::parse_positive_interval;
use crate::etrn::Server;

pub const PROGRAM: &str = "odmr-fetch";

/// Connect to an ODMR provider, authenticate, ask with ATRN for the mail it holds for DOMAIN
/// (every domain of the account when none is given), and take that mail on the same
/// connection, handing each message to this site's mail system before acknowledging it.
///
/// Exit status: 0 when the mail was taken or none was waiting, 75 on a connection failure, a
/// 4xx, or a message the site could not take now (it stays with the provider), 77 when the
/// credentials or a domain were refused, 76 on a protocol error or when the provider does not
/// offer ATRN, 68 when PROVIDER does not resolve, 64 on bad arguments.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, max_term_width = 100)]
pub struct Cli {
    /// The provider: a host name, an IPv4 address or a bracketed IPv6 address, optionally with
    /// :PORT.
    #[arg(value_name = "PROVIDER", value_parser = Server::parse)]
    pub provider: Server,

    /// Domains to ask for (each exactly). Default: every domain of the account.
    #[arg(value_name = "DOMAIN", value_parser = Domain::parse)]
    pub domains: Vec<Domain>,

    /// TCP port (default 366). Same as PROVIDER:PORT.
    #[arg(short, long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Name to give in EHLO, and in this site's greeting (default: the first of `hostnames`,
    /// else this host's name).
    #[arg(long, value_name = "NAME", value_parser = Domain::parse)]
    pub helo: Option<Domain>,

    /// Time limit for connecting and for each reply, in seconds (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_positive_interval)]
    pub timeout: Duration,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// STARTTLS: `required` (the default) fails unless the provider offers it and its
    /// certificate is trusted; `opportunistic` uses it when offered.
    #[arg(long, value_name = "WHEN", require_equals = true, default_value = "required",
          value_parser = ["required", "opportunistic"], conflicts_with = "no_starttls")]
    pub starttls: String,

    /// Never use STARTTLS (AUTH CRAM-MD5 does not send the secret itself).
    #[arg(long)]
    pub no_starttls: bool,

    /// Accept any TLS certificate (a provider with a self-signed certificate you know).
    #[arg(long)]
    pub tls_insecure: bool,

    /// The account's user name. Its secret comes from --auth-password-file or the
    /// ODMR_PASSWORD environment variable, never from the command line.
    #[arg(long, value_name = "USER")]
    pub auth_user: String,

    /// File whose first line is the account's secret.
    #[arg(long, value_name = "FILE")]
    pub auth_password_file: Option<PathBuf>,

    /// Hand each message by SMTP to this server of the site [default: 127.0.0.1:25].
    #[arg(long, value_name = "HOST:PORT", value_parser = Server::parse,
          conflicts_with_all = ["mda", "queue"])]
    pub deliver_to: Option<Server>,

    /// Hand each message to this command on its standard input, run without a shell: %F is the
    /// sender, an argument %T the recipients (`/usr/sbin/sendmail -i -f %F -- %T`).
    #[arg(long, value_name = "COMMAND", conflicts_with = "queue")]
    pub mda: Option<String>,

    /// Put each message into this site's etrnq queue (queue-enqueue beside this program, with
    /// the same configuration).
    #[arg(long)]
    pub queue: bool,

    /// Try again up to N times after a connection failure or a temporary (4xx) reply, before
    /// the turnaround (a link that is still coming up).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retry: u32,

    /// Seconds to wait between tries (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_positive_interval)]
    pub retry_wait: Duration,

    /// Show the SMTP conversation on standard error (the secret is hidden).
    #[arg(short, long)]
    pub verbose: bool,

    /// Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}
