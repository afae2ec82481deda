//! queue-run's command line: the selection, the pace, and the repeat interval.
//!
//! sendmail's `-q` spellings are rewritten by [`cli::sendmail_queue_run`] before this
//! definition sees them.

use std::time::Duration;

use clap::Parser;

#[cfg(doc)]
use crate::cli;
use crate::cli::{QueueOptions, SelectionOptions};
use crate::config::parse_interval;

pub const PROGRAM: &str = "queue-run";

/// Deliver queued mail over SMTP: everything that is due, or what -R, -I, -S name.
///
/// sendmail's spellings work too: -q, -qR domain, -qRdomain, -qIid, -qSsender, -qf, -q30m.
/// Quiet on stdout; one log line per recipient attempt. Exit 0 when nothing this run was asked to
/// deliver is left, 75 when some of it was deferred or left by a stop. SIGTERM, SIGINT and SIGHUP
/// stop gracefully: no new message, what is in flight ends and is recorded (at most 30 s).
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
pub struct Cli {
    /// Show the SMTP conversation on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    #[command(flatten)]
    pub select: SelectionOptions,

    /// Attempt everything now, whatever its next-attempt time (held domains still wait for -R).
    #[arg(short = 'f', long = "force")]
    pub force: bool,

    /// Only messages of at most SIZE bytes.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<u64>,

    /// Only messages of at least SIZE bytes.
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<u64>,

    /// Parallel SMTP connections.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,

    /// Time limit in seconds for each SMTP step [default: RFC 5321's, 5 to 10 minutes].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    /// Run again every INTERVAL (30m, 1h, ...) until stopped by a signal, like sendmail -q30m.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    pub every: Option<Duration>,

    #[command(flatten)]
    pub queue: QueueOptions,
}
