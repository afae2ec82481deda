//! queue-admin: hold, release, delete, bounce, retry or show queued messages, lock-safe.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use etrnq::admin::{self, Choice, Part, Request, Verb};
use etrnq::cli::{self, QueueOptions, SelectionOptions};
use etrnq::config::parse_interval;
use etrnq::maillog::MailLog;
use etrnq::queue::{self, Queue};
use etrnq::sysexits::Status;

const PROGRAM: &str = "queue-admin";

/// Change queued mail under the queue's locks: hold, release, delete, bounce, retry, or show it.
///
/// Nothing is selected by default: name queue ids (- reads them from standard input), or select
/// with -R, -S, -I, --held, --older-than or --all; several criteria must all hold. A message a
/// queue run is delivering is skipped and reported (or waited for with --wait). One line per
/// message on stdout, a summary on stderr. Exit 0 when all was done, 75 when some messages were
/// busy or could not be changed, 67 when an id is not in the queue.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
struct Cli {
    /// What to do: hold, release, delete, bounce, retry or show.
    #[arg(value_enum, value_name = "VERB")]
    verb: VerbArg,

    /// Queue ids; - reads more from standard input (mailq's * and ! marks are taken off).
    #[arg(value_name = "ID")]
    queue_ids: Vec<String>,

    #[command(flatten)]
    select: SelectionOptions,

    /// Every message (with other criteria: every message they take).
    #[arg(long)]
    all: bool,

    /// Only messages on administrative hold.
    #[arg(long)]
    held: bool,

    /// Only messages that arrived at least INTERVAL ago (30m, 12h, 5d, 2w).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    older_than: Option<Duration>,

    /// Print what would be done; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,

    /// Wait up to SECONDS in all for messages a queue run is delivering, instead of skipping them.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,

    /// show: the envelope and the message's header section only.
    #[arg(long, conflicts_with = "body")]
    headers: bool,

    /// show: the envelope and the message's body only.
    #[arg(long)]
    body: bool,

    #[command(flatten)]
    queue: QueueOptions,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum VerbArg {
    /// Put on administrative hold: no run attempts it, -R and ETRN included.
    Hold,
    /// Bring back from hold.
    Release,
    /// Remove, without a bounce.
    Delete,
    /// Fail the open recipients now, with one bounce to the sender.
    Bounce,
    /// Make due now, for the next queue run.
    Retry,
    /// Print the envelope and the message.
    Show,
}

fn main() -> ExitCode {
    cli::main(PROGRAM, cli::sendmail_selectors(std::env::args_os()), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let verb = match cli.verb {
        VerbArg::Hold => Verb::Hold,
        VerbArg::Release => Verb::Release,
        VerbArg::Delete => Verb::Delete,
        VerbArg::Bounce => Verb::Bounce,
        VerbArg::Retry => Verb::Retry,
        VerbArg::Show => Verb::Show,
    };
    let mut selection = cli.select.selection();
    selection.held = cli.held;
    let mut choice = Choice {
        selection,
        all: cli.all,
        older_than: cli.older_than,
        ..Choice::default()
    };
    for word in &cli.queue_ids {
        if word == "-" {
            let read = admin::read_ids(std::io::stdin().lock())
                .context("cannot read queue ids from standard input")?;
            choice.add_ids(read.iter().map(String::as_str));
        } else {
            choice.add_ids([word.as_str()]);
        }
    }
    if choice.is_empty() {
        // Refused before the queue is opened: a bare "queue-admin delete" touches nothing.
        return Err(admin::AdminError::NothingSelected.into());
    }
    let config = cli.queue.load()?;
    let user = queue::describe_user(queue::invoking_uid());
    queue::become_owner(&config.queue_dir)?;
    let queue = Queue::open(&config.queue_dir)?;
    let log = MailLog::open(&config.log, PROGRAM);
    let request = Request {
        verb,
        choice,
        dry_run: cli.dry_run,
        wait: Duration::from_secs(cli.wait),
        part: match (cli.headers, cli.body) {
            (true, _) => Part::Headers,
            (_, true) => Part::Body,
            _ => Part::Whole,
        },
        user,
        now: chrono::Utc::now().timestamp(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let summary = admin::run(&queue, &config, &request, &log, &mut out)?;
    out.flush().context("cannot write the output")?;
    if verb != Verb::Show || summary.status() != Status::Ok {
        eprintln!("{PROGRAM}: {}", summary.line(&request));
    }
    Ok(summary.status())
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
