//! One ODMR session: the restricted profile from greeting to ATRN or QUIT.
//!
//! ```text
//!   Connected --EHLO/HELO--> Greeted --AUTH--> Authenticated(account) --ATRN 250--> turnaround
//!   any phase --STARTTLS---> Connected (what AUTH established is forgotten, RFC 3207 §4.2)
//! ```
//!
//! Commands are answered one at a time in order, over the same [`Channel`] as the SMTP
//! service, so the same line limits, deadlines and error count apply.

use std::io;
use std::time::Instant;

use crate::address::Domain;
use crate::queue::selection::DomainPattern;
use crate::smtp::Reply;
use crate::smtpd::flush;
use crate::smtpd::request::{self, Request};
use crate::smtpd::wire::{Channel, LineFault, is_timeout};
use crate::smtpd::{Client, Server};

use super::accounts::Account;
use super::sasl::{self, Login, Mechanism};
use super::{Claim, MAX_SESSION_FAILURES, Provider, turnaround};

enum Phase {
    Connected,
    Greeted,
    Authenticated(Account),
}

/// Whether the session goes on after a command.
enum Flow<'p> {
    Continue,
    Close,
    /// 250 was said to ATRN: the connection turns around for these domains.
    Turn(Turn<'p>),
}

/// What the turnaround delivers, and the claim on its domains it holds meanwhile.
struct Turn<'p> {
    account: Account,
    domains: Vec<Domain>,
    _claim: Claim<'p>,
}

struct Session<'s> {
    server: &'s Server,
    provider: &'s Provider,
    channel: Channel,
    client: Client,
    phase: Phase,
    errors: u32,
    failures: u32,
    last: &'static str,
}

/// Runs one ODMR session to its end.
pub fn run(server: &Server, provider: &Provider, channel: Channel, client: Client) {
    server.log.info(&format!("ODMR connect from {client}"));
    let mut session = Session {
        server,
        provider,
        channel,
        client,
        phase: Phase::Connected,
        errors: 0,
        failures: 0,
        last: "CONNECT",
    };
    let conversation = session.converse();
    let errors = session.errors;
    let ending = match conversation {
        Ok(None) => String::new(),
        Ok(Some(turn)) => {
            let ending = turnaround::deliver(
                server,
                session.channel,
                client,
                &turn.account.user,
                &turn.domains,
            );
            drop(turn);
            ending
        }
        Err(e) if is_timeout(&e) => {
            let text = format!("4.4.2 {} Error: timeout exceeded", server.hostname);
            let _ = session.channel.reply(&Reply::new(421, text));
            let _ = session.channel.flush();
            format!(" (timeout after {})", session.last)
        }
        Err(e) => format!(" (lost connection after {}: {e})", session.last),
    };
    server.log.info(&format!(
        "ODMR disconnect from {client} errors={errors}{ending}"
    ));
}

impl<'s> Session<'s> {
    fn host(&self) -> &Domain {
        &self.server.hostname
    }

