//! One SMTP session: the state machine from greeting to QUIT.
//!
//! States: before HELO/EHLO (only HELO, EHLO, NOOP, RSET, VRFY, HELP, QUIT), greeted, and inside
//! a mail transaction (after MAIL, collecting RCPT until DATA or RSET). Commands are handled one
//! at a time in the order they arrived, so replies to pipelined commands come out in that order.
//! A successful STARTTLS returns the session to the state after the greeting (RFC 3207 §4.2).

use std::io;

use crate::address::{Address, Domain, ReversePath};
use crate::header::{
    HeaderError, HeaderSection, LeadingFrom, Lines, MAX_HEADER_SECTION, Received,
    exceeds_hop_limit, rfc5322_date,
};
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::selection::DomainPattern;
use crate::queue::{Draft, QueueId};
use crate::smtp::EtrnArgument;

use super::flush::{self, Requested};
use super::recipients::Lookup;
use super::request::{self, ForwardPath, Request};
use super::wire::{Channel, DataFault, LineFault, is_timeout};
use super::{Client, Server};

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

struct Transaction {
    sender: ReversePath,
    recipients: Vec<Address>,
}

struct Session<'s> {
    server: &'s Server,
    channel: Channel,
    client: Client,
    helo: Option<Domain>,
    esmtp: bool,
    /// The session runs over TLS (STARTTLS succeeded).
    tls: bool,
    transaction: Option<Transaction>,
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
        helo: None,
        esmtp: false,
        tls: false,
        transaction: None,
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

