//! etrn-send: ask a mail server to deliver the mail it holds for this site (SMTP ETRN).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use etrnq::address::Domain;
use etrnq::config::{Config, TlsPolicy, parse_nameserver, parse_positive_interval};
use etrnq::dns::Resolver;
use etrnq::etrn::{self, Request, SMTP_PORT, Server};
use etrnq::route::RelayHost;
use etrnq::smtp::{
    AddressFamily, ConnectOptions, Credentials, EtrnArgument, Timeouts, Transcript, Verification,
};
use etrnq::sysexits::{Failure, Status};

const PROGRAM: &str = "etrn-send";
const PASSWORD_ENV: &str = "ETRN_PASSWORD";

/// Ask a mail server (usually the ISP's backup MX) to start delivering the mail it holds for
/// DOMAIN, with SMTP ETRN (RFC 1985).
///
/// Prints one line per DOMAIN: the domain and the server's reply. Exit status: 0 when every
/// domain got 250-253, 75 on a 4xx reply or a connection failure, 77 on 459 (not allowed for
/// this domain), 76 on a 5xx reply or when the server does not offer ETRN, 68 when SERVER does
/// not resolve, 64 on bad arguments.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, max_term_width = 100)]
struct Args {
    /// The server to ask: a host name, an IPv4 address or a bracketed IPv6 address
    /// (`[2001:db8::25]`), optionally with :PORT.
    #[arg(value_name = "SERVER", value_parser = Server::parse)]
    server: Server,

    /// Domains to ask for. `@domain` also asks for its subdomains, `#queue` names a queue of
    /// the server's. Default: this host's `hostnames` from the configuration.
    #[arg(value_name = "DOMAIN", value_parser = EtrnArgument::parse)]
    domains: Vec<EtrnArgument>,

    /// SERVER is a domain: send ETRN to each of its backup MX hosts at once (every MX host but
    /// those at its best preference and this host's `hostnames`). DOMAIN defaults to it.
    #[arg(long)]
    mx: bool,

    /// With --mx: the name server to ask for the MX records, IP[:PORT]; repeat for several.
    /// Replaces the configuration's dns.nameservers.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver, requires = "mx")]
    nameserver: Vec<SocketAddr>,

    /// TCP port (default 25). Same as SERVER:PORT.
    #[arg(short, long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,

    /// Name to give in EHLO/HELO (default: the first of `hostnames`, else this host's name).
    #[arg(long, value_name = "NAME", value_parser = Domain::parse)]
    helo: Option<Domain>,

    /// Time limit for connecting and for each reply, in seconds (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive_interval)]
    timeout: Duration,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,

    /// Use STARTTLS: `required` (the default when given without a value) fails unless the
    /// server offers it and its certificate is trusted; `opportunistic` uses it when offered
    /// without checking the certificate; `off` never uses it (the default).
    #[arg(
        long,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "required",
        value_parser = tls_policy,
    )]
    starttls: Option<TlsPolicy>,

    /// Accept any TLS certificate with --starttls (a self-signed server you know).
    #[arg(long, requires = "starttls")]
    tls_insecure: bool,

    /// Authenticate as USER (AUTH PLAIN, else LOGIN). The password comes from
    /// --auth-password-file or the ETRN_PASSWORD environment variable, never from the command
    /// line. Use --starttls with it so that the password travels encrypted.
    #[arg(long, value_name = "USER")]
    auth_user: Option<String>,

    /// File whose first line is the password for --auth-user.
    #[arg(long, value_name = "FILE", requires = "auth_user")]
    auth_password_file: Option<PathBuf>,

    /// Send ETRN even when the server does not advertise it.
    #[arg(long)]
    force: bool,

    /// Try again up to N times after a connection failure or a temporary (4xx) reply.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry: u32,

    /// Seconds to wait between tries (or 30s, 2m).
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_positive_interval)]
    retry_wait: Duration,

    /// Show the SMTP conversation on standard error.
    #[arg(short, long)]
    verbose: bool,

    /// Configuration file (default /etc/etrnq/etrnq.toml, or $ETRNQ_CONFIG).
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn tls_policy(text: &str) -> Result<TlsPolicy, String> {
    match text {
        "required" => Ok(TlsPolicy::Required),
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "off" => Ok(TlsPolicy::Off),
        other => Err(format!(
            "{other:?}: expected required, opportunistic or off"
        )),
    }
}

fn main() -> ExitCode {
    etrnq::cli::main(PROGRAM, std::env::args_os().collect(), run)
}

fn run(args: Args) -> anyhow::Result<Status> {
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
fn request(args: Args, config: &Config, mx_domain: Option<Domain>) -> anyhow::Result<Request> {
    let port = match (args.port, args.server.port) {
        (Some(flag), Some(suffix)) if flag != suffix => {
            return Err(Failure::new(
                Status::Usage,
                format!("-p {flag} contradicts the port {suffix} in SERVER"),
            )
            .into());
        }
        (flag, suffix) => flag.or(suffix).unwrap_or(SMTP_PORT),
    };
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
            password: password(args.auth_password_file.as_deref())?,
        }),
    };
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => AddressFamily::V4,
        (_, true) => AddressFamily::V6,
        _ => AddressFamily::Any,
    };
    Ok(Request {
        host: args.server.host,
        addresses: Vec::new(),
        port,
        arguments,
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

/// The AUTH password: the first line of the file, else the environment.
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
