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
use etrnq::queue;
use etrnq::queue::selection::DomainPattern;
use etrnq::smtpd::{self, Limits, Profile, RunCommand, Server};
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
        required_unless_present_any = ["inetd", "flush", "odmr_listen"]
    )]
    listen: Vec<SocketAddr>,

    /// Serve ODMR (RFC 2645: AUTH and ATRN, then the held mail down the same connection) on
    /// ADDR:PORT, usually port 366; needs odmr_accounts in the configuration. Repeatable.
    #[arg(long = "odmr-listen", value_name = "ADDR:PORT")]
    odmr_listen: Vec<SocketAddr>,

    /// With --inetd: the session on standard input is ODMR, not SMTP.
    #[arg(long, requires = "inetd")]
    odmr: bool,

    /// Serve one session on standard input and output instead of listening.
    #[arg(long, conflicts_with_all = ["listen", "odmr_listen", "max_connections", "max_client_connections"])]
    inetd: bool,

    /// Sessions at once; clients beyond get 421.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,

    /// Sessions at once from one client address; more get 421.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_CLIENT_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_client_connections: u32,

    /// Recipients per message; more get 452.
    #[arg(long, value_name = "N", default_value_t = smtpd::MAX_RECIPIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_recipients: u32,

    /// Seconds a whole command line may take to arrive (and each write).
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::COMMAND_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,

    /// Seconds message data may run ahead of the minimum rate: the time DATA may take, plus one
    /// second for each --min-data-rate octets received.
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::DATA_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    data_timeout: u64,

    /// Octets per second message data must average; 0: --data-timeout bounds the whole DATA.
    #[arg(long, value_name = "BYTES", default_value_t = smtpd::MIN_DATA_RATE,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    min_data_rate: u64,

    /// Seconds for --timeout and --data-timeout while three quarters of the connections are
    /// taken.
    #[arg(long, value_name = "SECONDS", default_value_t = smtpd::STRESS_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    stress_timeout: u64,

    /// Internal: see one ETRN request for NODE through (an inetd session hands it off so).
    #[arg(long, value_name = "NODE", hide = true, value_parser = DomainPattern::parse,
          conflicts_with_all = ["listen", "inetd"])]
    flush: Option<DomainPattern>,

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
    // In inetd mode the runs ETRN asks for outlive the session: this program sees them through.
    let hand_off = if cli.inetd {
        Some(std::env::current_exe().context("cannot find this program, to hand ETRN runs to")?)
    } else {
        None
    };
    let run = RunCommand {
        program,
        config: cli.queue.config.clone(),
        queue_dir: config.queue_dir.clone(),
        hand_off,
    };
    let limits = Limits {
        max_recipients: cli.max_recipients as usize,
        command_timeout: Duration::from_secs(cli.timeout),
        data_timeout: Duration::from_secs(cli.data_timeout),
        min_data_rate: cli.min_data_rate,
        stress_timeout: Duration::from_secs(cli.stress_timeout),
        max_connections: cli.max_connections as usize,
        max_client_connections: cli.max_client_connections as usize,
        ..Limits::new(&config)
    };
    // Port 25 needs root: bind first, then become the queue's owner before the log and the
    // queue are opened, so every file this server and its queue runs create is the owner's.
    let listeners: Vec<_> = if cli.inetd || cli.flush.is_some() {
        Vec::new()
    } else {
        let smtp = smtpd::listen(&cli.listen)?;
        let odmr = smtpd::listen(&cli.odmr_listen)?;
        smtp.into_iter()
            .map(|l| (l, Profile::Smtp))
            .chain(odmr.into_iter().map(|l| (l, Profile::Odmr)))
            .collect()
    };
    queue::become_owner(&config.queue_dir)?;
    let log = Arc::new(MailLog::open(&config.log, PROGRAM));
    if let Some(node) = cli.flush {
        smtpd::flush_handed_off(&config, run, log, &node)?;
        return Ok(Status::Ok);
    }
    let mut server = Server::new(config, limits, run, log)?;
    if cli.odmr || !cli.odmr_listen.is_empty() {
        server = server.with_odmr()?;
    }
    if cli.inetd {
        let profile = if cli.odmr {
            Profile::Odmr
        } else {
            Profile::Smtp
        };
        smtpd::serve_stdio(&server, profile)?;
    } else {
        smtpd::serve_all(Arc::new(server), listeners)?;
    }
    Ok(Status::Ok)
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
}
