//! Handing one message to the site's own mail system: by SMTP to a local server, or to a
//! command (an MDA, or queue-enqueue for the site's etrnq queue).
//!
//! The verdict decides the answer to the provider's final dot: [`Verdict::Delivered`] only
//! when the local system took the message for every recipient.
//!
//! - SMTP: one connection per message to the local server, no STARTTLS; every recipient
//!   accepted → delivered; every recipient refused with 5xx → refused; anything else (a 4xx, a
//!   refused connection, a mix) → deferred.
//! - Command: run without a shell, `%F` in an argument replaced by the sender (`<>` for the
//!   null sender), an argument that is exactly `%T` replaced by the recipients, one argument
//!   each; the message on standard input. Exit 0 → delivered; 65, 67, 68, 77 (data error, no
//!   such user or host, no permission) → refused; any other exit or a signal → deferred.
//!
//! Security: addresses reach the command as separate arguments and were parsed as addresses by
//! the SMTP parser; no shell sees them.

use std::fs::File;
use std::io::{self, BufReader};
use std::process::{Command, Stdio};

use crate::address::{Address, ReversePath};
use crate::route::RelayHost;
use crate::smtp::{
    Attempt, Capabilities, Endpoint, Message, Outbox, Reply, Setup, StartTls, TlsClient,
    Verdict as RecipientVerdict, Verification, establish,
};

use super::Request;

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Handoff {
    /// SMTP to a server of the site.
    Smtp { host: RelayHost, port: u16 },
    /// A command and its arguments, with `%F` and `%T`.
    Command(Vec<String>),
}

/// What the local system did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Not taken now; the provider keeps it.
    Deferred(String),
    /// Refused for good; the provider bounces it.
    Refused(String),
}

impl Verdict {
    /// The answer to the provider's final dot.
    pub fn reply(&self) -> Reply {
        match self {
            Verdict::Delivered => Reply::new(250, "2.0.0 Ok: delivered at the site"),
            Verdict::Deferred(why) => Reply::new(451, format!("4.3.0 Not delivered now: {why}")),
            Verdict::Refused(why) => Reply::new(550, format!("5.3.0 Refused at the site: {why}")),
        }
    }
}

impl Handoff {
    /// Hands the message (`body`, `size` octets, read from its start) to the site.
    pub fn hand_off(
        &self,
        from: &ReversePath,
        recipients: &[Address],
        body: BufReader<File>,
        size: u64,
        request: &Request,
    ) -> Verdict {
        match self {
            Handoff::Smtp { host, port } => {
                smtp(host, *port, from, recipients, body, size, request)
            }
            Handoff::Command(argv) => command(argv, from, recipients, body),
        }
    }
}

fn smtp(
    host: &RelayHost,
    port: u16,
    from: &ReversePath,
    recipients: &[Address],
    body: BufReader<File>,
    size: u64,
    request: &Request,
) -> Verdict {
    let tls = TlsClient::new(Verification::Insecure);
    let setup = Setup {
        helo: &request.helo,
        starttls: StartTls::Off,
        tls: &tls,
    };
    let endpoint = Endpoint::Host {
        host: host.clone(),
        port,
    };
    let mut connection = match establish(&endpoint, &request.connect, &setup) {
        Ok(session) => session.connection,
        Err(e) => return Verdict::Deferred(e.to_string()),
    };
    let mut outbox = One {
        message: Some(Message {
            from: from.clone(),
            recipients: recipients.to_vec(),
            size: Some(size),
            eight_bit: true,
            body: Box::new(body),
        }),
        verdict: None,
    };
    let sent = connection.deliver_all(&mut outbox);
    if sent.is_ok() {
        connection.quit();
    }
    match (outbox.verdict, sent) {
        (Some(verdict), _) => verdict,
        (None, Err(e)) => Verdict::Deferred(e.to_string()),
        (None, Ok(())) => Verdict::Deferred("the local server said nothing".into()),
    }
}

/// One message for the local server, and what became of it.
struct One {
    message: Option<Message>,
    verdict: Option<Verdict>,
}

impl Outbox for One {
    fn next(&mut self, _: &Capabilities) -> Option<Message> {
        self.message.take()
    }

    fn done(&mut self, attempt: Attempt<'_>) {
        self.verdict = Some(match attempt {
            Attempt::Answered(delivery) => {
                let verdicts: Vec<_> = delivery.verdicts.iter().flatten().collect();
                let accepted = verdicts
                    .iter()
                    .filter(|v| matches!(v, RecipientVerdict::Accepted(_)))
                    .count();
                let permanent = verdicts.iter().filter(|v| v.reply().is_permanent()).count();
                let total = delivery.verdicts.len();
                let said = verdicts
                    .iter()
                    .find(|v| !matches!(v, RecipientVerdict::Accepted(_)))
                    .map(|v| v.reply().to_string())
                    .unwrap_or_default();
                if accepted == total {
                    Verdict::Delivered
                } else if permanent == total {
                    Verdict::Refused(said)
                } else {
                    Verdict::Deferred(said)
                }
            }
            Attempt::Broken { error, .. } | Attempt::Stranded { error } => {
                Verdict::Deferred(error.to_string())
            }
        });
    }
}

fn command(
    argv: &[String],
    from: &ReversePath,
    recipients: &[Address],
    body: BufReader<File>,
) -> Verdict {
    let sender = match from {
        ReversePath::Null => "<>".to_string(),
        other => other.to_string(),
    };
    let mut args: Vec<String> = Vec::new();
    for arg in argv {
        if arg == "%T" {
            args.extend(recipients.iter().map(|r| r.to_string()));
        } else {
            args.push(arg.replace("%F", &sender));
        }
    }
    let Some((program, args)) = args.split_first() else {
        return Verdict::Deferred("no command".into());
    };
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Verdict::Deferred(format!("cannot run {program}: {e}")),
    };
    let mut body = body;
    let fed = child
        .stdin
        .take()
        .map(|mut stdin| io::copy(&mut body, &mut stdin));
    let status = match child.wait() {
        Ok(status) => status,
        Err(e) => return Verdict::Deferred(format!("{program}: {e}")),
    };
    match (status.code(), fed) {
        (Some(0), Some(Ok(_))) => Verdict::Delivered,
        (Some(code @ (65 | 67 | 68 | 77)), _) => {
            Verdict::Refused(format!("{program} exited with status {code}"))
        }
        (Some(0), _) => Verdict::Deferred(format!("{program} did not read the whole message")),
        (Some(code), _) => Verdict::Deferred(format!("{program} exited with status {code}")),
        (None, _) => Verdict::Deferred(format!("{program} was killed by a signal")),
    }
}
