//! What every program's command line shares, from argv to exit status.
//!
//! Parsing gives one-line usage errors (EX_USAGE, not clap's status 2); the `-C FILE` /
//! `--queue-dir DIR` pair locates configuration and queue. At the other end, [`finish`] is the
//! one place where a library error becomes an exit status: every program ends through it, a
//! failure prints exactly one line on stderr (`program: what went wrong`), and the first typed
//! error in the chain decides the `sysexits.h` status. The mapping lives here, at the edge, so
//! that `sysexits` names no error type and the error modules can all use it without a cycle.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, ConfigError};
use crate::queue::selection::{DomainPattern, Selection};
use crate::smtp::{AddressFamily, ConnectOptions, Timeouts, Transcript};
use crate::sysexits::{Failure, Status, Sysexit};

/// Options every program that touches the queue accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueOptions {
    /// Configuration file [default: $ETRNQ_CONFIG, else /etc/etrnq/etrnq.toml when it exists].
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Queue directory [default: $ETRNQ_QUEUE_DIR, else queue_dir from the configuration, else
    /// /var/spool/etrnq].
    #[arg(long = "queue-dir", value_name = "DIR")]
    pub queue_dir: Option<PathBuf>,
}

impl QueueOptions {
    /// The configuration in force, with `--queue-dir` applied.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.queue_dir {
            config.queue_dir = dir.clone();
        }
        Ok(config)
    }
}

/// `-R`, `-S`, `-I`: the messages a listing or a queue run is about (see `selection`).
#[derive(Debug, Clone, clap::Args)]
pub struct SelectionOptions {
    /// Recipients in DOMAIN (exactly); @DOMAIN adds its subdomains. Repeatable.
    #[arg(short = 'R', value_name = "DOMAIN", value_parser = DomainPattern::parse)]
    pub domains: Vec<DomainPattern>,

    /// Messages whose sender contains SENDER (case-insensitive). Repeatable.
    #[arg(short = 'S', value_name = "SENDER")]
    pub senders: Vec<String>,

    /// Messages whose queue id contains ID. Repeatable.
    #[arg(short = 'I', value_name = "ID")]
    pub ids: Vec<String>,
}

impl SelectionOptions {
    pub fn selection(self) -> Selection {
        Selection {
            domains: self.domains,
            senders: self.senders,
            ids: self.ids,
            held: false,
        }
    }
}

/// The port of a client program's server: `-p` (`flag`) or the `:PORT` of the server argument
/// (`suffix`, named `what` in the error), which must agree, else `default`.
pub fn port(
    flag: Option<u16>,
    suffix: Option<u16>,
    what: &str,
    default: u16,
) -> Result<u16, Failure> {
    match (flag, suffix) {
        (Some(flag), Some(suffix)) if flag != suffix => Err(Failure::new(
            Status::Usage,
            format!("-p {flag} contradicts the port {suffix} in {what}"),
        )),
        (flag, suffix) => Ok(flag.or(suffix).unwrap_or(default)),
    }
}

/// How a client program reaches its server: `-4`/`-6`, `--timeout` for every step, and the
/// conversation on standard error with `-v`.
pub fn connect_options(
    ipv4: bool,
    ipv6: bool,
    timeout: std::time::Duration,
    verbose: bool,
) -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts::uniform(timeout),
        family: match (ipv4, ipv6) {
            (true, _) => AddressFamily::V4,
            (_, true) => AddressFamily::V6,
            _ => AddressFamily::Any,
        },
        transcript: if verbose {
            Transcript::Stderr
        } else {
            Transcript::Off
        },
    }
}

/// A secret for `--auth-user`: the first line of `file` (`--auth-password-file`), else the
/// environment variable `env`; never the command line, where every user of the host can read it.
pub fn secret(file: Option<&std::path::Path>, env: &str) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::new(Status::NoInput, format!("{}: {e}", path.display())))
            .map_err(|e| anyhow::Error::new(e).context("reading the password file"))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    std::env::var(env).map_err(|_| {
        Failure::new(
            Status::Usage,
            format!("--auth-user needs --auth-password-file or ${env}"),
        )
        .into()
    })
}

/// A program's whole life: parse `args` (the process arguments, rewritten where the program
/// speaks sendmail's spellings), run, and end with the status the outcome asks for.
pub fn main<T: Parser>(
    program: &str,
    args: Vec<OsString>,
    run: impl FnOnce(T) -> anyhow::Result<Status>,
) -> ExitCode {
    match parse_from::<T>(program, args) {
        Ok(parsed) => finish(program, run(parsed)),
        Err(code) => code,
    }
}

