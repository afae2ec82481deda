//! mailq's command line: the layout (sendmail's, JSON, summary) and the selectors.
//!
//! sendmail's `-qR`/`-qS`/`-qI` spellings are rewritten by [`cli::sendmail_selectors`] before
//! this definition sees them.

use clap::Parser;

#[cfg(doc)]
use crate::cli;
use crate::cli::{QueueOptions, SelectionOptions};

pub const PROGRAM: &str = "mailq";

/// List the messages in the queue, in sendmail's layout, as JSON, or as a per-domain summary.
///
/// sendmail's selector spellings work too: -qRdomain, -qR domain, -qSsender, -qIid.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
pub struct Cli {
    /// Print deferral reasons whole instead of cut to fit 80 columns.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// One JSON object per message per line (postqueue -j field names; see mailq(1)).
    #[arg(long, conflicts_with = "summary")]
    pub json: bool,

    /// Per recipient domain: messages, bytes, oldest, and counts by age (like qshape).
    #[arg(long)]
    pub summary: bool,

    #[command(flatten)]
    pub select: SelectionOptions,

    /// Only messages on administrative hold (queue-admin hold; sendmail's -qQ).
    #[arg(long)]
    pub held: bool,

    /// sendmail's -bp (print the queue): accepted, it is what mailq does.
    #[arg(short = 'b', value_name = "MODE", hide = true, value_parser = ["p"])]
    pub mode: Option<String>,

    #[command(flatten)]
    pub queue: QueueOptions,
}
