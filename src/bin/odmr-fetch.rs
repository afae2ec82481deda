//! odmr-fetch: take the mail an ODMR provider holds for this site (RFC 2645 AUTH + ATRN).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use etrnq::address::Domain;
use etrnq::config::{Config, parse_positive_interval};
use etrnq::etrn::Server;
use etrnq::odmr::{self, Fetched, Handoff, ODMR_PORT, Request};
use etrnq::smtp::{
    AddressFamily, ConnectOptions, Credentials, StartTls, Timeouts, Transcript, Verification,
};
use etrnq::sysexits::{Failure, Status};

const PROGRAM: &str = "odmr-fetch";
const PASSWORD_ENV: &str = "ODMR_PASSWORD";

/// Connect to an ODMR provider, authenticate, ask with ATRN for the mail it holds for DOMAIN
/// (every domain of the account when none is given), and take that mail on the same
/// connection, handing each message to this site's mail system before acknowledging it.
///
/// Exit status: 0 when the mail was taken or none was waiting, 75 on a connection failure, a
/// 4xx, or a message the site could not take now (it stays with the provider), 77 when the
/// credentials or a domain were refused, 76 on a protocol error or when the provider does not
/// offer ATRN, 68 when PROVIDER does not resolve, 64 on bad arguments.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, max_term_width = 100)]
struct Args {
    /// The provider: a host name, an IPv4 address or a bracketed IPv6 address, optionally with
    /// :PORT.
    #[arg(value_name = "PROVIDER", value_parser = Server::parse)]
    provider: Server,

    /// Domains to ask for (each exactly). Default: every domain of the account.
    #[arg(value_name = "DOMAIN", value_parser = Domain::parse)]
    domains: Vec<Domain>,

    /// TCP port (default 366). Same as PROVIDER:PORT.
    #[arg(short, long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,

    /// Name to give in EHLO, and in this site's greeting (default: the first of `hostnames`,
    /// else this host's name).
    #[arg(long, value_name = "NAME", value_parser = Domain::parse)]
    helo: Option<Domain>,

    /// Time limit for connecting and for each reply, in seconds (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_positive_interval)]
    timeout: Duration,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,

    /// STARTTLS: `required` (the default) fails unless the provider offers it and its
    /// certificate is trusted; `opportunistic` uses it when offered.
    #[arg(long, value_name = "WHEN", require_equals = true, default_value = "required",
          value_parser = ["required", "opportunistic"], conflicts_with = "no_starttls")]
    starttls: String,

    /// Never use STARTTLS (AUTH CRAM-MD5 does not send the secret itself).
    #[arg(long)]
    no_starttls: bool,

    /// Accept any TLS certificate (a provider with a self-signed certificate you know).
    #[arg(long)]
    tls_insecure: bool,

    /// The account's user name. Its secret comes from --auth-password-file or the
    /// ODMR_PASSWORD environment variable, never from the command line.
    #[arg(long, value_name = "USER")]
    auth_user: String,

    /// File whose first line is the account's secret.
    #[arg(long, value_name = "FILE")]
    auth_password_file: Option<PathBuf>,

    /// Hand each message by SMTP to this server of the site [default: 127.0.0.1:25].
    #[arg(long, value_name = "HOST:PORT", value_parser = Server::parse,
          conflicts_with_all = ["mda", "queue"])]
    deliver_to: Option<Server>,

    /// Hand each message to this command on its standard input, run without a shell: %F is the
    /// sender, an argument %T the recipients (`/usr/sbin/sendmail -i -f %F -- %T`).
    #[arg(long, value_name = "COMMAND", conflicts_with = "queue")]
    mda: Option<String>,

    /// Put each message into this site's etrnq queue (queue-enqueue beside this program, with
    /// the same configuration).
    #[arg(long)]
    queue: bool,

    /// Try again up to N times after a connection failure or a temporary (4xx) reply, before
    /// the turnaround (a link that is still coming up).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry: u32,

    /// Seconds to wait between tries (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_positive_interval)]
    retry_wait: Duration,

    /// Show the SMTP conversation on standard error (the secret is hidden).
    #[arg(short, long)]
    verbose: bool,

    /// Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    etrnq::cli::main(PROGRAM, std::env::args_os().collect(), |args: Args| {
        let request = request(args)?;
        let provider = format!("{}:{}", request.host, request.port);
        match odmr::fetch(&request)? {
            Fetched::NoMail => {
                println!("{provider}: no mail waiting");
                Ok(Status::Ok)
            }
            Fetched::Taken(taken) => {
                println!(
                    "{provider}: {} delivered, {} left with the provider, {} refused",
                    taken.delivered, taken.deferred, taken.refused
                );
                if !taken.complete {
                    eprintln!(
                        "{PROGRAM}: the provider went away before QUIT; the rest stays with it"
                    );
                }
                Ok(if taken.deferred > 0 || !taken.complete {
                    Status::TempFail
                } else {
                    Status::Ok
                })
            }
        }
    })
}

