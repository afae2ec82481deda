//! mailq: list the queue.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use etrnq::cli::{self, QueueOptions, SelectionOptions};
use etrnq::queue::{self, Queue};
use etrnq::report::{self, Format};
use etrnq::sysexits::Status;

const PROGRAM: &str = "mailq";

/// List the messages in the queue, in sendmail's layout, as JSON, or as a per-domain summary.
///
/// sendmail's selector spellings work too: -qRdomain, -qR domain, -qSsender, -qIid.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
struct Cli {
    /// Print deferral reasons whole instead of cut to fit 80 columns.
    #[arg(short = 'v', long)]
    verbose: bool,

    /// One JSON object per message per line (postqueue -j field names; see mailq(1)).
    #[arg(long, conflicts_with = "summary")]
    json: bool,

    /// Per recipient domain: messages, bytes, oldest, and counts by age (like qshape).
    #[arg(long)]
    summary: bool,

    #[command(flatten)]
    select: SelectionOptions,

    /// Only messages on administrative hold (queue-admin hold; sendmail's -qQ).
    #[arg(long)]
    held: bool,

    /// sendmail's -bp (print the queue): accepted, it is what mailq does.
    #[arg(short = 'b', value_name = "MODE", hide = true, value_parser = ["p"])]
    mode: Option<String>,

    #[command(flatten)]
    queue: QueueOptions,
}

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

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