/// Parses the process arguments of a monitoring check: `--help` and `--version` print and exit
/// 0; a usage error prints one line and exits 3 (UNKNOWN), as Nagios expects.
pub fn parse_check<T: Parser>(program: &str) -> Result<T, ExitCode> {
    T::try_parse().map_err(|err| usage_error(program, err, ExitCode::from(CHECK_UNKNOWN)))
}

/// Parses `args`: `--help` and `--version` print and end the program with status 0; a usage
/// error prints one line and ends it with EX_USAGE rather than clap's status 2.
pub fn parse_from<T: Parser>(program: &str, args: Vec<OsString>) -> Result<T, ExitCode> {
    T::try_parse_from(args).map_err(|err| usage_error(program, err, Status::Usage.into()))
}

/// Rewrites sendmail's queue selectors into their plain forms: `-qRdomain` and `-qR domain`
/// become `-R domain`; likewise `-qS` (sender) and `-qI` (queue id). Everything else, and
/// everything after `--`, is passed through untouched.
pub fn sendmail_selectors(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    rewrite_options(args, |text| {
        let kind = ["R", "S", "I"]
            .into_iter()
            .find(|kind| text.starts_with(&format!("-q{kind}")))?;
        let value = &text[3..];
        Some(
            std::iter::once(format!("-{kind}"))
                .chain((!value.is_empty()).then(|| value.to_string()))
                .collect(),
        )
    })
}

/// Passes `args` through, replacing each option before `--` for which `rewrite` has words.
fn rewrite_options(
    args: impl IntoIterator<Item = OsString>,
    rewrite: impl Fn(&str) -> Option<Vec<String>>,
) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        match rewrite(&arg.to_string_lossy()) {
            Some(words) => out.extend(words.into_iter().map(OsString::from)),
            None => out.push(arg),
        }
    }
    out
}

fn usage_error(program: &str, err: clap::Error, usage: ExitCode) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return Status::Ok.into();
    }
    // clap's message may go on over indented lines (the missing arguments); the usage summary
    // after it is left to --help.
    let rendered = err.render().to_string();
    let message = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("{program}: {message} (try '{program} --help')");
    usage
}

/// Rewrites sendmail's queue-run spellings for `queue-run`: `-q` alone is a plain run and is
/// dropped, `-q30m` becomes `--every 30m`, `-qf` becomes `-f`, and the selectors are rewritten as
/// [`sendmail_selectors`] does.
pub fn sendmail_queue_run(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    rewrite_options(sendmail_selectors(args), |text| {
        match text.strip_prefix("-q")? {
            "" => Some(Vec::new()),
            "f" => Some(vec!["-f".to_string()]),
            interval if interval.starts_with(|c: char| c.is_ascii_digit()) => {
                Some(vec!["--every".to_string(), interval.to_string()])
            }
            _ => None,
        }
    })
}

/// The status an error chain asks for: the first typed error found from the outside in; an I/O
/// error with no typed wrapper is classified by its errno; anything else is a software error.
pub fn status_of(err: &anyhow::Error) -> Status {
    for cause in err.chain() {
        if let Some(status) = typed_status(cause) {
            return status;
        }
    }
    Status::Software
}

fn typed_status(cause: &(dyn std::error::Error + 'static)) -> Option<Status> {
    macro_rules! typed {
        ($($error:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$error>() {
                    return Some(e.status());
                }
            )*
        };
    }
    typed!(
        Failure,
        ConfigError,
        crate::admin::AdminError,
        crate::address::AddressError,
        crate::queue::QueueError,
        crate::submission::SubmissionError,
        crate::report::ReportError,
        crate::smtp::SmtpError,
        crate::smtpd::SmtpdError,
        crate::dns::DnsError,
        crate::odmr::FetchError,
    );
    cause.downcast_ref::<std::io::Error>().map(Status::of_io)
}

/// Ends a program: prints a failure as one line on stderr, prefixed with the program name, and
/// turns the outcome into the process exit code. A closed stdout (`mailq | head`) is not an error.
pub fn finish(program: &str, outcome: anyhow::Result<Status>) -> ExitCode {
    match outcome {
        Ok(status) => status.into(),
        Err(err) if is_broken_pipe(&err) => Status::Ok.into(),
        Err(err) => {
            report(program, &err);
            status_of(&err).into()
        }
    }
}

/// The exit status of a monitoring check that could not check (Nagios plugin convention).
pub const CHECK_UNKNOWN: u8 = 3;

/// Ends a monitoring check such as mx-check, whose callers (Nagios, Icinga) read 0 OK,
/// 1 WARNING, 2 CRITICAL and 3 UNKNOWN and take anything else for a broken plugin: success exits
/// with the check's state; a failure to check at all (usage, configuration, resolver set-up) is
/// reported like [`finish`] reports it and exits 3, whatever its sysexits status would be.
pub fn finish_check(program: &str, outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(state) => ExitCode::from(state),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(CHECK_UNKNOWN),
        Err(err) => {
            report(program, &err);
            ExitCode::from(CHECK_UNKNOWN)
        }
    }
}