/// Turns the arguments and the configuration into a request.
fn request(args: Args) -> anyhow::Result<Request> {
    let config = Config::load(args.config.as_deref())?;
    let port = match (args.port, args.provider.port) {
        (Some(flag), Some(suffix)) if flag != suffix => {
            return Err(Failure::new(
                Status::Usage,
                format!("-p {flag} contradicts the port {suffix} in PROVIDER"),
            )
            .into());
        }
        (flag, suffix) => flag.or(suffix).unwrap_or(ODMR_PORT),
    };
    let handoff = match (args.deliver_to, args.mda, args.queue) {
        (_, Some(command), _) => {
            let argv: Vec<String> = command.split_whitespace().map(String::from).collect();
            if argv.is_empty() {
                return Err(Failure::new(Status::Usage, "--mda: empty command").into());
            }
            Handoff::Command(argv)
        }
        (_, None, true) => {
            let enqueue = std::env::current_exe()
                .context("cannot find this program's directory, for queue-enqueue")?
                .with_file_name("queue-enqueue");
            let mut argv = vec![enqueue.display().to_string()];
            if let Some(file) = &args.config {
                argv.extend(["-C".to_string(), file.display().to_string()]);
            }
            argv.extend(["-i", "-f", "%F", "--", "%T"].map(String::from));
            Handoff::Command(argv)
        }
        (Some(server), None, false) => Handoff::Smtp {
            host: server.host,
            port: server.port.unwrap_or(25),
        },
        (None, None, false) => Handoff::Smtp {
            host: etrnq::route::RelayHost::Ip([127, 0, 0, 1].into()),
            port: 25,
        },
    };
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => AddressFamily::V4,
        (_, true) => AddressFamily::V6,
        _ => AddressFamily::Any,
    };
    Ok(Request {
        host: args.provider.host,
        port,
        domains: args.domains,
        helo: args.helo.unwrap_or_else(|| config.primary_hostname()),
        connect: ConnectOptions {
            timeouts: Timeouts::uniform(args.timeout),
            family,
            transcript: if args.verbose {
                Transcript::Stderr
            } else {
                Transcript::Off
            },
        },
        starttls: match (args.no_starttls, args.starttls.as_str()) {
            (true, _) => StartTls::Off,
            (false, "opportunistic") => StartTls::WhenOffered,
            _ => StartTls::Required,
        },
        verification: if args.tls_insecure {
            Verification::Insecure
        } else {
            Verification::Required
        },
        credentials: Credentials {
            user: args.auth_user,
            password: password(args.auth_password_file.as_deref())?,
        },
        handoff,
        max_message_size: config.max_message_size,
        retries: args.retry,
        retry_wait: args.retry_wait,
    })
}

/// The account's secret: the first line of the file, else the environment.
fn password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::new(Status::NoInput, format!("{}: {e}", path.display())))
            .context("reading the password file")?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    std::env::var(PASSWORD_ENV).map_err(|_| {
        Failure::new(
            Status::Usage,
            format!("--auth-user needs --auth-password-file or ${PASSWORD_ENV}"),
        )
        .into()
    })
}

/// clap checks a definition only when it is used; this catches clashing names at test time.
#[test]
fn the_command_line_definition_is_consistent() {
    <Args as clap::CommandFactory>::command().debug_assert();
}
