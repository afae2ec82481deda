//! queue-smtpd: the backup MX's SMTP server and ETRN server.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use etrnq::args::queue_smtpd::{Cli, PROGRAM};
use etrnq::cli::{self};
use etrnq::maillog::MailLog;
use etrnq::queue;
use etrnq::smtpd::{self, Limits, Profile, RunCommand, Server};
use etrnq::sysexits::{Failure, Status};

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
