//! One SMTP session: the state machine from greeting to QUIT.
//!
//! A session is in one [`Phase`] at a time: connected (before HELO or EHLO: only HELO, EHLO,
//! NOOP, RSET, VRFY, HELP, STARTTLS and QUIT do anything), greeted, or inside a mail transaction
//! (after MAIL, taking RCPT until DATA, BDAT or RSET). Each command is handled here by a method
//! named for its verb; the message's reading and committing is in [`message`], BDAT's chunks in
//! [`bdat`], ETRN's answer in [`etrn`].
//! Commands are handled one at a time in the order they arrived, so replies to pipelined
//! commands come out in that order. A successful STARTTLS returns the session to the phase
//! after the greeting (RFC 3207 §4.2).
//!
//! Every reply is a [`Reply`] queued on the channel, which writes it and sends it when the
//! client has nothing more in flight. A client error (a command out of sequence, a refusal of
//! its syntax, a refused recipient) counts against `max_errors`; the last one is followed by
//! 421 and the end of the session. A temporary refusal of ours (451, 452) does not count.
//!
//! Nothing here reads a socket or a file by itself: the session runs over any [`Channel`],
//! which is how the unit tests drive it in memory.

mod bdat;
mod etrn;
mod message;
mod phase;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;

use crate::address::{Address, Domain, ReversePath};
use crate::smtp::Reply;

use super::recipients::Lookup;
use super::request::{self, ForwardPath, Request};
use super::wire::{Channel, CommandLine, LineFault, is_timeout};
use super::{Client, Server};
use message::{Body, Outcome};
use phase::{Hello, Phase};

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

struct Session<'s> {
    server: &'s Server,
    channel: Channel,
    client: Client,
    phase: Phase,
    errors: u32,
    etrns: u32,
    messages: u32,
    /// The last command verb, for "lost connection after ..." log lines.
    last: &'static str,
}

/// Runs one session to its end. I/O errors end the session; nothing is queued that the client
/// was not told was queued, and nothing it was told was queued is lost.
pub fn run(server: &Server, channel: Channel, client: Client) {
    server.log.info(&format!("connect from {client}"));
    let mut session = Session {
        server,
        channel,
        client,
        phase: Phase::Connected,
        errors: 0,
        etrns: 0,
        messages: 0,
        last: "CONNECT",
    };
    let ending = match session.converse() {
        Ok(()) => String::new(),
        Err(e) if is_timeout(&e) => {
            let _ = session.timed_out();
            format!(" (timeout after {})", session.last)
        }
        Err(e) => format!(" (lost connection after {}: {e})", session.last),
    };
    server.log.info(&format!(
        "disconnect from {} messages={} errors={}{ending}",
        session.client, session.messages, session.errors
    ));
}

