//! etrn-send: ask a mail server to deliver the mail it holds for this site (SMTP ETRN).

use std::process::ExitCode;

use etrnq::address::Domain;
use etrnq::args::etrn_send::{Cli, PROGRAM};
use etrnq::config::{Config, TlsPolicy};
use etrnq::dns::Resolver;
use etrnq::etrn::{self, Request, SMTP_PORT};
use etrnq::route::RelayHost;
use etrnq::smtp::{Credentials, EtrnArgument, Verification};
use etrnq::sysexits::{Failure, Status};

const PASSWORD_ENV: &str = "ETRN_PASSWORD";

fn main() -> ExitCode {
    etrnq::cli::main(PROGRAM, std::env::args_os().collect(), run)
}

fn run(args: Cli) -> anyhow::Result<Status> {
    let config = Config::load(args.config.as_deref())?;
    if !args.mx {
        let request = request(args, &config, None)?;
        return etrn::run(&request, &mut std::io::stdout());
    }
    let RelayHost::Name(domain) = args.server.host.clone() else {
        return Err(Failure::new(Status::Usage, "--mx needs a domain, not an address").into());
    };
    if args.server.port.is_some() {
        return Err(Failure::new(Status::Usage, "with --mx, give the port with -p").into());
    }
    let resolver = Resolver::for_program(&args.nameserver, &config, args.timeout)?;
    let hosts = etrn::find_backups(&resolver, &domain, &config.hostnames)?;
    let request = request(args, &config, Some(domain))?;
    let fanout = etrn::run_on_hosts(&request, &hosts, &mut std::io::stdout())?;
    for failure in &fanout.failures {
        eprintln!("{PROGRAM}: {failure}");
    }
    Ok(fanout.status)
}

/// Turns the arguments and the configuration into a request; `mx_domain` is the domain whose
/// backup MX hosts are asked, the arguments' default then.
fn request(args: Cli, config: &Config, mx_domain: Option<Domain>) -> anyhow::Result<Request> {
    let port = etrnq::cli::port(args.port, args.server.port, "SERVER", SMTP_PORT)?;
    let arguments = if let (true, Some(domain)) = (args.domains.is_empty(), &mx_domain) {
        vec![EtrnArgument::Domain(domain.clone())]
    } else if args.domains.is_empty() {
        config
            .hostnames
            .iter()
            .cloned()
            .map(EtrnArgument::Domain)
            .collect()
    } else {
        args.domains
    };
    if arguments.is_empty() {
        let file = config.source.as_ref().map_or_else(
            || "no configuration file".to_string(),
            |p| p.display().to_string(),
        );
        return Err(Failure::new(
            Status::Usage,
            format!("no DOMAIN given and no hostnames configured ({file})"),
        )
        .into());
    }
    let credentials = match &args.auth_user {
        None => None,
        Some(user) => Some(Credentials {
            user: user.clone(),
            password: etrnq::cli::secret(args.auth_password_file.as_deref(), PASSWORD_ENV)?,
        }),
    };
    Ok(Request {
        host: args.server.host,
        addresses: Vec::new(),
        port,
        arguments,
        helo: args.helo.unwrap_or_else(|| config.primary_hostname()),
        connect: etrnq::cli::connect_options(args.ipv4, args.ipv6, args.timeout, args.verbose),
        starttls: args.starttls.unwrap_or(TlsPolicy::Off),
        verification: if args.tls_insecure {
            Verification::Insecure
        } else {
            Verification::Required
        },
        credentials,
        force: args.force,
        retries: args.retry,
        retry_wait: args.retry_wait,
    })
}
