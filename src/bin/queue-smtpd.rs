//! queue-smtpd: the backup MX's SMTP server and ETRN server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use etrnq::cli::{self, QueueOptions};
use etrnq::maillog::MailLog;
use etrnq::smtpd::{self, Limits, RunCommand, Server};
use etrnq::sysexits::{Failure, Status};

const PROGRAM: &str = "queue-smtpd";

/// Accept mail for the domains in relay_domains and hold_domains, queue it, and answer ETRN by
/// starting `queue-run -R DOMAIN`.
///
/// Runs as a daemon on the --listen addresses until SIGTERM or SIGINT, or, with --inetd, serves
/// one session on standard input and output (inetd, tcpserver, systemd Accept=yes).
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
struct Cli {
    /// Listen on ADDR:PORT (127.0.0.1:25, [::1]:25, 0.0.0.0:25, [::]:25). Repeatable.
    #[arg(
        long = "listen",
        value_name = "ADDR:PORT",
        required_unless_present = "inetd"
    )]
    listen: Vec<SocketAddr>,

    /// Serve one session on standard input and output instead of listening.
    #[arg(long, conflicts_with_all = ["listen", "max_connections"])]
    inetd: bool,

    /// Sessions at once; clients beyond get 421.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,

    /// Recipients per message; more get 452.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_RECIPIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_recipients: u32,

    /// Seconds to wait for a command (and for each write).
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::COMMAND_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,

    /// Seconds to wait for each read of message data.
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::DATA_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    data_timeout: u64,

    /// The queue-run program ETRN starts [default: queue-run in this program's directory].
    #[arg(long, value_name = "PATH")]
    queue_run: Option<PathBuf>,

    #[command(flatten)]
    queue: QueueOptions,
}

fn main() -> ExitCode {
    cli::main(PROGRAM, std::env::args_os().collect(), run)
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let config = cli.queue.load()?;
    let program = match cli.queue_run {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot find this program's directory; use --queue-run")?
            .with_file_name("queue-run"),
    };
    if !program.is_file() {
        anyhow::bail!(Failure::new(
            Status::Unavailable,
            format!(
                "{}: no such program; use --queue-run PATH",
                program.display()
            ),
        ));
    }
    let run = RunCommand {
        program,
        config: cli.queue.config.clone(),
        queue_dir: config.queue_dir.clone(),
    };
    let limits = Limits {
        max_recipients: cli.max_recipients as usize,
        command_timeout: Duration::from_secs(cli.timeout),
        data_timeout: Duration::from_secs(cli.data_timeout),
        ..Limits::new(&config)
    };
    let log = Arc::new(MailLog::open(&config.log, PROGRAM));
    let server = Arc::new(Server::new(config, limits, run, log)?);
    if cli.inetd {
        smtpd::serve_stdio(&server)?;
    } else {
        let listeners = smtpd::listen(&cli.listen)?;
        smtpd::serve(server, listeners, cli.max_connections as usize)?;
    }
    Ok(Status::Ok)
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
