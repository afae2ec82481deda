//! queue-run: deliver the queue over SMTP, once or every interval.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use etrnq::args::queue_run::{Cli, PROGRAM};
use etrnq::cli;
use etrnq::delivery::{self, RunOptions, Stop};
use etrnq::maillog::MailLog;
use etrnq::queue::{self, Queue};
use etrnq::smtp::{Timeouts, Transcript};
use etrnq::sysexits::Status;

fn main() -> ExitCode {
    cli::main(PROGRAM, cli::sendmail_queue_run(std::env::args_os()), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let mut config = cli.queue.load()?;
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
        for said in config.reread_domain_lists(SystemTime::now()) {
            match said {
                Ok(line) => log.info(&line),
                Err(line) => log.warning(&line),
            }
        }
        if let Err(e) = delivery::run(&queue, &config, &options, &log) {
            log.warning(&format!("queue run failed: {e}"));
        }
        stop.sleep(interval);
    }
    Ok(Status::Ok)
}