/// STARTTLS once the session has decided to take it: refuses a client that sent anything after
/// STARTTLS (501), answers 220 and runs the handshake. True when the session goes on over TLS;
/// false when it must end (what went wrong is logged).
pub(super) fn start_tls(
    server: &Server,
    channel: &mut Channel,
    client: &Client,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<bool> {
    if channel.has_pending_input() {
        // Whatever was pipelined after STARTTLS came in clear; answering it after the
        // handshake would let an attacker on the path inject commands into the TLS session.
        server.log.warning(&format!(
            "STARTTLS from {client}: commands sent after STARTTLS before the handshake; hanging up"
        ));
        channel.reply(&Reply::new(
            501,
            "5.5.1 Error: nothing may follow STARTTLS before the TLS handshake",
        ))?;
        return Ok(false);
    }
    channel.reply(&Reply::new(220, "2.0.0 Ready to start TLS"))?;
    channel.expect_command(server.limits.command_timeout);
    match channel.start_tls(config) {
        Ok(summary) => {
            server
                .log
                .info(&format!("STARTTLS from {client}: {summary}"));
            Ok(true)
        }
        Err(e) => {
            server
                .log
                .warning(&format!("TLS handshake with {client} failed: {e}"));
            Ok(false)
        }
    }
}

impl Session<'_> {
    fn host(&self) -> &Domain {
        &self.server.hostname
    }

    fn converse(&mut self) -> io::Result<()> {
        self.channel
            .set_write_timeout(self.server.limits.command_timeout)?;
        let greeting = Reply::new(220, format!("{} ESMTP etrnq", self.host()));
        self.channel.reply(&greeting)?;
        loop {
            self.channel
                .expect_command(self.server.limits.command_timeout);
            let Some(line) = self.channel.read_command()? else {
                return self.client_gone();
            };
            if let Flow::Close = self.command(line)? {
                self.channel.flush()?;
                return Ok(());
            }
        }
    }

    /// Answers one command line.
    fn command(&mut self, line: CommandLine) -> io::Result<Flow> {
        match line {
            Err(fault) => self.bad_line(fault),
            Ok(bytes) => match request::parse(&bytes) {
                Ok(request) => self.handle(request),
                Err(refusal) => {
                    self.last = "unknown command";
                    self.error(refusal)
                }
            },
        }
    }

    /// The client closed the connection: a clean end when the server is stopping (which shuts
    /// the sockets), else a connection lost without QUIT.
    fn client_gone(&mut self) -> io::Result<()> {
        if self.server.is_stopping() {
            let text = format!("4.3.2 {} Service shutting down", self.host());
            self.channel.reply(&Reply::new(421, text))?;
            self.channel.flush()?;
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "client closed the connection",
        ))
    }

    /// A command line that is not one: too long, or with a bare CR or LF.
    fn bad_line(&mut self, fault: LineFault) -> io::Result<Flow> {
        let (last, text) = match fault {
            LineFault::TooLong => (
                "long line",
                "5.5.2 Error: command line longer than 512 octets",
            ),
            LineFault::BareCrOrLf => ("bare CR or LF", "5.5.2 Error: bare <CR> or <LF> in command"),
        };
        self.last = last;
        self.error(Reply::new(500, text))
    }

    fn timed_out(&mut self) -> io::Result<()> {
        let text = format!("4.4.2 {} Error: timeout exceeded", self.host());
        self.channel.reply(&Reply::new(421, text))?;
        self.channel.flush()
    }

    /// Replies with a client error and counts it; too many end the session.
    fn error(&mut self, reply: Reply) -> io::Result<Flow> {
        self.channel.reply(&reply)?;
        self.errors += 1;
        if self.errors >= self.server.limits.max_errors {
            self.server.log.warning(&format!(
                "too many errors from {}; hanging up after {}",
                self.client, self.last
            ));
            let text = format!("4.7.0 {} Error: too many errors", self.host());
            self.channel.reply(&Reply::new(421, text))?;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    /// Replies, and the session goes on.
    fn reply(&mut self, reply: Reply) -> io::Result<Flow> {
        self.channel.reply(&reply)?;
        Ok(Flow::Continue)
    }

    fn handle(&mut self, request: Request) -> io::Result<Flow> {
        match request {
            Request::Ehlo(name) => self.hello(name, true),
            Request::Helo(name) => self.hello(name, false),
            Request::Mail { from, size } => self.mail(from, size),
            Request::Rcpt(to) => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat(chunk) => self.bdat(chunk),
            Request::Rset => {
                self.last = "RSET";
                self.phase.reset();
                self.reply(Reply::new(250, "2.0.0 Ok"))
            }
            Request::Noop => {
                self.last = "NOOP";
                self.reply(Reply::new(250, "2.0.0 Ok"))
            }
            Request::Vrfy => {
                self.last = "VRFY";
                self.reply(Reply::new(
                    252,
                    "2.0.0 Cannot VRFY user, but will accept the message and attempt delivery",
                ))
            }
            Request::Help => {
                self.last = "HELP";
                self.reply(Reply::new(
                    214,
                    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY ETRN HELP QUIT",
                ))
            }
            Request::Quit => {
                self.last = "QUIT";
                let text = format!("2.0.0 {} closing connection", self.host());
                self.channel.reply(&Reply::new(221, text))?;
                Ok(Flow::Close)
            }
            Request::Etrn(argument) => self.etrn(argument),
            Request::StartTls => self.start_tls(),
        }
    }

    /// The TLS configuration when STARTTLS may be offered now: configured, a socket to run it
    /// on, and not in TLS already.
    fn tls_offer(&self) -> Option<std::sync::Arc<rustls::ServerConfig>> {
        if self.channel.is_tls() || !self.channel.can_start_tls() {
            return None;
        }
        self.server.tls.clone()
    }

    fn start_tls(&mut self) -> io::Result<Flow> {
        self.last = "STARTTLS";
        if self.channel.is_tls() {
            return self.error(Reply::new(503, "5.5.1 Error: TLS already active"));
        }
        let Some(config) = self.tls_offer() else {
            return self.error(Reply::new(502, "5.5.1 Error: command not implemented"));
        };
        if !start_tls(self.server, &mut self.channel, &self.client, config)? {
            return Ok(Flow::Close);
        }
        self.phase.restart();
        Ok(Flow::Continue)
    }

    fn hello(&mut self, name: Domain, extended: bool) -> io::Result<Flow> {
        self.last = if extended { "EHLO" } else { "HELO" };
        self.server
            .log
            .info(&format!("{} from {}: {name}", self.last, self.client));
        let greeting = format!("{} Hello {name} {}", self.host(), self.client.literal());
        self.phase.greet(Hello { name, extended });
        if !extended {
            return self.reply(Reply::new(250, greeting));
        }
        let starttls = if self.tls_offer().is_some() {
            "\nSTARTTLS"
        } else {
            ""
        };
        let text = format!(
            "{greeting}\nPIPELINING\nSIZE {}\n8BITMIME\nCHUNKING\nENHANCEDSTATUSCODES\nETRN{starttls}",
            self.server.limits.max_message_size
        );
        self.reply(Reply::new(250, text))
    }

    fn mail(&mut self, from: ReversePath, size: Option<u64>) -> io::Result<Flow> {
        self.last = "MAIL";
        if let Err(wrong) = self.phase.may_mail() {
            return self.error(wrong.reply());
        }
        let limit = self.server.limits.max_message_size;
        if size.is_some_and(|size| size > limit) {
            self.server.log.info(&format!(
                "reject: MAIL from {}: 552 message size {} exceeds the limit of {limit}; from=<{from}>",
                self.client,
                size.unwrap_or_default()
            ));
            return self.reply(Reply::new(
                552,
                format!("5.3.4 Error: message size exceeds fixed limit of {limit} octets"),
            ));
        }
        if let Some(refusal) = self.short_of_space(size.unwrap_or(0)) {
            self.server.log.info(&format!(
                "reject: MAIL from {}: {refusal}; from=<{from}>",
                self.client
            ));
            return self.reply(refusal);
        }
        if let Err(wrong) = self.phase.begin(from) {
            return self.error(wrong.reply());
        }
        self.reply(Reply::new(250, "2.1.0 Ok"))
    }

    /// The refusal while the queue's file system, less `coming` octets, would be below the
    /// `queue_min_free` reserve: room for delivery state and bounces comes first.
    fn short_of_space(&self, coming: u64) -> Option<Reply> {
        let reserve = self.server.config.queue_min_free();
        if reserve == 0 {
            return None;
        }
        match self.server.queue.free_space() {
            Ok(free) if free >= reserve.saturating_add(coming) => None,
            Ok(free) => {
                self.server.log.warning(&format!(
                    "queue file system has {free} bytes free, below queue_min_free ({reserve}); new mail is refused"
                ));
                Some(Reply::new(452, "4.3.1 Error: insufficient system storage"))
            }
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("cannot measure free space: {e}"));
                Some(Reply::new(451, "4.3.0 Error: queue file write error"))
            }
        }
    }

    fn rcpt(&mut self, path: ForwardPath) -> io::Result<Flow> {
        self.last = "RCPT";
        let sender = match self.phase.transaction() {
            Ok(transaction) => transaction.sender.to_string(),
            Err(wrong) => return self.error(wrong.reply()),
        };
        let to = match path {
            // RFC 5321 §4.5.1: taken whatever the relay rules, for the address configured.
            ForwardPath::Postmaster => {
                let postmaster = self.server.postmaster();
                self.server.log.info(&format!(
                    "RCPT from {}: <postmaster> is <{postmaster}>; from=<{sender}>",
                    self.client
                ));
                postmaster
            }
            ForwardPath::Mailbox(to) => {
                if let Some(refusal) = self.refusal(&to) {
                    self.server.log.info(&format!(
                        "reject: RCPT from {}: {refusal}; from=<{sender}> to=<{to}>",
                        self.client
                    ));
                    // A lookup that failed for now is our trouble, not the client's error.
                    if refusal.is_transient() {
                        return self.reply(refusal);
                    }
                    return self.error(refusal);
                }
                to
            }
        };
        let limit = self.server.limits.max_recipients;
        let taken = match self.phase.transaction() {
            Ok(transaction) => transaction.add(to, limit),
            Err(wrong) => return self.error(wrong.reply()),
        };
        if !taken {
            return self.reply(Reply::new(452, "4.5.3 Error: too many recipients"));
        }
        self.reply(Reply::new(250, "2.1.5 Ok"))
    }

    /// Why a recipient is not taken, as the reply that says so; `None` when it is.
    fn refusal(&self, to: &Address) -> Option<Reply> {
        let server = self.server;
        if !server.accepts(to.domain()) {
            return Some(Reply::new(
                554,
                format!("5.7.1 <{to}>: Relay access denied"),
            ));
        }
        if to.routes_onward() && !server.config.allow_untrusted_routing {
            return Some(Reply::new(
                554,
                format!(
                    "5.7.1 <{to}>: Relay access denied: '%', '!' or a quoted '@' routes to another host"
                ),
            ));
        }
        match server.recipients.lookup(to) {
            Lookup::Known | Lookup::Unlisted => None,
            Lookup::Unknown => Some(Reply::new(
                550,
                format!(
                    "5.1.1 <{to}>: Recipient address rejected: User unknown in relay recipient table"
                ),
            )),
            Lookup::Unavailable(why) => {
                server
                    .log
                    .warning(&format!("relay_recipients for {}: {why}", to.domain()));
                Some(Reply::new(
                    451,
                    format!("4.3.0 <{to}>: Temporary lookup failure"),
                ))
            }
        }
    }

    fn data(&mut self) -> io::Result<Flow> {
        self.last = "DATA";
        let (hello, transaction) = match self.phase.finish() {
            Ok(finished) => finished,
            Err(wrong) => return self.error(wrong.reply()),
        };
        let draft = match self.server.queue.draft() {
            Ok(draft) => draft,
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("cannot start a queue file: {e}"));
                return self.reply(Reply::new(451, "4.3.0 Error: queue file write error"));
            }
        };
        self.channel
            .reply(&Reply::new(354, "End data with <CR><LF>.<CR><LF>"))?;
        self.channel.expect_data(
            self.server.limits.data_timeout,
            self.server.limits.min_data_rate,
        );
        let reply = match self.receive(draft, &hello, &transaction, Body::Data)? {
            Outcome::Queued(id) => {
                self.messages += 1;
                Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
            }
            // Only chunks can be abandoned.
            Outcome::Abandoned(line) => return self.command(line),
            Outcome::Refused(refusal) => {
                self.server.log.info(&format!(
                    "reject: DATA from {}: {refusal}; from=<{}>",
                    self.client, transaction.sender
                ));
                refusal
            }
        };
        self.reply(reply)
    }
}