    fn converse(&mut self) -> io::Result<Option<Turn<'s>>> {
        let limits = &self.server.limits;
        self.channel.set_write_timeout(limits.command_timeout)?;
        let greeting = Reply::new(220, format!("{} ESMTP etrnq ODMR", self.host()));
        self.channel.reply(&greeting)?;
        loop {
            self.channel
                .expect_command(self.server.limits.command_timeout);
            let Some(line) = self.channel.read_command()? else {
                if self.server.is_stopping() {
                    let text = format!("4.3.2 {} Service shutting down", self.host());
                    self.channel.reply(&Reply::new(421, text))?;
                    self.channel.flush()?;
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection",
                ));
            };
            let flow = match line {
                Err(LineFault::TooLong) => {
                    self.last = "long line";
                    self.error(Reply::new(
                        500,
                        "5.5.2 Error: command line longer than 512 octets",
                    ))?
                }
                Err(LineFault::BareCrOrLf) => {
                    self.last = "bare CR or LF";
                    self.error(Reply::new(500, "5.5.2 Error: bare <CR> or <LF> in command"))?
                }
                Ok(bytes) => self.handle(&bytes)?,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.channel.flush()?;
                    return Ok(None);
                }
                Flow::Turn(turn) => return Ok(Some(turn)),
            }
        }
    }

    /// AUTH and ATRN are this service's own; the rest are read as the SMTP service reads them.
    fn handle(&mut self, line: &[u8]) -> io::Result<Flow<'s>> {
        let text = std::str::from_utf8(line)
            .ok()
            .filter(|t| t.bytes().all(|b| b == b'\t' || !b.is_ascii_control()) && t.is_ascii());
        if let Some(text) = text {
            let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
            let rest = rest.trim();
            if verb.eq_ignore_ascii_case("AUTH") {
                return self.auth(rest);
            }
            if verb.eq_ignore_ascii_case("ATRN") {
                return self.atrn(rest);
            }
        }
        let request = match request::parse(line) {
            Ok(request) => request,
            Err(refusal) => {
                self.last = "unknown command";
                return self.error(refusal);
            }
        };
        match request {
            Request::Ehlo(name) => self.hello(name, true),
            Request::Helo(name) => self.hello(name, false),
            Request::StartTls => self.start_tls(),
            Request::Rset | Request::Noop => {
                self.last = "NOOP";
                self.reply(Reply::new(250, "2.0.0 Ok"))
            }
            Request::Help => {
                self.last = "HELP";
                self.reply(Reply::new(
                    214,
                    "2.0.0 Commands: EHLO AUTH ATRN STARTTLS NOOP RSET HELP QUIT",
                ))
            }
            Request::Quit => {
                self.last = "QUIT";
                let text = format!("2.0.0 {} closing connection", self.host());
                self.channel.reply(&Reply::new(221, text))?;
                Ok(Flow::Close)
            }
            Request::Bdat(_) => {
                // Its chunk cannot be told from commands without reading it: the session ends.
                self.last = "BDAT";
                self.channel.reply(&Reply::new(
                    502,
                    "5.5.1 Error: mail is not taken on the ODMR service; closing connection",
                ))?;
                Ok(Flow::Close)
            }
            Request::Mail { .. }
            | Request::Rcpt(_)
            | Request::Data
            | Request::Vrfy
            | Request::Etrn(_) => {
                self.last = "MAIL";
                self.error(Reply::new(
                    502,
                    "5.5.1 Error: mail is not taken on the ODMR service; use port 25",
                ))
            }
        }
    }

    /// Replies with a client error and counts it; too many end the session.
    fn error(&mut self, reply: Reply) -> io::Result<Flow<'s>> {
        self.channel.reply(&reply)?;
        self.errors += 1;
        if self.errors >= self.server.limits.max_errors {
            self.server.log.warning(&format!(
                "ODMR: too many errors from {}; hanging up after {}",
                self.client, self.last
            ));
            let text = format!("4.7.0 {} Error: too many errors", self.host());
            self.channel.reply(&Reply::new(421, text))?;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    fn reply(&mut self, reply: Reply) -> io::Result<Flow<'s>> {
        self.channel.reply(&reply)?;
        Ok(Flow::Continue)
    }

    fn tls_offer(&self) -> Option<std::sync::Arc<rustls::ServerConfig>> {
        if self.channel.is_tls() || !self.channel.can_start_tls() {
            return None;
        }
        self.server.tls.clone()
    }

    fn hello(&mut self, name: Domain, extended: bool) -> io::Result<Flow<'s>> {
        self.last = if extended { "EHLO" } else { "HELO" };
        self.server
            .log
            .info(&format!("ODMR {} from {}: {name}", self.last, self.client));
        // A new greeting keeps a login, as Postfix's does; only STARTTLS forgets it.
        if let Phase::Connected = self.phase {
            self.phase = Phase::Greeted;
        }
        let greeting = format!("{} Hello {name} {}", self.host(), self.client.literal());
        if !extended {
            return self.reply(Reply::new(250, greeting));
        }
        let starttls = if self.tls_offer().is_some() {
            "\nSTARTTLS"
        } else {
            ""
        };
        let text = format!(
            "{greeting}\nAUTH {}\nATRN\nENHANCEDSTATUSCODES{starttls}",
            Mechanism::offered(self.channel.is_tls())
        );
        self.reply(Reply::new(250, text))
    }

    fn start_tls(&mut self) -> io::Result<Flow<'s>> {
        self.last = "STARTTLS";
        if self.channel.is_tls() {
            return self.error(Reply::new(503, "5.5.1 Error: TLS already active"));
        }
        let Some(config) = self.tls_offer() else {
            return self.error(Reply::new(502, "5.5.1 Error: command not implemented"));
        };
        if !crate::smtpd::session::start_tls(self.server, &mut self.channel, &self.client, config)?
        {
            return Ok(Flow::Close);
        }
        self.phase = Phase::Connected;
        Ok(Flow::Continue)
    }

    fn auth(&mut self, arguments: &str) -> io::Result<Flow<'s>> {
        self.last = "AUTH";
        match self.phase {
            Phase::Connected => {
                return self.error(Reply::new(503, "5.5.1 Error: send EHLO first"));
            }
            Phase::Authenticated(_) => {
                return self.error(Reply::new(503, "5.5.1 Error: already authenticated"));
            }
            Phase::Greeted => {}
        }
        let now = Instant::now();
        if self.provider.is_barred(self.client.ip(), now) {
            self.server.log.warning(&format!(
                "ODMR AUTH from {}: refused, too many failed logins lately",
                self.client
            ));
            let text = format!(
                "4.7.0 {} Error: too many failed logins from {}; try again later",
                self.host(),
                self.client.literal()
            );
            self.channel.reply(&Reply::new(421, text))?;
            return Ok(Flow::Close);
        }
        let (name, initial) = match arguments.split_once(' ') {
            Some((name, initial)) => (name, Some(initial.trim())),
            None => (arguments, None),
        };
        let Some(mechanism) = Mechanism::parse(name) else {
            return self.error(Reply::new(
                504,
                "5.5.4 Error: unrecognized authentication type",
            ));
        };
        if mechanism.needs_tls() && !self.channel.is_tls() {
            return self.error(Reply::new(
                538,
                "5.7.11 Encryption required for requested authentication mechanism",
            ));
        }
        let table = match self.provider.accounts.current() {
            Ok(table) => table,
            Err(why) => {
                self.server
                    .log
                    .warning(&format!("ODMR accounts unusable: {why}"));
                return self.reply(Reply::new(454, "4.7.0 Temporary authentication failure"));
            }
        };
        let host = self.host().to_string();
        let timeout = self.server.limits.command_timeout;
        let login = sasl::exchange(
            &mut self.channel,
            mechanism,
            initial,
            &table,
            &host,
            timeout,
        )?;
        match login {
            Login::Granted(account) => {
                self.server.log.info(&format!(
                    "ODMR AUTH from {}: user={} mechanism={name}",
                    self.client, account.user
                ));
                self.phase = Phase::Authenticated(account);
                self.reply(Reply::new(235, "2.7.0 Authentication successful"))
            }
            Login::Cancelled => self.error(Reply::new(501, "5.7.0 Authentication cancelled")),
            Login::Malformed => self.error(Reply::new(
                501,
                "5.5.2 Error: cannot decode the authentication answer",
            )),
            Login::Denied(user) => self.denied(user.as_deref().unwrap_or("")),
        }
    }

    /// A failed login: logged, answered after a delay, counted for the session and the address.
    fn denied(&mut self, user: &str) -> io::Result<Flow<'s>> {
        self.failures += 1;
        let delay = self.provider.failed(self.client.ip(), Instant::now());
        self.server.log.warning(&format!(
            "ODMR AUTH from {} failed: user={}",
            self.client,
            crate::smtp::printable(user)
        ));
        self.channel.flush()?;
        std::thread::sleep(delay);
        self.channel
            .reply(&Reply::new(535, "5.7.8 Error: authentication failed"))?;
        if self.failures >= MAX_SESSION_FAILURES {
            let text = format!("4.7.0 {} Error: too many failed logins", self.host());
            self.channel.reply(&Reply::new(421, text))?;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    fn atrn(&mut self, arguments: &str) -> io::Result<Flow<'s>> {
        self.last = "ATRN";
        let account = match &self.phase {
            Phase::Authenticated(account) => account.clone(),
            _ => {
                return self.error(Reply::new(530, "5.7.0 Authentication required"));
            }
        };
        let domains = if arguments.is_empty() {
            account.domains.clone()
        } else {
            match arguments
                .split(',')
                .map(|d| Domain::parse(d.trim()))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(domains) => domains,
                Err(_) => {
                    return self.error(Reply::new(501, "5.5.4 Syntax: ATRN [domain[,domain...]]"));
                }
            }
        };
        if let Some(foreign) = domains.iter().find(|d| !account.domains.contains(d)) {
            self.server.log.warning(&format!(
                "ODMR ATRN from {} user={}: refused {foreign}: not a domain of this account",
                self.client, account.user
            ));
            return self.error(Reply::new(
                450,
                format!("4.7.1 ATRN request refused: {foreign} is not a domain of this account"),
            ));
        }
        if self.server.is_stopping() {
            return self.reply(Reply::new(
                451,
                "4.3.2 Unable to process ATRN request now: shutting down",
            ));
        }
        let claim = match self.provider.claim(&domains) {
            Ok(claim) => claim,
            Err(taken) => {
                self.server.log.info(&format!(
                    "ODMR ATRN from {} user={}: {taken} is being delivered to another connection",
                    self.client, account.user
                ));
                return self.reply(Reply::new(
                    451,
                    format!(
                        "4.3.0 Unable to process ATRN request now: mail for {taken} is being delivered to another connection"
                    ),
                ));
            }
        };
        let waiting = match self.waiting(&domains) {
            Ok(count) => count,
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("ODMR ATRN: cannot read the queue: {e}"));
                return self.reply(Reply::new(451, "4.3.0 Unable to process ATRN request now"));
            }
        };
        let names: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        self.server.log.info(&format!(
            "ODMR ATRN from {} user={}: {} ({waiting} messages)",
            self.client,
            account.user,
            names.join(",")
        ));
        if waiting == 0 {
            return self.reply(Reply::new(453, "4.2.0 You have no mail"));
        }
        if self.channel.has_pending_input() {
            // The client must wait for the turnaround: bytes it sent already would be read by
            // neither side.
            self.channel.reply(&Reply::new(
                503,
                "5.5.1 Error: nothing may follow ATRN before its reply",
            ))?;
            return Ok(Flow::Close);
        }
        self.channel
            .reply(&Reply::new(250, "2.0.0 OK now reversing the connection"))?;
        Ok(Flow::Turn(Turn {
            account,
            domains,
            _claim: claim,
        }))
    }

    /// Messages waiting for `domains`, as a run for them would select them.
    fn waiting(&self, domains: &[Domain]) -> Result<usize, crate::queue::QueueError> {
        let mut total = 0;
        for domain in domains {
            let Ok(pattern) = DomainPattern::parse(domain.as_str()) else {
                continue;
            };
            total += flush::pending(&self.server.queue, &pattern)?;
        }
        Ok(total)
    }
}