fn report(program: &str, err: &anyhow::Error) {
    eprintln!("{program}: {}", one_line(err));
}

/// The error chain on one line, outermost first, joined by ": ". A cause whose text the error
/// around it already shows (a typed error that prints its OS error and also names it as its
/// source) is left out, so that no reason is said twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut message = String::new();
    let mut outer = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.is_empty() {
            message.push_str(&text);
        } else if !outer.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        outer = text;
    }
    message.replace('\n', " ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        sendmail_selectors(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_port_comes_from_the_flag_or_the_suffix_and_they_must_agree() {
        assert_eq!(port(None, None, "SERVER", 25).unwrap(), 25);
        assert_eq!(port(Some(2525), None, "SERVER", 25).unwrap(), 2525);
        assert_eq!(port(None, Some(587), "SERVER", 25).unwrap(), 587);
        assert_eq!(port(Some(587), Some(587), "SERVER", 25).unwrap(), 587);
        let refused = port(Some(2525), Some(587), "PROVIDER", 366).unwrap_err();
        assert_eq!(refused.status, Status::Usage);
        assert_eq!(
            refused.message,
            "-p 2525 contradicts the port 587 in PROVIDER"
        );
    }

    #[test]
    fn sendmail_selector_spellings() {
        assert_eq!(
            rewrite(&["mailq", "-qRcustomer.test"]),
            ["mailq", "-R", "customer.test"]
        );
        assert_eq!(
            rewrite(&["mailq", "-qR", "customer.test"]),
            ["mailq", "-R", "customer.test"]
        );
        assert_eq!(
            rewrite(&["mailq", "-qSbob", "-qI1x"]),
            ["mailq", "-S", "bob", "-I", "1x"]
        );
        assert_eq!(rewrite(&["mailq", "--", "-qRx"]), ["mailq", "--", "-qRx"]);
        assert_eq!(rewrite(&["mailq", "-v"]), ["mailq", "-v"]);
    }

    #[test]
    fn sendmail_queue_run_spellings() {
        let rewrite = |args: &[&str]| -> Vec<String> {
            sendmail_queue_run(args.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(rewrite(&["queue-run", "-q"]), ["queue-run"]);
        assert_eq!(
            rewrite(&["queue-run", "-q30m"]),
            ["queue-run", "--every", "30m"]
        );
        assert_eq!(rewrite(&["queue-run", "-qf"]), ["queue-run", "-f"]);
        assert_eq!(
            rewrite(&["queue-run", "-q", "-R", "a.example"]),
            ["queue-run", "-R", "a.example"]
        );
        assert_eq!(
            rewrite(&["queue-run", "-qRa.example"]),
            ["queue-run", "-R", "a.example"]
        );
        assert_eq!(rewrite(&["queue-run", "-q!Ra"]), ["queue-run", "-q!Ra"]);
    }
}

#[cfg(test)]
mod exit_status_tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn outermost_typed_error_decides_the_status() {
        let inner = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let err = anyhow::Error::new(inner).context("writing the message");
        assert_eq!(status_of(&err), Status::TempFail);

        let err = anyhow::Error::new(Failure::new(Status::Usage, "no recipients"))
            .context("queue-enqueue");
        assert_eq!(status_of(&err), Status::Usage);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:2525: {source}")]
    struct Listen {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_error_around_it_shows_is_said_once() {
        let source = std::io::Error::from_raw_os_error(nix::libc::EADDRINUSE);
        let os = source.to_string();
        let err = anyhow::Error::new(Listen { source });
        assert_eq!(
            one_line(&err),
            format!("cannot listen on 127.0.0.1:2525: {os}")
        );

        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(nix::libc::ENOENT))
            .context("reading the password file")
            .context("etrn.toml");
        assert_eq!(
            one_line(&err),
            format!(
                "etrn.toml: reading the password file: {}",
                std::io::Error::from_raw_os_error(nix::libc::ENOENT)
            )
        );
    }

    #[test]
    fn untyped_errors_are_software_errors() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("surprise"));
        let err = err.context("outer").unwrap_err();
        assert_eq!(status_of(&err), Status::Software);
    }
}
