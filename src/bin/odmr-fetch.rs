//! odmr-fetch: take the mail an ODMR provider holds for this site (RFC 2645 AUTH + ATRN).

use std::process::ExitCode;

use anyhow::Context;

use etrnq::args::odmr_fetch::{Cli, PROGRAM};
use etrnq::config::Config;
use etrnq::odmr::{self, Fetched, Handoff, ODMR_PORT, Request};
use etrnq::smtp::{Credentials, StartTls, Verification};
use etrnq::sysexits::{Failure, Status};

const PASSWORD_ENV: &str = "ODMR_PASSWORD";

fn main() -> ExitCode {
    etrnq::cli::main(PROGRAM, std::env::args_os().collect(), |args: Cli| {
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
fn request(args: Cli) -> anyhow::Result<Request> {
    let config = Config::load(args.config.as_deref())?;
    let port = etrnq::cli::port(args.port, args.provider.port, "PROVIDER", ODMR_PORT)?;
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
    Ok(Request {
        host: args.provider.host,
        port,
        domains: args.domains,
        helo: args.helo.unwrap_or_else(|| config.primary_hostname()),
        connect: etrnq::cli::connect_options(args.ipv4, args.ipv6, args.timeout, args.verbose),
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
            password: etrnq::cli::secret(args.auth_password_file.as_deref(), PASSWORD_ENV)?,
        },
        handoff,
        max_message_size: config.max_message_size,
        retries: args.retry,
        retry_wait: args.retry_wait,
    })
}
