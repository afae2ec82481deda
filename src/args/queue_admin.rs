//! queue-admin's command line: the verb, what it selects, and how.
//!
//! Nothing is selected by default; the program refuses an empty selection before it opens the
//! queue. sendmail's `-qR`/`-qS`/`-qI` spellings are rewritten by [`cli::sendmail_selectors`]
//! before this definition sees them.

use std::time::Duration;

use clap::Parser;

#[cfg(doc)]
use crate::cli;
use crate::cli::{QueueOptions, SelectionOptions};
use crate::config::parse_interval;

pub const PROGRAM: &str = "queue-admin";

/// Change queued mail under the queue's locks: hold, release, delete, bounce, retry, or show it.
///
/// Nothing is selected by default: name queue ids (- reads them from standard input), or select
/// with -R, -S, -I, --held, --older-than or --all; several criteria must all hold. A message a
/// queue run is delivering is skipped and reported (or waited for with --wait). One line per
/// message on stdout, a summary on stderr. Exit 0 when all was done, 75 when some messages were
/// busy or could not be changed, 67 when an id is not in the queue.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
pub struct Cli {
    /// What to do: hold, release, delete, bounce, retry or show.
    #[arg(value_enum, value_name = "VERB")]
    pub verb: VerbArg,

    /// Queue ids; - reads more from standard input (mailq's * and ! marks are taken off).
    #[arg(value_name = "ID")]
    pub queue_ids: Vec<String>,

    #[command(flatten)]
    pub select: SelectionOptions,

    /// Every message (with other criteria: every message they take).
    #[arg(long)]
    pub all: bool,

    /// Only messages on administrative hold.
    #[arg(long)]
    pub held: bool,

    /// Only messages that arrived at least INTERVAL ago (30m, 12h, 5d, 2w).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    pub older_than: Option<Duration>,

    /// Print what would be done; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Wait up to SECONDS in all for messages a queue run is delivering, instead of skipping them.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,

    /// show: the envelope and the message's header section only.
    #[arg(long, conflicts_with = "body")]
    pub headers: bool,

    /// show: the envelope and the message's body only.
    #[arg(long)]
    pub body: bool,

    #[command(flatten)]
    pub queue: QueueOptions,
}

/// The verbs, as typed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VerbArg {
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