impl Session<'_> {
    fn host(&self) -> &Domain {
        &self.server.hostname
    }

    fn converse(&mut self) -> io::Result<()> {
        self.channel
            .set_write_timeout(self.server.limits.command_timeout)?;
        self.channel
            .reply(220, &format!("{} ESMTP etrnq", self.host()))?;
        loop {
            self.channel
                .expect_command(self.server.limits.command_timeout);
            let Some(line) = self.channel.read_command()? else {
                if self.server.is_stopping() {
                    self.channel
                        .reply(421, &format!("4.3.2 {} Service shutting down", self.host()))?;
                    self.channel.flush()?;
                    return Ok(());
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection",
                ));
            };
            let flow = match line {
                Err(LineFault::TooLong) => {
                    self.last = "long line";
                    self.error(500, "5.5.2 Error: command line longer than 512 octets")?
                }
                Err(LineFault::BareCrOrLf) => {
                    self.last = "bare CR or LF";
                    self.error(500, "5.5.2 Error: bare <CR> or <LF> in command")?
                }
                Ok(bytes) => match request::parse(&bytes) {
                    Ok(request) => self.handle(request)?,
                    Err(refusal) => {
                        self.last = "unknown command";
                        self.error(refusal.code, &refusal.text)?
                    }
                },
            };
            if let Flow::Close = flow {
                self.channel.flush()?;
                return Ok(());
            }
        }
    }

    fn timed_out(&mut self) -> io::Result<()> {
        let text = format!("4.4.2 {} Error: timeout exceeded", self.host());
        self.channel.reply(421, &text)?;
        self.channel.flush()
    }

    /// Replies with a client error and counts it; too many end the session.
    fn error(&mut self, code: u16, text: &str) -> io::Result<Flow> {
        self.channel.reply(code, text)?;
        self.errors += 1;
        if self.errors >= self.server.limits.max_errors {
            self.server.log.warning(&format!(
                "too many errors from {}; hanging up after {}",
                self.client, self.last
            ));
            let text = format!("4.7.0 {} Error: too many errors", self.host());
            self.channel.reply(421, &text)?;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    fn ok(&mut self, code: u16, text: &str) -> io::Result<Flow> {
        self.channel.reply(code, text)?;
        Ok(Flow::Continue)
    }

    fn handle(&mut self, request: Request) -> io::Result<Flow> {
        match request {
            Request::Ehlo(name) => self.hello(name, true),
            Request::Helo(name) => self.hello(name, false),
            Request::Mail { from, size } => self.mail(from, size),
            Request::Rcpt(to) => self.rcpt(to),
            Request::Data => self.data(),
            Request::Rset => {
                self.last = "RSET";
                self.transaction = None;
                self.ok(250, "2.0.0 Ok")
            }
            Request::Noop => {
                self.last = "NOOP";
                self.ok(250, "2.0.0 Ok")
            }
            Request::Vrfy => {
                self.last = "VRFY";
                self.ok(
                    252,
                    "2.0.0 Cannot VRFY user, but will accept the message and attempt delivery",
                )
            }
            Request::Help => {
                self.last = "HELP";
                self.ok(
                    214,
                    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY ETRN HELP QUIT",
                )
            }
            Request::Quit => {
                self.last = "QUIT";
                let text = format!("2.0.0 {} closing connection", self.host());
                self.channel.reply(221, &text)?;
                Ok(Flow::Close)
            }
            Request::Etrn(argument) => self.etrn(argument),
            Request::StartTls => self.start_tls(),
        }
    }

    /// The TLS configuration when STARTTLS may be offered now: configured, a socket to run it
    /// on, and not in TLS already.
    fn tls_offer(&self) -> Option<std::sync::Arc<rustls::ServerConfig>> {
        if self.tls || !self.channel.can_start_tls() {
            return None;
        }
        self.server.tls.clone()
    }

    fn start_tls(&mut self) -> io::Result<Flow> {
        self.last = "STARTTLS";
        if self.tls {
            return self.error(503, "5.5.1 Error: TLS already active");
        }
        let Some(config) = self.tls_offer() else {
            return self.error(502, "5.5.1 Error: command not implemented");
        };
        if self.channel.has_pending_input() {
            // Whatever was pipelined after STARTTLS came in clear; answering it after the
            // handshake would let an attacker on the path inject commands into the TLS session.
            self.server.log.warning(&format!(
                "STARTTLS from {}: commands sent after STARTTLS before the handshake; hanging up",
                self.client
            ));
            self.channel.reply(
                501,
                "5.5.1 Error: nothing may follow STARTTLS before the TLS handshake",
            )?;
            return Ok(Flow::Close);
        }
        self.channel.reply(220, "2.0.0 Ready to start TLS")?;
        self.channel
            .expect_command(self.server.limits.command_timeout);
        match self.channel.start_tls(config) {
            Ok(summary) => {
                self.server
                    .log
                    .info(&format!("STARTTLS from {}: {summary}", self.client));
            }
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("TLS handshake with {} failed: {e}", self.client));
                return Ok(Flow::Close);
            }
        }
        // RFC 3207 §4.2: nothing learnt before the handshake is kept.
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.transaction = None;
        Ok(Flow::Continue)
    }

    fn hello(&mut self, name: Domain, extended: bool) -> io::Result<Flow> {
        self.last = if extended { "EHLO" } else { "HELO" };
        self.server
            .log
            .info(&format!("{} from {}: {name}", self.last, self.client));
        // RFC 5321 §4.1.4: a new greeting resets the transaction.
        self.transaction = None;
        self.esmtp = extended;
        let greeting = format!("{} Hello {name} {}", self.host(), self.client.literal());
        self.helo = Some(name);
        if !extended {
            return self.ok(250, &greeting);
        }
        let starttls = if self.tls_offer().is_some() {
            "\nSTARTTLS"
        } else {
            ""
        };
        let text = format!(
            "{greeting}\nPIPELINING\nSIZE {}\n8BITMIME\nENHANCEDSTATUSCODES\nETRN{starttls}",
            self.server.limits.max_message_size
        );
        self.ok(250, &text)
    }

    fn mail(&mut self, from: ReversePath, size: Option<u64>) -> io::Result<Flow> {
        self.last = "MAIL";
        if self.helo.is_none() {
            return self.error(503, "5.5.1 Error: send HELO/EHLO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1 Error: nested MAIL command");
        }
        let limit = self.server.limits.max_message_size;
        if size.is_some_and(|size| size > limit) {
            self.server.log.info(&format!(
                "reject: MAIL from {}: 552 message size {} exceeds the limit of {limit}; from=<{from}>",
                self.client,
                size.unwrap_or_default()
            ));
            return self.ok(
                552,
                &format!("5.3.4 Error: message size exceeds fixed limit of {limit} octets"),
            );
        }
        if let Some(refusal) = self.short_of_space(size.unwrap_or(0)) {
            self.server.log.info(&format!(
                "reject: MAIL from {}: {} {}; from=<{from}>",
                self.client, refusal.0, refusal.1
            ));
            return self.ok(refusal.0, &refusal.1);
        }
        self.transaction = Some(Transaction {
            sender: from,
            recipients: Vec::new(),
        });
        self.ok(250, "2.1.0 Ok")
    }

    /// The refusal while the queue's file system, less `coming` octets, would be below the
    /// `queue_min_free` reserve: room for delivery state and bounces comes first.
    fn short_of_space(&self, coming: u64) -> Option<(u16, String)> {
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
                Some((452, "4.3.1 Error: insufficient system storage".into()))
            }
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("cannot measure free space: {e}"));
                Some((451, "4.3.0 Error: queue file write error".into()))
            }
        }
    }

    fn rcpt(&mut self, path: ForwardPath) -> io::Result<Flow> {
        self.last = "RCPT";
        let Some(transaction) = &self.transaction else {
            return self.error(503, "5.5.1 Error: need MAIL command");
        };
        let sender = transaction.sender.to_string();
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
                if let Some((code, text)) = self.refusal(&to) {
                    self.server.log.info(&format!(
                        "reject: RCPT from {}: {code} {text}; from=<{sender}> to=<{to}>",
                        self.client
                    ));
                    return match code {
                        451 => self.ok(code, &text),
                        _ => self.error(code, &text),
                    };
                }
                to
            }
        };
        let limit = self.server.limits.max_recipients;
        let Some(transaction) = &mut self.transaction else {
            return self.error(503, "5.5.1 Error: need MAIL command");
        };
        if transaction.recipients.contains(&to) {
            return self.ok(250, "2.1.5 Ok");
        }
        if transaction.recipients.len() >= limit {
            return self.ok(452, "4.5.3 Error: too many recipients");
        }
        transaction.recipients.push(to);
        self.ok(250, "2.1.5 Ok")
    }

    /// Why a recipient is not taken, as the reply that says so; `None` when it is.
    fn refusal(&self, to: &Address) -> Option<(u16, String)> {
        let server = self.server;
        if !server.accepts(to.domain()) {
            return Some((554, format!("5.7.1 <{to}>: Relay access denied")));
        }
        if to.routes_onward() && !server.config.allow_untrusted_routing {
            return Some((
                554,
                format!(
                    "5.7.1 <{to}>: Relay access denied: '%', '!' or a quoted '@' routes to another host"
                ),
            ));
        }
        match server.recipients.lookup(to) {
            Lookup::Known | Lookup::Unlisted => None,
            Lookup::Unknown => Some((
                550,
                format!(
                    "5.1.1 <{to}>: Recipient address rejected: User unknown in relay recipient table"
                ),
            )),
            Lookup::Unavailable(why) => {
                server
                    .log
                    .warning(&format!("relay_recipients for {}: {why}", to.domain()));
                Some((451, format!("4.3.0 <{to}>: Temporary lookup failure")))
            }
        }
    }

    fn data(&mut self) -> io::Result<Flow> {
        self.last = "DATA";
        let Some(transaction) = self.transaction.take() else {
            return self.error(503, "5.5.1 Error: need MAIL command");
        };
        if transaction.recipients.is_empty() {
            self.transaction = Some(transaction);
            return self.error(503, "5.5.1 Error: need RCPT command");
        }
        let draft = match self.server.queue.draft() {
            Ok(draft) => draft,
            Err(e) => {
                self.server
                    .log
                    .warning(&format!("cannot start a queue file: {e}"));
                return self.ok(451, "4.3.0 Error: queue file write error");
            }
        };
        self.channel.reply(354, "End data with <CR><LF>.<CR><LF>")?;
        self.channel.expect_data(
            self.server.limits.data_timeout,
            self.server.limits.min_data_rate,
        );
        let outcome = self.receive(draft, &transaction)?;
        let (code, text) = match outcome {
            Ok(id) => {
                self.messages += 1;
                (250, format!("2.0.0 Ok: queued as {id}"))
            }
            Err(refusal) => {
                self.server.log.info(&format!(
                    "reject: DATA from {}: {} {}; from=<{}>",
                    self.client, refusal.0, refusal.1, transaction.sender
                ));
                refusal
            }
        };
        self.ok(code, &text)
    }

    /// Reads the message into `draft` and commits it. The outer error is the connection's; the
    /// inner one is the reply that refuses the message, after all of it was read.
    fn receive(
        &mut self,
        mut draft: Draft<'_>,
        transaction: &Transaction,
    ) -> io::Result<Result<QueueId, (u16, String)>> {
        let server = self.server;
        let id = draft.id();
        let now = chrono::Local::now();
        let helo = self
            .helo
            .as_ref()
            .map(Domain::to_string)
            .unwrap_or_default();
        let from = format!("{helo} ({})", self.client.literal());
        let by = format!("{} (etrnq)", server.hostname);
        let only = match &transaction.recipients[..] {
            [one] => Some(one.to_string()),
            _ => None,
        };
        let received = Received {
            from: Some(&from),
            by: &by,
            // RFC 3848: ESMTPS is ESMTP with STARTTLS.
            with: Some(match (self.esmtp, self.tls) {
                (true, true) => "ESMTPS",
                (true, false) => "ESMTP",
                (false, _) => "SMTP",
            }),
            id,
            for_recipient: only.as_deref(),
            date: &rfc5322_date(&now),
        }
        .render("\r\n");

        let mut data = self.channel.data(server.limits.max_message_size);
        let mut out = Output::new(&mut draft);
        out.write(received.as_bytes());
        let header = match HeaderSection::read(&mut data, LeadingFrom::Keep, MAX_HEADER_SECTION) {
            Ok(header) => Some(header),
            Err(HeaderError::Input(e)) => return Err(e),
            Err(HeaderError::TooLarge) => None,
        };
        if let Some(header) = &header {
            out.write(header.raw());
            if header.is_empty() && header.separator.is_empty() {
                // Data without a header section: keep its first line out of our Received field.
                out.write(b"\r\n");
            } else {
                out.write(&header.separator);
            }
            out.write(&header.first_body_line);
            while let Some(line) = data.next_line()? {
                out.write(line);
            }
        } else {
            // Read to its end, kept nowhere: the client is answered only after the data.
            while data.next_line()?.is_some() {}
        }
        let (written, write_error) = (out.written, out.error);
        let fault = data.fault();
        let limit = server.limits.max_message_size;
        match fault {
            Some(DataFault::TooBig) => {
                return Ok(Err((
                    552,
                    format!(
                        "5.3.4 Error: message exceeds fixed maximum message size of {limit} octets"
                    ),
                )));
            }
            Some(DataFault::Line(LineFault::TooLong)) => {
                return Ok(Err((
                    550,
                    "5.5.2 Error: message line longer than 1000 octets; message refused".into(),
                )));
            }
            Some(DataFault::Line(LineFault::BareCrOrLf)) => {
                self.errors += 1;
                return Ok(Err((
                    550,
                    "5.5.2 Error: bare <CR> or <LF> in message data; message refused".into(),
                )));
            }
            None => {}
        }
        let Some(header) = header else {
            return Ok(Err((
                552,
                format!(
                    "5.3.4 Error: header section exceeds fixed maximum of {MAX_HEADER_SECTION} octets; message refused"
                ),
            )));
        };
        let hops = header.hops();
        if exceeds_hop_limit(hops, server.config.max_hops) {
            return Ok(Err((
                554,
                format!(
                    "5.4.6 Error: too many hops ({hops} Received: header fields, limit {})",
                    server.config.max_hops
                ),
            )));
        }
        if let Some(e) = write_error {
            server
                .log
                .warning(&format!("{id}: cannot write the queue file: {e}"));
            return Ok(Err((451, "4.3.0 Error: queue file write error".into())));
        }
        // The message took space too: what is left must still hold the reserve.
        if let Some(refusal) = self.short_of_space(0) {
            return Ok(Err(refusal));
        }
        let envelope = Envelope {
            id,
            arrival: now.timestamp(),
            size: written,
            sender: transaction.sender.to_string(),
            notify: None,
            ret: None,
            envid: None,
            recipients: transaction
                .recipients
                .iter()
                .map(|r| Recipient::new(r.to_string()))
                .collect(),
        };
        if let Err(e) = draft.commit(&envelope) {
            server.log.warning(&format!("{id}: not queued: {e}"));
            return Ok(Err((451, "4.3.0 Error: queue file write error".into())));
        }
        server.log.info(&format!(
            "{id}: client={}, helo={helo}, from=<{}>, size={written}, nrcpt={}",
            self.client,
            transaction.sender,
            transaction.recipients.len()
        ));
        for recipient in &transaction.recipients {
            server
                .log
                .info(&format!("{id}: to=<{recipient}>, status=queued"));
        }
        Ok(Ok(id))
    }

    fn etrn(&mut self, argument: EtrnArgument) -> io::Result<Flow> {
        self.last = "ETRN";
        if self.helo.is_none() {
            return self.error(503, "5.5.1 Error: send HELO/EHLO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1 Error: MAIL transaction in progress");
        }
        self.etrns += 1;
        let (code, text) = self.etrn_reply(&argument);
        self.server.log.info(&format!(
            "etrn from {}: ETRN {argument}: {code} {text}",
            self.client
        ));
        if self.etrns > self.server.limits.max_etrn {
            return self.error(code, &text);
        }
        self.ok(code, &text)
    }

    fn etrn_reply(&self, argument: &EtrnArgument) -> (u16, String) {
        let server = self.server;
        if self.etrns > server.limits.max_etrn {
            return (
                458,
                format!(
                    "4.7.0 Unable to queue messages for node {argument}: more than {} ETRN commands in one session",
                    server.limits.max_etrn
                ),
            );
        }
        let node = match argument {
            EtrnArgument::Domain(domain) => DomainPattern::Exact(domain.clone()),
            EtrnArgument::Subdomains(domain) => DomainPattern::WithSubdomains(domain.clone()),
            EtrnArgument::Queue(_) => {
                return (
                    459,
                    format!(
                        "4.5.4 Node {argument} not allowed: this server has no named queues; ETRN a domain"
                    ),
                );
            }
        };
        let (DomainPattern::Exact(domain) | DomainPattern::WithSubdomains(domain)) = &node;
        if !server.accepts(domain) {
            return (
                459,
                format!(
                    "4.7.1 Node {argument} not allowed: not a domain this server queues mail for"
                ),
            );
        }
        if let Some(ip) = self.client.ip()
            && !server.clients.take_etrn(ip, std::time::Instant::now())
        {
            return (
                458,
                format!(
                    "4.7.0 Unable to queue messages for node {argument}: too many ETRN requests from {}; try again later",
                    self.client.literal()
                ),
            );
        }
        let count = match flush::pending(&server.queue, &node) {
            Ok(count) => count,
            Err(e) => {
                server
                    .log
                    .warning(&format!("etrn: cannot read the queue: {e}"));
                return (
                    458,
                    format!("4.3.0 Unable to queue messages for node {argument}"),
                );
            }
        };
        if count == 0 {
            return (
                251,
                format!("2.0.0 OK, no messages waiting for node {argument}"),
            );
        }
        match server.flusher.request(&server.queue, &node) {
            Ok(Requested::Started) => (
                253,
                format!("2.0.0 OK, {count} pending messages for node {argument} started"),
            ),
            Ok(Requested::Scheduled) => {
                server.log.info(&format!(
                    "etrn: a run for {node} is going; one more is scheduled to follow it"
                ));
                (
                    253,
                    format!(
                        "2.0.0 OK, {count} pending messages for node {argument}; delivery already in progress, one more run follows it"
                    ),
                )
            }
            Ok(Requested::AlreadyScheduled) => {
                server.log.info(&format!(
                    "etrn: a run for {node} is going and one more is scheduled; nothing more to do"
                ));
                (
                    253,
                    format!(
                        "2.0.0 OK, {count} pending messages for node {argument}; delivery already in progress, one more run already scheduled"
                    ),
                )
            }
            Err(e) => {
                server
                    .log
                    .warning(&format!("etrn: cannot start queue-run: {e}"));
                (
                    458,
                    format!("4.3.0 Unable to queue messages for node {argument}"),
                )
            }
        }
    }
}

/// Writes the message to its draft, counting octets; a write error is kept for after the data
/// has been read, since the client must be read to its end before it can be answered.
struct Output<'d, 'q> {
    draft: &'d mut Draft<'q>,
    written: u64,
    error: Option<io::Error>,
}

impl<'d, 'q> Output<'d, 'q> {
    fn new(draft: &'d mut Draft<'q>) -> Self {
        Output {
            draft,
            written: 0,
            error: None,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        use std::io::Write;
        match self.draft.write_all(bytes) {
            Ok(()) => self.written += bytes.len() as u64,
            Err(e) => self.error = Some(e),
        }
    }
}
