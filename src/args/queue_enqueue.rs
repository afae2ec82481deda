//! queue-enqueue's command line: sendmail's submission options.
//!
//! Options sendmail takes that mean nothing here are accepted and ignored, so that scripts
//! calling `sendmail -odq -oi -t` keep working; `-b` modes other than `m` are refused by the
//! program, not here.

use clap::{ArgAction, Parser};

use crate::cli::QueueOptions;

pub const PROGRAM: &str = "queue-enqueue";

/// Queue one message read from standard input, sendmail-style; never deliver it.
///
/// Accepts sendmail's submission options, so `queue-enqueue` can stand in for `sendmail -odq`
/// and `sendmail -t -i`. Exit status 0 means the message is on disk and will survive a power cut.
#[derive(Debug, Parser)]
#[command(
    name = PROGRAM,
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    after_help = "Options sendmail accepts and that mean nothing here (-o..., -O..., -B, -A, -L, -U, -bm) \
                  are accepted and ignored."
)]
pub struct Cli {
    /// Envelope sender (MAIL FROM); `<>` for none [default: the invoking user].
    #[arg(short = 'f', short_alias = 'r', value_name = "SENDER")]
    pub sender: Option<String>,

    /// Full name of the sender, used in a From: header added when the message has none.
    #[arg(short = 'F', value_name = "NAME")]
    pub full_name: Option<String>,

    /// Also take recipients from the To:, Cc: and Bcc: headers (Bcc: is removed).
    #[arg(short = 't')]
    pub recipients_from_headers: bool,

    /// A line with a single dot does not end the message (same as -oi).
    #[arg(short = 'i')]
    pub ignore_dots: bool,

    /// DSN: when to notify the sender: `never`, or a list of success, failure, delay.
    #[arg(short = 'N', value_name = "DSN")]
    pub notify: Option<String>,

    /// DSN: return the `full` message or only its `hdrs` in a bounce.
    #[arg(short = 'R', value_name = "RET")]
    pub ret: Option<String>,

    /// DSN: envelope identifier, returned in bounces.
    #[arg(short = 'V', value_name = "ENVID")]
    pub envid: Option<String>,

    /// Print the queue id of the message.
    #[arg(short = 'v')]
    pub verbose: bool,

    /// sendmail option (-oi: as -i; -odq, -oem and others: accepted, no effect).
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub old_options: Vec<String>,

    /// sendmail option (-OName=value): accepted, no effect.
    #[arg(short = 'O', value_name = "NAME=VALUE", action = ArgAction::Append)]
    pub options: Vec<String>,

    /// sendmail operation mode: only `m` (queue a message) is done here.
    #[arg(short = 'b', value_name = "MODE")]
    pub mode: Option<String>,

    /// Body type (7BIT, 8BITMIME): accepted, no effect; the body is stored as it is.
    #[arg(short = 'B', value_name = "TYPE", hide = true)]
    pub body_type: Option<String>,

    /// sendmail -Am/-Ac: accepted, no effect.
    #[arg(short = 'A', value_name = "FILE", hide = true)]
    pub alternate_config: Option<String>,

    /// sendmail -L tag: accepted, no effect.
    #[arg(short = 'L', value_name = "TAG", hide = true)]
    pub log_tag: Option<String>,

    /// sendmail -U (initial submission): accepted, no effect.
    #[arg(short = 'U', hide = true)]
    pub initial_submission: bool,

    #[command(flatten)]
    pub queue: QueueOptions,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Print version.
    #[arg(long, action = ArgAction::Version)]
    pub version: Option<bool>,

    /// Recipient addresses.
    #[arg(value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
}
