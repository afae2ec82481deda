//! queue-enqueue: read one message on standard input and commit it to the queue.

use std::process::ExitCode;

use anyhow::Context;

use etrnq::args::queue_enqueue::{Cli, PROGRAM};
use etrnq::cli;
use etrnq::queue::{self, Queue, SWEEP_GRACE};
use etrnq::submission::{self, Request};
use etrnq::sysexits::{self, Status};

fn main() -> ExitCode {
    cli::main(PROGRAM, std::env::args_os().collect(), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    if let Some(mode) = cli.mode.as_deref().filter(|m| *m != "m") {
        anyhow::bail!(sysexits::Failure::new(
            Status::Usage,
            format!("-b{mode}: unsupported mode (use mailq for -bp, queue-run for -q)"),
        ));
    }
    let config = cli.queue.load()?;
    queue::become_owner(&config.queue_dir)?;
    let queue = Queue::open(&config.queue_dir)?;
    // tmp/ normally holds only submissions in progress, so this costs one directory read.
    queue.sweep_tmp(SWEEP_GRACE)?;
    let request = Request {
        sender: cli.sender,
        full_name: cli.full_name,
        recipients: cli.recipients,
        recipients_from_headers: cli.recipients_from_headers,
        dot_ends_input: !(cli.ignore_dots || cli.old_options.iter().any(|o| o == "i")),
        notify: cli.notify,
        ret: cli.ret,
        envid: cli.envid,
    };
    let id = submission::submit(&queue, &config, &request, std::io::stdin().lock())
        .context("message not queued")?;
    if cli.verbose {
        println!("queued as {id}");
    }
    Ok(Status::Ok)
}
