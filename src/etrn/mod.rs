//! The ETRN session: ask a mail server to start delivering the mail it holds for us (RFC 1985).
//!
//! # Description
//!
//! One session: greeting, EHLO (HELO when EHLO is refused), STARTTLS and AUTH when asked, one
//! `ETRN` per argument, QUIT. Each argument's reply becomes an [`Outcome`]; the outcomes and any
//! failure of the session decide the exit status, the worst one winning: success < temporary
//! (75) < refused for this domain (459, 77) < protocol (76) < no such host (68).
//!
//! With `--mx`, the same arguments go to every backup MX host of a domain at once (see
//! `backups`).
//!
//! With retries, a session that failed at the connection level or on a 4xx is repeated after a
//! pause for the arguments that have no final answer yet, which is what a dial-up hook needs
//! when the link and the name servers come up a little after the hook runs.
//!
//! # Promises
//!
//! - Arguments are typed ([`EtrnArgument`]): a domain is a validated `Domain`, so nothing the
//!   user typed can add a second command to the session.
//! - Every step is bounded by the session's time limit.
//! - Only arguments that have a reply are reported on stdout; a failure that left some without
//!   one is the error line.
//!
//! # Limits
//!
//! ETRN only asks: a 250 means the server started a queue run, not that mail arrived. A server
//! that answers HELO only is sent ETRN anyway, since it cannot say whether it has it.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;

use crate::address::Domain;
use crate::config::TlsPolicy;
use crate::route::RelayHost;
use crate::smtp::{
    AddressFamily, Command, ConnectOptions, Connection, Credentials, Endpoint, EtrnArgument, Reply,
    ReplyCode, Setup, SmtpError, StartTls, TlsClient, TlsErrorKind, Verification, establish,
};
use crate::sysexits::{Failure, Status, Sysexit};

mod backups;

pub use backups::{Backup, Fanout, MAX_HOSTS, backup_hosts, find_backups, run_on_hosts};

/// The SMTP port etrn-send uses unless told otherwise.
pub const SMTP_PORT: u16 = 25;

/// The server to ask, as written on the command line: `name`, `IPv4`, `[IPv6]`, each with an
/// optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: RelayHost,
    pub port: Option<u16>,
}

impl Server {
    pub fn parse(text: &str) -> Result<Server, String> {
        use crate::address::{HostPort, HostProblem};
        let brackets = || format!("{text:?}: brackets must hold an IP address");
        match HostPort::parse(text) {
            Ok(HostPort {
                host: RelayHost::Name(_),
                bracketed: true,
                ..
            }) => Err(brackets()),
            Ok(HostPort { host, port, .. }) => Ok(Server { host, port }),
            Err(e) => Err(match e.problem {
                HostProblem::BadPort(port) => format!("{text:?}: {port:?} is not a port number"),
                HostProblem::BadBracketed(_) => brackets(),
                HostProblem::NeedsBrackets(_) => {
                    format!("{text:?}: write an IPv6 address with a port as [address]:port")
                }
                HostProblem::BadHost(refused) => refused.to_string(),
                HostProblem::Unbalanced | HostProblem::NotAnAddress(_) => e.to_string(),
            }),
        }
    }
}

impl std::str::FromStr for Server {
    type Err = String;
    fn from_str(text: &str) -> Result<Server, String> {
        Server::parse(text)
    }
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Request {
    pub host: RelayHost,
    /// The host's addresses, when the caller found them (`--mx` asks the configured resolver);
    /// empty: the system's resolver finds them.
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub arguments: Vec<EtrnArgument>,
    pub helo: Domain,
    pub connect: ConnectOptions,
    pub starttls: TlsPolicy,
    /// Whether the certificate must be trusted when STARTTLS is required. Opportunistic TLS
    /// never insists, as Postfix's `may` level does not.
    pub verification: Verification,
    pub credentials: Option<Credentials>,
    /// Send ETRN even when EHLO did not announce it.
    pub force: bool,
    /// How many times to try again after a temporary failure.
    pub retries: u32,
    pub retry_wait: Duration,
}

/// The server's answer to one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub argument: EtrnArgument,
    pub reply: Reply,
}

impl Outcome {
    /// RFC 1985's replies: 250–253 the queue was started or there is nothing to do, 458 not now,
    /// 459 not for this name, 5xx a refusal or a server without ETRN.
    pub fn status(&self) -> Status {
        match self.reply.code.value() {
            250..=253 => Status::Ok,
            459 => Status::NoPerm,
            400..=499 => Status::TempFail,
            _ => Status::Protocol,
        }
    }

    /// A failure that another session might turn into a success.
    fn worth_retrying(&self) -> bool {
        self.status() == Status::TempFail
    }
}

impl fmt::Display for Outcome {
    /// `customer.example 250 2.0.0 Queuing for node customer.example started`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.argument, self.reply)
    }
}

/// What a run came to: the answers received and the failure that stopped the session, if any.
#[derive(Debug)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub failure: Option<SmtpError>,
}

