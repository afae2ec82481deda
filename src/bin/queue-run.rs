//! queue-run: deliver the queue over SMTP, once or every interval.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use etrnq::cli::{self, QueueOptions, SelectionOptions};
use etrnq::config::parse_interval;
use etrnq::delivery::{self, RunOptions, Stop};
use etrnq::maillog::MailLog;
use etrnq::queue::{self, Queue};
use etrnq::smtp::{Timeouts, Transcript};
use etrnq::sysexits::Status;

const PROGRAM: &str = "queue-run";

/// Deliver queued mail over SMTP: everything that is due, or what -R, -I, -S name.
///
/// sendmail's spellings work too: -q, -qR domain, -qRdomain, -qIid, -qSsender, -qf, -q30m.
/// Quiet on stdout; one log line per recipient attempt. Exit 0 when nothing this run was asked to
/// deliver is left, 75 when some of it was deferred or left by a stop. SIGTERM, SIGINT and SIGHUP
/// stop gracefully: no new message, what is in flight ends and is recorded (at most 30 s).
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
struct Cli {
    /// Show the SMTP conversation on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,

    #[command(flatten)]
    select: SelectionOptions,

    /// Attempt everything now, whatever its next-attempt time (held domains still wait for -R).
    #[arg(short = 'f', long = "force")]
    force: bool,

    /// Only messages of at most SIZE bytes.
    #[arg(long, value_name = "SIZE")]
    max_size: Option<u64>,

    /// Only messages of at least SIZE bytes.
    #[arg(long, value_name = "SIZE")]
    min_size: Option<u64>,

    /// Parallel SMTP connections.
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,

    /// Time limit in seconds for each SMTP step [default: RFC 5321's, 5 to 10 minutes].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,

    /// Run again every INTERVAL (30m, 1h, ...) until stopped by a signal, like sendmail -q30m.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    every: Option<Duration>,

    #[command(flatten)]
    queue: QueueOptions,
}

fn main() -> ExitCode {
    cli::main(PROGRAM, cli::sendmail_queue_run(std::env::args_os()), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let config = cli.queue.load()?;
    queue::become_owner(&config.queue_dir)?;
    let queue = Queue::open(&config.queue_dir)?;
    let log = Arc::new(MailLog::open(&config.log, PROGRAM));
    let stop = Stop::on_signals(Arc::clone(&log)).context("cannot handle signals")?;
    let options = RunOptions {
        selection: cli.select.selection(),
        force: cli.force,
        max_size: cli.max_size,
        min_size: cli.min_size,
        jobs: usize::from(cli.jobs),
        transcript: if cli.verbose {
            Transcript::Stderr
        } else {
            Transcript::Off
        },
        timeouts: cli
            .timeout
            .map(|s| Timeouts::uniform(Duration::from_secs(s)))
            .unwrap_or_default(),
        stop: stop.clone(),
        turnaround: None,
    };
    let Some(interval) = cli.every else {
        let summary = delivery::run(&queue, &config, &options, &log)?;
        return Ok(if summary.is_incomplete() {
            Status::TempFail
        } else {
            Status::Ok
        });
    };
    // A daemon's stop is its normal end: 0, whatever the last pass left for the next start.
    while !stop.is_requested() {
        if let Err(e) = delivery::run(&queue, &config, &options, &log) {
            log.warning(&format!("queue run failed: {e}"));
        }
        stop.sleep(interval);
    }
    Ok(Status::Ok)
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
