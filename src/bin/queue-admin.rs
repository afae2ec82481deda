//! queue-admin: hold, release, delete, bounce, retry or show queued messages, lock-safe.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use etrnq::admin::{self, Choice, Part, Request, Verb};
use etrnq::args::queue_admin::{Cli, PROGRAM, VerbArg};
use etrnq::cli::{self};
use etrnq::maillog::MailLog;
use etrnq::queue::{self, Queue};
use etrnq::sysexits::Status;

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