impl Report {
    /// The worst status among the outcomes and the failure.
    pub fn status(&self) -> Status {
        self.outcomes
            .iter()
            .map(Outcome::status)
            .chain(self.failure.iter().map(Sysexit::status))
            .max_by_key(|&status| severity(status))
            .unwrap_or(Status::Ok)
    }
}

fn severity(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::TempFail => 1,
        Status::NoPerm => 2,
        Status::Protocol => 3,
        _ => 4,
    }
}

/// Runs the request, writes one line per answered argument to `out` in argument order, and
/// returns the status, or the failure as an error carrying the worst status.
pub fn run(request: &Request, out: &mut dyn Write) -> anyhow::Result<Status> {
    let report = send(request);
    for outcome in &report.outcomes {
        writeln!(out, "{outcome}").context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")?;
    let status = report.status();
    match report.failure {
        None => Ok(status),
        Some(failure) if failure.status() == status => Err(failure.into()),
        Some(failure) => Err(Failure::new(status, failure.to_string()).into()),
    }
}

/// Runs the request, retrying as asked, and reports every argument's final answer.
pub fn send(request: &Request) -> Report {
    let tls = TlsClient::new(match request.starttls {
        TlsPolicy::Required => request.verification,
        TlsPolicy::Opportunistic | TlsPolicy::Off => Verification::Insecure,
    });
    let mut answers: Vec<Option<Reply>> = vec![None; request.arguments.len()];
    let mut failure;
    let mut attempt = 0;
    loop {
        let pending: Vec<usize> = (0..request.arguments.len())
            .filter(|&i| {
                answers[i]
                    .as_ref()
                    .is_none_or(|reply| outcome(request, i, reply).worth_retrying())
            })
            .collect();
        failure = session(request, &tls, &pending, &mut answers).err();
        let unsettled = pending.iter().any(|&i| {
            answers[i]
                .as_ref()
                .is_none_or(|reply| outcome(request, i, reply).worth_retrying())
        });
        let transient = failure.as_ref().is_none_or(SmtpError::is_transient);
        if !unsettled || !transient || attempt >= request.retries {
            break;
        }
        attempt += 1;
        request.connect.transcript.note(&format!(
            "{}; trying again in {} s ({attempt} of {})",
            failure
                .as_ref()
                .map_or_else(|| "temporary refusal".to_string(), ToString::to_string),
            request.retry_wait.as_secs(),
            request.retries
        ));
        std::thread::sleep(request.retry_wait);
    }
    let outcomes = answers
        .into_iter()
        .enumerate()
        .filter_map(|(i, reply)| reply.map(|reply| outcome(request, i, &reply)))
        .collect();
    Report { outcomes, failure }
}

fn outcome(request: &Request, index: usize, reply: &Reply) -> Outcome {
    Outcome {
        argument: request.arguments[index].clone(),
        reply: reply.clone(),
    }
}

/// One SMTP session for the arguments at `pending`, recording each reply as it arrives.
fn session(
    request: &Request,
    tls: &TlsClient,
    pending: &[usize],
    answers: &mut [Option<Reply>],
) -> Result<(), SmtpError> {
    let setup = Setup {
        helo: &request.helo,
        // Opportunistic here does not go on in clear after a failed STARTTLS: AUTH may follow,
        // and a failed handshake is reported (75) rather than hidden.
        starttls: match request.starttls {
            TlsPolicy::Off => StartTls::Off,
            TlsPolicy::Opportunistic => StartTls::WhenOffered,
            TlsPolicy::Required => StartTls::Required,
        },
        tls,
    };
    let mut conn = connect(request, &setup).map_err(|e| worded_for_the_command_line(e, tls))?;
    if let Some(credentials) = &request.credentials {
        conn.authenticate(credentials)?;
    }
    if conn.capabilities().etrn() {
        conn.note("server advertises ETRN");
    } else if !conn.is_extended() {
        conn.note("server answered HELO only, so it cannot advertise ETRN; trying ETRN anyway");
    } else if request.force {
        conn.note("server does not advertise ETRN; sending it anyway (--force)");
    } else {
        let err = SmtpError::NotOffered {
            peer: conn.peer().to_string(),
            detail: "server does not advertise ETRN (--force sends it anyway)".to_string(),
        };
        conn.quit();
        return Err(err);
    }
    for &index in pending {
        let reply = conn.command(&Command::Etrn(request.arguments[index].clone()))?;
        answers[index] = Some(reply.clone());
        if reply.code == ReplyCode::SERVICE_UNAVAILABLE {
            // The server is closing the session and will answer nothing more.
            return Err(SmtpError::Rejected {
                peer: conn.peer().to_string(),
                context: "server closed the session".to_string(),
                reply,
            });
        }
    }
    conn.quit();
    Ok(())
}

/// A session with the request's host: by name, or at each of its addresses in turn until one
/// answers (the last failure is reported; one that is not temporary ends the attempts).
fn connect(request: &Request, setup: &Setup) -> Result<Connection, SmtpError> {
    if request.addresses.is_empty() {
        let endpoint = Endpoint::Host {
            host: request.host.clone(),
            port: request.port,
        };
        return establish(&endpoint, &request.connect, setup)
            .map(|session| session.connection)
            .map_err(|failed| failed.error);
    }
    let family = request.connect.family;
    let usable: Vec<IpAddr> = request
        .addresses
        .iter()
        .copied()
        .filter(|ip| match family {
            AddressFamily::Any => true,
            AddressFamily::V4 => ip.is_ipv4(),
            AddressFamily::V6 => ip.is_ipv6(),
        })
        .collect();
    let mut last = SmtpError::NoHost {
        host: request.host.to_string(),
        detail: "no address of the asked family".to_string(),
    };
    for ip in usable {
        let endpoint = Endpoint::Address {
            addr: SocketAddr::new(ip, request.port),
            name: Some(request.host.to_string()),
        };
        match establish(&endpoint, &request.connect, setup) {
            Ok(session) => return Ok(session.connection),
            Err(failed) if failed.error.is_transient() => last = failed.error,
            Err(failed) => return Err(failed.error),
        }
    }
    Err(last)
}

/// Failures of the session's opening, worded with the option that changes them.
fn worded_for_the_command_line(error: SmtpError, tls: &TlsClient) -> SmtpError {
    match error {
        SmtpError::Tls {
            peer,
            kind: TlsErrorKind::Certificate,
            detail,
        } if tls.verification() == Verification::Required => SmtpError::Tls {
            peer,
            kind: TlsErrorKind::Certificate,
            detail: format!("{detail} (--tls-insecure accepts it)"),
        },
        SmtpError::TlsNotOffered { peer } => SmtpError::NotOffered {
            peer,
            detail: "server does not offer STARTTLS, which --starttls requires".to_string(),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome_with(code: &str) -> Outcome {
        Outcome {
            argument: EtrnArgument::parse("customer.example").unwrap(),
            reply: Reply::from_lines(&[code]).unwrap(),
        }
    }

    #[test]
    fn reply_codes_map_to_statuses() {
        let cases = [
            ("250 Queuing started", Status::Ok),
            ("251 OK, no messages waiting", Status::Ok),
            ("252 OK, pending messages for node started", Status::Ok),
            ("253 OK, 14 pending messages started", Status::Ok),
            ("458 Unable to queue messages", Status::TempFail),
            (
                "459 <customer.example>: service unavailable",
                Status::NoPerm,
            ),
            ("421 closing", Status::TempFail),
            ("500 Syntax error", Status::Protocol),
            ("501 Syntax error in parameters", Status::Protocol),
            ("502 not implemented", Status::Protocol),
            ("504 not implemented for this argument", Status::Protocol),
            ("220 what", Status::Protocol),
        ];
        for (reply, status) in cases {
            assert_eq!(outcome_with(reply).status(), status, "{reply}");
        }
    }

    #[test]
    fn the_worst_outcome_decides() {
        let report = |codes: &[&str]| Report {
            outcomes: codes.iter().map(|c| outcome_with(c)).collect(),
            failure: None,
        };
        assert_eq!(report(&[]).status(), Status::Ok);
        assert_eq!(report(&["250 a", "458 b"]).status(), Status::TempFail);
        assert_eq!(report(&["458 a", "459 b"]).status(), Status::NoPerm);
        assert_eq!(
            report(&["459 a", "501 b", "250 c"]).status(),
            Status::Protocol
        );
        let mut with_failure = report(&["459 a"]);
        with_failure.failure = Some(SmtpError::Closed {
            peer: "p".to_string(),
            during: "waiting".to_string(),
        });
        assert_eq!(with_failure.status(), Status::NoPerm);
    }

    #[test]
    fn server_forms() {
        let ok = [
            ("mail.isp.example", "mail.isp.example", None),
            ("mail.isp.example:2525", "mail.isp.example", Some(2525)),
            ("192.0.2.1", "192.0.2.1", None),
            ("192.0.2.1:26", "192.0.2.1", Some(26)),
            ("[2001:db8::1]", "2001:db8::1", None),
            ("[2001:db8::1]:587", "2001:db8::1", Some(587)),
            ("[IPv6:::1]:25", "::1", Some(25)),
            ("::1", "::1", None),
        ];
        for (text, host, port) in ok {
            let server = Server::parse(text).unwrap();
            assert_eq!(
                (server.host.to_string().as_str(), server.port),
                (host, port),
                "{text}"
            );
        }
        for bad in [
            "",
            "mail.isp.example:0",
            "mail.isp.example:x",
            "mail.isp.example:70000",
            "[2001:db8::1",
            "[mail.isp.example]",
            "[::1]25",
            "2001:db8::1:x",
            "bad host",
            "a;rm -rf",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
