//! queue-smtpd's command line: where to listen, the per-session limits, and the queue runner.
//!
//! The limits' defaults are the daemon's own constants, so `--help` and the man page show what
//! runs when an option is left out.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::cli::QueueOptions;
use crate::queue::selection::DomainPattern;
use crate::smtpd;

pub const PROGRAM: &str = "queue-smtpd";

/// Accept mail for the domains in relay_domains and hold_domains, queue it, and answer ETRN by
/// starting `queue-run -R DOMAIN`.
///
/// Runs as a daemon on the --listen addresses until SIGTERM or SIGINT, or, with --inetd, serves
/// one session on standard input and output (inetd, tcpserver, systemd Accept=yes).
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
pub struct Cli {
    /// Listen on ADDR:PORT (127.0.0.1:25, [::1]:25, 0.0.0.0:25, [::]:25). Repeatable.
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        required_unless_present_any = ["inetd", "flush", "odmr_listen"]
    )]
    pub listen: Vec<SocketAddr>,

    /// Serve ODMR (RFC 2645: AUTH and ATRN, then the held mail down the same connection) on
    /// ADDR:PORT, usually port 366; needs odmr_accounts in the configuration. Repeatable.
    #[arg(long = "odmr-listen", value_name = "ADDR:PORT")]
    pub odmr_listen: Vec<SocketAddr>,

    /// With --inetd: the session on standard input is ODMR, not SMTP.
    #[arg(long, requires = "inetd")]
    pub odmr: bool,

    /// Serve one session on standard input and output instead of listening.
    #[arg(long, conflicts_with_all = ["listen", "odmr_listen", "max_connections", "max_client_connections"])]
    pub inetd: bool,

    /// Sessions at once; clients beyond get 421.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,

    /// Sessions at once from one client address; more get 421.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_CLIENT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_client_connections: u32,

    /// Recipients per message; more get 452.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_RECIPIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_recipients: u32,

    /// Seconds a whole command line may take to arrive (and each write).
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::COMMAND_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Seconds message data may run ahead of the minimum rate: the time DATA may take, plus one
    /// second for each --min-data-rate octets received.
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::DATA_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub data_timeout: u64,

    /// Octets per second message data must average; 0: --data-timeout bounds the whole DATA.
    #[arg(long, value_name = "BYTES", default_value_t = smtpd::MIN_DATA_RATE,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub min_data_rate: u64,

    /// Seconds for --timeout and --data-timeout while three quarters of the connections are
    /// taken.
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::STRESS_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stress_timeout: u64,

    /// Internal: see one ETRN request for NODE through (an inetd session hands it off so).
    #[arg(long, value_name = "NODE", hide = true, value_parser = DomainPattern::parse,
          conflicts_with_all = ["listen", "inetd"])]
    pub flush: Option<DomainPattern>,

    /// The queue-run program ETRN starts [default: queue-run in this program's directory].
    #[arg(long, value_name = "PATH")]
    pub queue_run: Option<PathBuf>,

    #[command(flatten)]
    pub queue: QueueOptions,
}
