//! mailq: list the queue.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use etrnq::args::mailq::{Cli, PROGRAM};
use etrnq::cli;
use etrnq::queue::{self, Queue};
use etrnq::report::{self, Format};
use etrnq::sysexits::Status;

fn main() -> ExitCode {
    cli::main(PROGRAM, cli::sendmail_selectors(std::env::args_os()), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let config = cli.queue.load()?;
    queue::become_owner(&config.queue_dir)?;
    let queue = Queue::open(&config.queue_dir)?;
    let mut selection = cli.select.selection();
    selection.held = cli.held;
    let format = match (cli.json, cli.summary) {
        (true, _) => Format::Json,
        (_, true) => Format::Summary,
        _ => Format::Sendmail {
            verbose: cli.verbose,
        },
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let outcome = report::list(
        &queue,
        &selection,
        format,
        chrono::Utc::now().timestamp(),
        &mut out,
    )
    .with_context(|| format!("cannot list {}", config.queue_dir.display()))?;
    out.flush().context("cannot write the listing")?;
    for u in &outcome.unreadable {
        eprintln!(
            "{PROGRAM}: {}: unreadable envelope ({}); {}",
            u.id,
            u.problem,
            u.disposition()
        );
    }
    // A message left in the queue unlisted needs a human; a later listing shows it again.
    Ok(if outcome.skipped() > 0 {
        Status::TempFail
    } else {
        Status::Ok
    })
}
