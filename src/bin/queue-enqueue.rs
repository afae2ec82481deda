//! queue-enqueue: read one message on standard input and commit it to the queue.

use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgAction, Parser};

use etrnq::cli::{self, QueueOptions};
use etrnq::queue::{self, Queue, SWEEP_GRACE};
use etrnq::submission::{self, Request};
use etrnq::sysexits::{self, Status};

const PROGRAM: &str = "queue-enqueue";

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
struct Cli {
    /// Envelope sender (MAIL FROM); `<>` for none [default: the invoking user].
    #[arg(short = 'f', short_alias = 'r', value_name = "SENDER")]
    sender: Option<String>,

    /// Full name of the sender, used in a From: header added when the message has none.
    #[arg(short = 'F', value_name = "NAME")]
    full_name: Option<String>,

    /// Also take recipients from the To:, Cc: and Bcc: headers (Bcc: is removed).
    #[arg(short = 't')]
    recipients_from_headers: bool,

    /// A line with a single dot does not end the message (same as -oi).
    #[arg(short = 'i')]
    ignore_dots: bool,

    /// DSN: when to notify the sender: `never`, or a list of success, failure, delay.
    #[arg(short = 'N', value_name = "DSN")]
    notify: Option<String>,

    /// DSN: return the `full` message or only its `hdrs` in a bounce.
    #[arg(short = 'R', value_name = "RET")]
    ret: Option<String>,

    /// DSN: envelope identifier, returned in bounces.
    #[arg(short = 'V', value_name = "ENVID")]
    envid: Option<String>,

    /// Print the queue id of the message.
    #[arg(short = 'v')]
    verbose: bool,

    /// sendmail option (-oi: as -i; -odq, -oem and others: accepted, no effect).
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    old_options: Vec<String>,

    /// sendmail option (-OName=value): accepted, no effect.
    #[arg(short = 'O', value_name = "NAME=VALUE", action = ArgAction::Append)]
    options: Vec<String>,

    /// sendmail operation mode: only `m` (queue a message) is done here.
    #[arg(short = 'b', value_name = "MODE")]
    mode: Option<String>,

    /// Body type (7BIT, 8BITMIME): accepted, no effect; the body is stored as it is.
    #[arg(short = 'B', value_name = "TYPE", hide = true)]
    body_type: Option<String>,

    /// sendmail -Am/-Ac: accepted, no effect.
    #[arg(short = 'A', value_name = "FILE", hide = true)]
    alternate_config: Option<String>,

    /// sendmail -L tag: accepted, no effect.
    #[arg(short = 'L', value_name = "TAG", hide = true)]
    log_tag: Option<String>,

    /// sendmail -U (initial submission): accepted, no effect.
    #[arg(short = 'U', hide = true)]
    initial_submission: bool,

    #[command(flatten)]
    queue: QueueOptions,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,

    /// Print version.
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,

    /// Recipient addresses.
    #[arg(value_name = "RECIPIENT")]
    recipients: Vec<String>,
}

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

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
