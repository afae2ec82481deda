//! One blocking SMTP connection over TCP, optionally upgraded to TLS with STARTTLS.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::capabilities::Capabilities;
use super::command::{AuthMechanism, Command, Parameter};
use super::error::SmtpError;
use super::reply::{Reply, ReplyCode, split_line};
use super::tls::{self, TlsClient, TlsInfo};
use crate::address::{Address, Domain, ReversePath};
use crate::route::RelayHost;

/// Waiting for a TCP connection; RFC 5321 sets none, this is Postfix's `smtp_connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 §4.5.3.2.1: the 220 greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.2–3: MAIL, RCPT and the other commands.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.4: the 354 after DATA.
pub const DATA_START_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// RFC 5321 §4.5.3.2.5: each write of message data.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the reply to the final dot.
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// A reply line longer than this is not SMTP (RFC 5321 allows 512 octets).
const MAX_LINE: usize = 8192;
/// A reply with more lines than this is not SMTP either; the bound keeps memory bounded.
const MAX_REPLY_LINES: usize = 500;
/// Message data is written in blocks of about this size.
const DATA_BLOCK: usize = 64 * 1024;

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub command: Duration,
    pub data_start: Duration,
    pub data_block: Duration,
    pub data_end: Duration,
}

impl Timeouts {
    /// The same limit for every step, as a command-line `--timeout` gives it.
    pub fn uniform(limit: Duration) -> Timeouts {
        Timeouts {
            connect: limit,
            greeting: limit,
            command: limit,
            data_start: limit,
            data_block: limit,
            data_end: limit,
        }
    }
}

impl Default for Timeouts {
    /// The RFC 5321 values.
    fn default() -> Timeouts {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            greeting: GREETING_TIMEOUT,
            command: COMMAND_TIMEOUT,
            data_start: DATA_START_TIMEOUT,
            data_block: DATA_BLOCK_TIMEOUT,
            data_end: DATA_END_TIMEOUT,
        }
    }
}

/// Which address families a host name may resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    #[default]
    Any,
    V4,
    V6,
}

impl AddressFamily {
    fn admits(self, ip: IpAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::V4 => ip.is_ipv4(),
            AddressFamily::V6 => ip.is_ipv6(),
        }
    }
}

/// Where the conversation is shown: nowhere, on stderr (`-v`), or kept for the caller. Lines the
/// client sends start with `>>> `, server lines appear as received, the client's own remarks
/// start with `*** `. Authentication secrets never appear.
#[derive(Debug, Clone, Default)]
pub enum Transcript {
    #[default]
    Off,
    Stderr,
    Capture(Arc<Mutex<Vec<String>>>),
}

impl Transcript {
    fn sent(&self, line: &str) {
        self.emit(format!(">>> {line}"));
    }

    fn received(&self, line: &str) {
        self.emit(line.to_string());
    }

    pub fn note(&self, text: &str) {
        self.emit(format!("*** {text}"));
    }

    fn emit(&self, line: String) {
        match self {
            Transcript::Off => {}
            Transcript::Stderr => eprintln!("{line}"),
            Transcript::Capture(lines) => {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        }
    }
}

/// How to reach a server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub timeouts: Timeouts,
    pub family: AddressFamily,
    pub transcript: Transcript,
}

/// The server as mail logs name it: `name[ip]:port`, or `[ip]:port` when we had no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: Option<String>,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}]:{}",
            self.name.as_deref().unwrap_or_default(),
            self.addr.ip(),
            self.addr.port()
        )
    }
}

/// A user name and password for AUTH. `Debug` does not show the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: **** }}", self.user)
    }
}

/// One message to deliver: the envelope and what MAIL should announce.
#[derive(Debug, Clone, Copy)]
pub struct Mail<'a> {
    pub from: &'a ReversePath,
    pub recipients: &'a [Address],
    /// Announced with `SIZE=` when the server takes SIZE.
    pub size: Option<u64>,
    /// Announced with `BODY=8BITMIME` when the server takes 8BITMIME.
    pub eight_bit: bool,
}

/// What the server said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub mail: Reply,
    /// One reply per recipient, in order; empty when MAIL failed and no RCPT was sent.
    pub recipients: Vec<Reply>,
    /// The reply to the final dot, or the failure reply to DATA; `None` when DATA was not
    /// reached because no recipient was accepted.
    pub data: Option<Reply>,
}

impl Delivery {
    /// The reply that decides recipient `index`'s fate: MAIL's failure, its RCPT failure, or the
    /// reply to the message data.
    pub fn outcome(&self, index: usize) -> Option<&Reply> {
        if !self.mail.is_positive() {
            return Some(&self.mail);
        }
        let rcpt = self.recipients.get(index)?;
        if !rcpt.is_positive() {
            return Some(rcpt);
        }
        self.data.as_ref()
    }

    /// True when the server took responsibility for recipient `index`.
    pub fn accepted(&self, index: usize) -> bool {
        self.outcome(index).is_some_and(Reply::is_positive)
    }
}

/// One message for [`Connection::deliver_all`], owning its envelope and its data.
pub struct Message {
    pub from: ReversePath,
    pub recipients: Vec<Address>,
    /// Announced with `SIZE=` when the server takes SIZE.
    pub size: Option<u64>,
    /// Announced with `BODY=8BITMIME` when the server takes 8BITMIME.
    pub eight_bit: bool,
    /// The message as stored; sent with dot-stuffing and CRLF line ends.
    pub body: Box<dyn BufRead + Send>,
}

impl Message {
    fn as_mail(&self) -> Mail<'_> {
        Mail {
            from: &self.from,
            recipients: &self.recipients,
            size: self.size,
            eight_bit: self.eight_bit,
        }
    }
}

/// Where [`Connection::deliver_all`] takes messages from and reports their outcomes to.
pub trait Outbox {
    /// The next message to send, given what the server offers; `None` when there is no more.
    fn next(&mut self, capabilities: &Capabilities) -> Option<Message>;
    /// The outcome of the oldest message handed out and not yet reported. The connection has
    /// dropped that message, its body included, by then.
    fn done(&mut self, outcome: Result<Delivery, &SmtpError>);
}

/// What the replies still due after a transaction's envelope will answer.
enum Ending {
    /// The final dot of the message data.
    Data,
    /// The dot of an empty message sent because DATA was taken with nobody to deliver to.
    Dot,
    /// That dot, then a reset.
    DotThenReset,
    /// A reset; the DATA reply, and whether any recipient was accepted.
    Reset(Reply, bool),
}

/// An open SMTP connection.
pub struct Connection {
    tcp: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    tls_info: Option<TlsInfo>,
    peer: Peer,
    timeouts: Timeouts,
    transcript: Transcript,
    capabilities: Capabilities,
    extended: bool,
    received: Vec<u8>,
    /// The socket's read and write time limits as last set. Each is set only when a read or a
    /// write that needs another limit is about to block: replies to pipelined commands mostly
    /// arrive together and each has its own limit, so setting them per reply would cost a bulk
    /// delivery several system calls per message.
    read_limit: Option<Duration>,
    write_limit: Option<Duration>,
    unsent: Vec<u8>,
    /// What each reply still due answers, with how long it may take.
    awaited: VecDeque<(&'static str, Duration)>,
}

fn rcpt_command(to: &Address) -> Command {
    Command::Rcpt {
        to: to.clone(),
        parameters: Vec::new(),
    }
}

/// Resolves `host` to the addresses to try, in the resolver's order.
pub fn resolve(
    host: &RelayHost,
    port: u16,
    family: AddressFamily,
) -> Result<Vec<SocketAddr>, SmtpError> {
    let (label, found) = match host {
        RelayHost::Ip(ip) => (ip.to_string(), vec![SocketAddr::new(*ip, port)]),
        RelayHost::Name(name) => {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| SmtpError::NoHost {
                    host: name.to_string(),
                    detail: e
                        .to_string()
                        .trim_start_matches("failed to lookup address information: ")
                        .to_string(),
                })?;
            (name.to_string(), found.collect())
        }
    };
    let admitted: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| family.admits(addr.ip()))
        .collect();
    if admitted.is_empty() {
        let wanted = match family {
            AddressFamily::V6 => "IPv6 address",
            AddressFamily::V4 => "IPv4 address",
            AddressFamily::Any => "address",
        };
        return Err(SmtpError::NoHost {
            host: label,
            detail: format!("no {wanted}"),
        });
    }
    Ok(admitted)
}

impl Connection {
    /// Resolves `host` and connects to its addresses in turn until one answers. The greeting is
    /// not read yet: call [`Connection::greeting`] next.
    pub fn connect(
        host: &RelayHost,
        port: u16,
        options: &ConnectOptions,
    ) -> Result<Connection, SmtpError> {
        let name = match host {
            RelayHost::Name(name) => Some(name.to_string()),
            RelayHost::Ip(_) => None,
        };
        let mut last = None;
        for addr in resolve(host, port, options.family)? {
            match Connection::open(addr, name.clone(), options) {
                Ok(connection) => return Ok(connection),
                Err(err) => {
                    options.transcript.note(&err.to_string());
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| SmtpError::NoHost {
            host: host.to_string(),
            detail: "no address".to_string(),
        }))
    }

    /// Connects to one address. `name` is the host name the address belongs to, when known: it
    /// labels errors and is the name the TLS certificate must carry.
    pub fn open(
        addr: SocketAddr,
        name: Option<String>,
        options: &ConnectOptions,
    ) -> Result<Connection, SmtpError> {
        let peer = Peer { name, addr };
        options.transcript.note(&format!("connecting to {peer}"));
        let tcp =
            TcpStream::connect_timeout(&addr, options.timeouts.connect).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => SmtpError::Timeout {
                        peer: peer.to_string(),
                        during: "connecting".to_string(),
                    },
                    _ => SmtpError::Connect {
                        peer: peer.to_string(),
                        error: e,
                    },
                }
            })?;
        // Pipelined commands are gathered into one write by this client already.
        tcp.set_nodelay(true).ok();
        Ok(Connection {
            tcp,
            tls: None,
            tls_info: None,
            peer,
            timeouts: options.timeouts,
            transcript: options.transcript.clone(),
            capabilities: Capabilities::default(),
            extended: false,
            received: Vec::new(),
            read_limit: None,
            write_limit: None,
            unsent: Vec::new(),
            awaited: VecDeque::from([("the greeting", options.timeouts.greeting)]),
        })
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The extensions of the last EHLO reply (none after HELO or before any EHLO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// True when the server accepted EHLO, false after a HELO fallback.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// The handshake's outcome once STARTTLS has succeeded.
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls_info.as_ref()
    }

    /// Adds a remark of the client's to the transcript.
    pub fn note(&self, text: &str) {
        self.transcript.note(text);
    }

    /// Reads the greeting. A 4xx or 5xx greeting is an error carrying the server's reply.
    pub fn greeting(&mut self) -> Result<Reply, SmtpError> {
        let reply = self.read_reply()?;
        if !reply.is_positive() {
            return Err(self.rejected("greeting", reply));
        }
        Ok(reply)
    }

    /// Says EHLO, and HELO when the server refuses EHLO with a 5xx (RFC 5321 §3.2). Returns the
    /// positive reply; the extensions are in [`Connection::capabilities`].
    pub fn hello(&mut self, name: &Domain) -> Result<Reply, SmtpError> {
        let reply = self.command(&Command::Ehlo(name.clone()))?;
        if reply.is_positive() {
            self.capabilities = Capabilities::from_ehlo(&reply);
            self.extended = true;
            return Ok(reply);
        }
        if !reply.is_permanent() {
            return Err(self.rejected("EHLO", reply));
        }
        self.note(&format!(
            "server refused EHLO ({}); trying HELO",
            reply.code
        ));
        let reply = self.command(&Command::Helo(name.clone()))?;
        if !reply.is_positive() {
            return Err(self.rejected("HELO", reply));
        }
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(reply)
    }

    /// Sends STARTTLS and performs the handshake. The server forgets the session's state, so the
    /// caller says [`Connection::hello`] again next (RFC 3207 §4.2).
    pub fn starttls(&mut self, client: &TlsClient) -> Result<&TlsInfo, SmtpError> {
        let reply = self.command(&Command::StartTls)?;
        if !reply.is_positive() {
            return Err(self.rejected("STARTTLS", reply));
        }
        // Anything already received was sent in clear but would be read as if protected: the
        // STARTTLS command injection attack (CVE-2011-0411 and kin).
        if !self.received.is_empty() {
            return Err(self.protocol("server sent data before the TLS handshake"));
        }
        let verdict = Arc::new(Mutex::new(None));
        let config = client
            .config(verdict.clone())
            .map_err(|detail| self.tls_error(detail))?;
        let name = tls::server_name(self.peer.name.as_deref(), self.peer.addr.ip());
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| self.tls_error(e.to_string()))?;
        // The handshake reads and writes in turns, each under the command limit.
        self.limit_reads(self.timeouts.command);
        self.limit_writes(self.timeouts.command)
            .map_err(|e| self.failure(e, "during the TLS handshake"))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut self.tcp)
                .map_err(|e| self.failure(e, "during the TLS handshake"))?;
        }
        let (protocol, cipher_suite) = tls::negotiated(&conn);
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| tls::certificate_info(der));
        let verified = verdict
            .lock()
            .ok()
            .and_then(|mut v| v.take())
            .unwrap_or_else(|| Err("no certificate was checked".to_string()));
        self.note(&format!(
            "TLS established: {protocol} {cipher_suite}, certificate {}",
            match &verified {
                Ok(()) => "trusted".to_string(),
                Err(reason) => format!("NOT trusted: {reason}"),
            }
        ));
        self.tls = Some(Box::new(conn));
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(self.tls_info.insert(TlsInfo {
            protocol,
            cipher_suite,
            verified,
            certificate,
        }))
    }

    /// Authenticates with PLAIN when offered, else LOGIN. Credentials are sent as the server asks,
    /// whether or not the connection is encrypted: callers decide whether that is acceptable.
    pub fn authenticate(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        let mechanism = if self.capabilities.offers_auth(AuthMechanism::Plain) {
            AuthMechanism::Plain
        } else if self.capabilities.offers_auth(AuthMechanism::Login) {
            AuthMechanism::Login
        } else {
            let offered = self.capabilities.auth_mechanisms();
            return Err(SmtpError::NotOffered {
                peer: self.peer.to_string(),
                detail: if offered.is_empty() {
                    "server offers no AUTH".to_string()
                } else {
                    format!(
                        "server offers AUTH {} but this client speaks only PLAIN and LOGIN",
                        offered.join(" ")
                    )
                },
            });
        };
        let reply = match mechanism {
            AuthMechanism::Plain => {
                let token = format!("\0{}\0{}", credentials.user, credentials.password);
                let reply = self.command(&Command::Auth {
                    mechanism,
                    initial_response: Some(BASE64.encode(&token)),
                })?;
                if reply.is_intermediate() {
                    self.command(&Command::AuthResponse(BASE64.encode(&token)))?
                } else {
                    reply
                }
            }
            AuthMechanism::Login => {
                let mut reply = self.command(&Command::Auth {
                    mechanism,
                    initial_response: None,
                })?;
                for answer in [&credentials.user, &credentials.password] {
                    if !reply.is_intermediate() {
                        break;
                    }
                    reply = self.command(&Command::AuthResponse(BASE64.encode(answer)))?;
                }
                reply
            }
        };
        if !reply.is_positive() {
            return Err(SmtpError::AuthFailed {
                peer: self.peer.to_string(),
                reply,
            });
        }
        Ok(reply)
    }

    /// Sends one command and reads its reply, whatever the code.
    pub fn command(&mut self, command: &Command) -> Result<Reply, SmtpError> {
        self.send(command)?;
        self.flush()?;
        self.read_reply()
    }

    /// Queues a command for sending without waiting for its reply: with PIPELINING several
    /// commands go out in one write at the next [`Connection::flush`], and their replies are read
    /// in order with [`Connection::read_reply`].
    pub fn send(&mut self, command: &Command) -> Result<(), SmtpError> {
        let wire = command.to_string();
        if wire.contains(['\r', '\n']) {
            return Err(self.protocol(&format!(
                "refusing to send a command containing a line break: {}",
                command.redacted()
            )));
        }
        self.transcript.sent(&command.redacted());
        self.unsent.extend_from_slice(wire.as_bytes());
        self.unsent.extend_from_slice(b"\r\n");
        let wait = match command {
            Command::Data => self.timeouts.data_start,
            _ => self.timeouts.command,
        };
        self.awaited.push_back((command.verb(), wait));
        Ok(())
    }

    /// Writes everything queued by [`Connection::send`].
    pub fn flush(&mut self) -> Result<(), SmtpError> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let during = match self.awaited.back() {
            Some((verb, _)) => format!("sending {verb}"),
            None => "sending".to_string(),
        };
        let unsent = std::mem::take(&mut self.unsent);
        self.write_all(&unsent, self.timeouts.command)
            .map_err(|e| self.failure(e, &during))
    }

    /// Reads the next reply, whatever the code: the one to the oldest command not yet answered.
    pub fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let (what, wait) = self
            .awaited
            .pop_front()
            .unwrap_or(("a reply", self.timeouts.command));
        let during = if what.starts_with(char::is_uppercase) {
            format!("waiting for the reply to {what}")
        } else {
            format!("waiting for {what}")
        };
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(&during, wait)?;
            self.transcript.received(&line);
            let (_, continued, _) = split_line(&line).map_err(|e| self.protocol(&e))?;
            lines.push(line);
            if !continued {
                break;
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(self.protocol("reply has too many lines"));
            }
        }
        Reply::from_lines(&lines).map_err(|e| self.protocol(&e))
    }

    /// Delivers one message: MAIL, RCPT for every recipient and DATA, pipelined in one write when
    /// the server offers PIPELINING, then the message with dot-stuffing and CRLF line ends. A
    /// transaction that did not end with a reply to the message data is reset with RSET, so the
    /// connection can carry the next message.
    pub fn deliver(
        &mut self,
        mail: &Mail<'_>,
        body: &mut dyn BufRead,
    ) -> Result<Delivery, SmtpError> {
        if !self.capabilities.pipelining() {
            return self.deliver_in_lockstep(mail, body);
        }
        self.send_envelope(mail)?;
        self.flush()?;
        let (mail_reply, recipients, data_reply) = self.envelope_replies(mail.recipients.len())?;
        self.finish_transaction(mail_reply, recipients, data_reply, body)
    }

    /// Delivers every message `outbox` hands out over this connection. With PIPELINING the end of
    /// each message goes out in one write with the next message's MAIL, RCPT and DATA (RFC 2920
    /// lets message content open a group), so over a long round trip each message costs about one
    /// round trip instead of two. Each message's outcome goes back to `outbox.done` in order. On a
    /// connection failure every message still in flight is told the error, which is returned:
    /// the connection is then unusable.
    pub fn deliver_all(&mut self, outbox: &mut dyn Outbox) -> Result<(), SmtpError> {
        if !self.capabilities.pipelining() {
            while let Some(mut message) = outbox.next(&self.capabilities) {
                let mail = Mail {
                    from: &message.from,
                    recipients: &message.recipients,
                    size: message.size,
                    eight_bit: message.eight_bit,
                };
                let outcome = self.deliver(&mail, &mut message.body);
                drop(message);
                match outcome {
                    Ok(delivery) => outbox.done(Ok(delivery)),
                    Err(e) => {
                        outbox.done(Err(&e));
                        return Err(e);
                    }
                }
            }
            return Ok(());
        }
        let Some(mut current) = outbox.next(&self.capabilities) else {
            return Ok(());
        };
        let mut in_flight = 1;
        let result = self
            .send_envelope(&current.as_mail())
            .and_then(|()| self.flush());
        // Each message is dropped before its outcome is reported, as `Outbox::done` promises.
        if let Err(e) = result {
            drop(current);
            outbox.done(Err(&e));
            return Err(e);
        }
        loop {
            let step = self.pipelined_step(&mut current, outbox, &mut in_flight);
            match step {
                Ok((delivery, Some(next))) => {
                    in_flight -= 1;
                    drop(std::mem::replace(&mut current, next));
                    outbox.done(Ok(delivery));
                }
                Ok((delivery, None)) => {
                    drop(current);
                    outbox.done(Ok(delivery));
                    return Ok(());
                }
                Err(e) => {
                    drop(current);
                    for _ in 0..in_flight {
                        outbox.done(Err(&e));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Reads the envelope replies of `current`, sends its data (or a reset), sends the next
    /// message's envelope in the same write, and reads the reply that ends `current`.
    fn pipelined_step(
        &mut self,
        current: &mut Message,
        outbox: &mut dyn Outbox,
        in_flight: &mut usize,
    ) -> Result<(Delivery, Option<Message>), SmtpError> {
        let (mail_reply, recipients, data_reply) =
            self.envelope_replies(current.recipients.len())?;
        let ending =
            self.close_transaction(&mail_reply, &recipients, &data_reply, &mut current.body)?;
        let next = outbox.next(&self.capabilities);
        if let Some(next) = &next {
            // Counted before sending: a failure from here on is the next message's outcome too.
            *in_flight += 1;
            self.send_envelope(&next.as_mail())?;
        }
        self.flush_data()?;
        let data = match ending {
            Some(ending) => self.conclude(ending)?,
            None => None,
        };
        Ok((
            Delivery {
                mail: mail_reply,
                recipients,
                data,
            },
            next,
        ))
    }

    fn deliver_in_lockstep(
        &mut self,
        mail: &Mail<'_>,
        body: &mut dyn BufRead,
    ) -> Result<Delivery, SmtpError> {
        let mail_reply = self.command(&self.mail_command(mail))?;
        if !mail_reply.is_positive() {
            return Ok(Delivery {
                mail: mail_reply,
                recipients: Vec::new(),
                data: None,
            });
        }
        let mut recipients = Vec::with_capacity(mail.recipients.len());
        for to in mail.recipients {
            recipients.push(self.command(&rcpt_command(to))?);
        }
        if !recipients.iter().any(Reply::is_positive) {
            self.reset()?;
            return Ok(Delivery {
                mail: mail_reply,
                recipients,
                data: None,
            });
        }
        let data_reply = self.command(&Command::Data)?;
        self.finish_transaction(mail_reply, recipients, data_reply, body)
    }

    /// Ends a transaction whose envelope has been answered and waits for the outcome.
    fn finish_transaction(
        &mut self,
        mail_reply: Reply,
        recipients: Vec<Reply>,
        data_reply: Reply,
        body: &mut dyn BufRead,
    ) -> Result<Delivery, SmtpError> {
        let ending = self.close_transaction(&mail_reply, &recipients, &data_reply, body)?;
        self.flush_data()?;
        let data = match ending {
            Some(ending) => self.conclude(ending)?,
            None => None,
        };
        Ok(Delivery {
            mail: mail_reply,
            recipients,
            data,
        })
    }

    fn mail_command(&self, mail: &Mail<'_>) -> Command {
        let mut parameters = Vec::new();
        if let Some(size) = mail.size.filter(|_| self.capabilities.has("SIZE")) {
            parameters.push(Parameter::size(size));
        }
        if mail.eight_bit && self.capabilities.eight_bit_mime() {
            parameters.push(Parameter::body_8bitmime());
        }
        Command::Mail {
            from: mail.from.clone(),
            parameters,
        }
    }

    /// Queues MAIL, one RCPT per recipient and DATA, unflushed.
    fn send_envelope(&mut self, mail: &Mail<'_>) -> Result<(), SmtpError> {
        self.send(&self.mail_command(mail))?;
        for to in mail.recipients {
            self.send(&rcpt_command(to))?;
        }
        self.send(&Command::Data)
    }

    fn envelope_replies(&mut self, count: usize) -> Result<(Reply, Vec<Reply>, Reply), SmtpError> {
        let mail_reply = self.read_reply()?;
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            recipients.push(self.read_reply()?);
        }
        Ok((mail_reply, recipients, self.read_reply()?))
    }

    /// Ends a transaction whose envelope has been answered, without flushing: the message data
    /// and its final dot when DATA was taken and someone accepted; otherwise a reset where a
    /// transaction is open (a DATA taken with nobody to deliver to gets an empty message first,
    /// RFC 2920 §3.1). Returns what the replies still due will answer; `None` when the message is
    /// settled already.
    fn close_transaction(
        &mut self,
        mail_reply: &Reply,
        recipients: &[Reply],
        data_reply: &Reply,
        body: &mut dyn BufRead,
    ) -> Result<Option<Ending>, SmtpError> {
        let transaction_open = mail_reply.is_positive();
        let anyone = transaction_open && recipients.iter().any(Reply::is_positive);
        let data_started = data_reply.code == ReplyCode::START_DATA;
        if data_started && anyone {
            self.write_body(body)?;
            self.queue_dot();
            return Ok(Some(Ending::Data));
        }
        if data_started {
            self.queue_dot();
        }
        if transaction_open {
            self.send(&Command::Rset)?;
        }
        Ok(match (data_started, transaction_open) {
            (true, true) => Some(Ending::DotThenReset),
            (true, false) => Some(Ending::Dot),
            (false, true) => Some(Ending::Reset(data_reply.clone(), anyone)),
            (false, false) => None,
        })
    }

    /// Reads the replies that end a transaction; the reply to the message data when it was sent.
    fn conclude(&mut self, ending: Ending) -> Result<Option<Reply>, SmtpError> {
        match ending {
            Ending::Data => self.read_reply().map(Some),
            Ending::Dot => self.read_reply().map(|_| None),
            Ending::DotThenReset => {
                self.read_reply()?;
                self.read_reply().map(|_| None)
            }
            Ending::Reset(data_reply, anyone) => {
                self.read_reply()?;
                Ok(anyone.then_some(data_reply))
            }
        }
    }

    /// Sends RSET and reads its reply.
    pub fn reset(&mut self) -> Result<Reply, SmtpError> {
        self.command(&Command::Rset)
    }

    /// Says QUIT and closes the connection. The server's answer no longer matters, so failures
    /// here are not reported.
    pub fn quit(mut self) {
        if self.send(&Command::Quit).is_ok() && self.flush().is_ok() {
            let _ = self.read_reply();
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.complete_io(&mut self.tcp);
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    fn write_body(&mut self, body: &mut dyn BufRead) -> Result<(), SmtpError> {
        let mut line = Vec::new();
        let mut octets = 0usize;
        loop {
            line.clear();
            let read = body
                .read_until(b'\n', &mut line)
                .map_err(SmtpError::MessageRead)?;
            if read == 0 {
                break;
            }
            octets += read;
            let text = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(&line);
            if text.starts_with(b".") {
                self.unsent.push(b'.');
            }
            self.unsent.extend_from_slice(text);
            self.unsent.extend_from_slice(b"\r\n");
            if self.unsent.len() >= DATA_BLOCK {
                self.flush_data()?;
            }
        }
        self.transcript
            .note(&format!("({octets} octets of message data)"));
        Ok(())
    }

    fn flush_data(&mut self) -> Result<(), SmtpError> {
        let unsent = std::mem::take(&mut self.unsent);
        self.write_all(&unsent, self.timeouts.data_block)
            .map_err(|e| self.failure(e, "sending message data"))
    }

    /// Queues the dot that ends message data; its reply may take the longest of all.
    fn queue_dot(&mut self) {
        self.transcript.sent(".");
        self.unsent.extend_from_slice(b".\r\n");
        self.awaited
            .push_back(("the end of message data", self.timeouts.data_end));
    }

    fn write_all(&mut self, bytes: &[u8], wait: Duration) -> io::Result<()> {
        self.limit_writes(wait)?;
        match self.tls.as_mut() {
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls.as_mut(), &mut self.tcp);
                stream.write_all(bytes)?;
                stream.flush()
            }
            None => self.tcp.write_all(bytes),
        }
    }

    /// The next line of a reply, waiting at most `wait` for each read from the socket; lines
    /// already received cost no system call at all.
    fn read_line(&mut self, during: &str, wait: Duration) -> Result<String, SmtpError> {
        loop {
            if let Some(end) = self.received.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.received.drain(..=end).collect();
                let line = raw
                    .strip_suffix(b"\n")
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .unwrap_or(&raw);
                return Ok(String::from_utf8_lossy(line).into_owned());
            }
            if self.received.len() > MAX_LINE {
                return Err(self.protocol("reply line too long"));
            }
            self.limit_reads(wait);
            let mut chunk = [0u8; 4096];
            // A TLS read may write too (a pending record), under the limit of the last write.
            let read = match self.tls.as_mut() {
                Some(tls) => rustls::Stream::new(tls.as_mut(), &mut self.tcp).read(&mut chunk),
                None => self.tcp.read(&mut chunk),
            };
            match read {
                Ok(0) => {
                    return Err(SmtpError::Closed {
                        peer: self.peer.to_string(),
                        during: during.to_string(),
                    });
                }
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failure(e, during)),
            }
        }
    }

    fn limit_reads(&mut self, wait: Duration) {
        // A zero duration is refused by the socket layer; every caller passes a positive one.
        if self.read_limit != Some(wait) && self.tcp.set_read_timeout(Some(wait)).is_ok() {
            self.read_limit = Some(wait);
        }
    }

    fn limit_writes(&mut self, wait: Duration) -> io::Result<()> {
        if self.write_limit != Some(wait) {
            self.tcp.set_write_timeout(Some(wait))?;
            self.write_limit = Some(wait);
        }
        Ok(())
    }

    fn failure(&self, err: io::Error, during: &str) -> SmtpError {
        let peer = self.peer.to_string();
        let during = during.to_string();
        if let Some(tls_err) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return SmtpError::Tls {
                peer,
                detail: tls::describe(tls_err),
            };
        }
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                SmtpError::Timeout { peer, during }
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => SmtpError::Closed { peer, during },
            _ => SmtpError::Io {
                peer,
                during,
                error: err,
            },
        }
    }

    fn rejected(&self, context: &str, reply: Reply) -> SmtpError {
        SmtpError::Rejected {
            peer: self.peer.to_string(),
            context: context.to_string(),
            reply,
        }
    }

    fn protocol(&self, detail: &str) -> SmtpError {
        SmtpError::Protocol {
            peer: self.peer.to_string(),
            detail: detail.to_string(),
        }
    }

    fn tls_error(&self, detail: String) -> SmtpError {
        SmtpError::Tls {
            peer: self.peer.to_string(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    /// What the scripted server does next: read this many lines (or up to the lone dot), then
    /// write the reply text.
    enum Step {
        Lines(usize, &'static str),
        Message(&'static str),
        /// Wait, then write the reply text without reading anything.
        After(Duration, &'static str),
    }

    /// Serves one connection: the greeting, then the steps. Returns everything the client sent.
    fn server(greeting: &'static str, steps: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut seen = Vec::new();
            writer.write_all(greeting.as_bytes()).unwrap();
            for step in steps {
                let (count, reply) = match step {
                    Step::Lines(count, reply) => (Some(count), reply),
                    Step::Message(reply) => (None, reply),
                    Step::After(wait, reply) => {
                        std::thread::sleep(wait);
                        // The client may have given up and gone; that is what some tests want.
                        let _ = writer.write_all(reply.as_bytes());
                        continue;
                    }
                };
                let mut read = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        return seen;
                    }
                    read += 1;
                    let done = match count {
                        Some(count) => read == count,
                        None => line == ".\r\n",
                    };
                    seen.push(line);
                    if done {
                        break;
                    }
                }
                writer.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (addr, handle)
    }

    fn options(transcript: Transcript) -> ConnectOptions {
        ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_secs(10)),
            family: AddressFamily::Any,
            transcript,
        }
    }

    fn domain(text: &str) -> Domain {
        Domain::parse(text).unwrap()
    }

    /// Hands out prepared messages and keeps what the connection reports.
    struct Script {
        messages: VecDeque<Message>,
        outcomes: Vec<Result<Delivery, String>>,
    }

    impl Outbox for Script {
        fn next(&mut self, _: &Capabilities) -> Option<Message> {
            self.messages.pop_front()
        }

        fn done(&mut self, outcome: Result<Delivery, &SmtpError>) {
            self.outcomes.push(outcome.map_err(ToString::to_string));
        }
    }

    fn message(to: &str, body: &'static str) -> Message {
        Message {
            from: ReversePath::Mailbox(Address::parse("a@example.test", &domain("x")).unwrap()),
            recipients: vec![Address::parse(to, &domain("x")).unwrap()],
            size: None,
            eight_bit: false,
            body: Box::new(body.as_bytes()),
        }
    }

    #[test]
    fn deliver_all_sends_the_next_envelope_with_the_final_dot() {
        // The reply to the first message's dot is only written once the second message's
        // envelope has arrived: a client that waited for it would time out here.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, "250-sink\r\n250 PIPELINING\r\n"),
                Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"),
                Step::Message(""),
                Step::Lines(
                    3,
                    "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
                ),
                Step::Lines(1, "250 2.0.0 reset\r\n"),
            ],
        );
        let opts = ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_secs(3)),
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let mut script = Script {
            messages: VecDeque::from([
                message("one@example.test", "Subject: 1\n\n.starts with a dot\n"),
                message("nobody@example.test", "Subject: 2\n\nbody\n"),
            ]),
            outcomes: Vec::new(),
        };
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(script.outcomes.len(), 2);
        let first = script.outcomes[0].as_ref().unwrap();
        assert!(first.accepted(0));
        assert_eq!(
            first.data.as_ref().unwrap().to_string(),
            "250 2.0.0 queued as 1"
        );
        let second = script.outcomes[1].as_ref().unwrap();
        assert!(!second.accepted(0));
        assert_eq!(second.outcome(0).unwrap().code.value(), 550);
        assert!(seen.contains(&"..starts with a dot\r\n".to_string()));
        assert_eq!(seen.last().map(String::as_str), Some("RSET\r\n"));
    }

    /// A message body that tells, through `token`, whether it still exists.
    struct Watched {
        bytes: &'static [u8],
        _token: Arc<()>,
    }

    impl Read for Watched {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(buf)
        }
    }

    impl BufRead for Watched {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.bytes.fill_buf()
        }

        fn consume(&mut self, amount: usize) {
            self.bytes.consume(amount);
        }
    }

    /// Hands out watched messages and notes, for each outcome, whether its message was gone.
    struct Watching {
        messages: VecDeque<Message>,
        tokens: VecDeque<Arc<()>>,
        released: Vec<bool>,
    }

    impl Watching {
        fn new(count: usize) -> Watching {
            let mut watching = Watching {
                messages: VecDeque::new(),
                tokens: VecDeque::new(),
                released: Vec::new(),
            };
            for _ in 0..count {
                let token = Arc::new(());
                let mut message = message("one@example.test", "");
                message.body = Box::new(Watched {
                    bytes: b"Subject: s\n\nbody\n",
                    _token: token.clone(),
                });
                watching.messages.push_back(message);
                watching.tokens.push_back(token);
            }
            watching
        }
    }

    impl Outbox for Watching {
        fn next(&mut self, _: &Capabilities) -> Option<Message> {
            self.messages.pop_front()
        }

        fn done(&mut self, _: Result<Delivery, &SmtpError>) {
            if let Some(token) = self.tokens.pop_front() {
                self.released.push(Arc::strong_count(&token) == 1);
            }
        }
    }

    #[test]
    fn deliver_all_lets_go_of_each_message_before_reporting_it() {
        // An outbox may then dispose of what the body read from (queue-run closes the message
        // file on another thread).
        let accepted = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n";
        for pipelining in [true, false] {
            let ehlo = if pipelining {
                "250-sink\r\n250 PIPELINING\r\n"
            } else {
                "250 sink\r\n"
            };
            let steps = if pipelining {
                vec![
                    Step::Lines(1, ehlo),
                    Step::Lines(3, accepted),
                    Step::Message(""),
                    Step::Lines(
                        3,
                        "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                    ),
                    Step::Message("250 2.0.0 queued as 2\r\n"),
                ]
            } else {
                let mut steps = vec![Step::Lines(1, ehlo)];
                for _ in 0..2 {
                    steps.push(Step::Lines(1, "250 2.1.0 Ok\r\n"));
                    steps.push(Step::Lines(1, "250 2.1.5 Ok\r\n"));
                    steps.push(Step::Lines(1, "354 go ahead\r\n"));
                    steps.push(Step::Message("250 2.0.0 queued\r\n"));
                }
                steps
            };
            let (addr, server) = server("220 sink ESMTP\r\n", steps);
            let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
            conn.greeting().unwrap();
            conn.hello(&domain("client.example")).unwrap();
            let mut watching = Watching::new(2);
            conn.deliver_all(&mut watching).unwrap();
            drop(conn);
            server.join().unwrap();
            assert_eq!(watching.released, [true, true], "pipelining: {pipelining}");
        }
    }

    #[test]
    fn deliver_all_reports_a_broken_connection_to_every_message_in_flight() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, "250-sink\r\n250 PIPELINING\r\n"),
                Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"),
            ],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let mut script = Script {
            messages: VecDeque::from([
                message("one@example.test", "Subject: 1\n\nx\n"),
                message("two@example.test", "Subject: 2\n\ny\n"),
                message("three@example.test", "Subject: 3\n\nz\n"),
            ]),
            outcomes: Vec::new(),
        };
        assert!(conn.deliver_all(&mut script).is_err());
        server.join().unwrap();
        assert_eq!(script.outcomes.len(), 2, "two messages were in flight");
        assert!(script.outcomes.iter().all(Result::is_err));
        assert_eq!(script.messages.len(), 1, "the third was never taken");
    }

    #[test]
    fn pipelined_delivery_reports_each_recipient() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(
                    1,
                    "250-sink\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n",
                ),
                Step::Lines(
                    4,
                    "250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                ),
                Step::Message("250 2.0.0 queued as X\r\n"),
                Step::Lines(1, "221 bye\r\n"),
            ],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let from = ReversePath::parse("<>", &domain("client.example")).unwrap();
        let recipients = [
            Address::parse("nouser@sink.example", &domain("x")).unwrap(),
            Address::parse("user@sink.example", &domain("x")).unwrap(),
        ];
        let mail = Mail {
            from: &from,
            recipients: &recipients,
            size: Some(42),
            eight_bit: true,
        };
        let mut body: &[u8] = b"Subject: t\n\n.leading dot\r\nlast line without end";
        let delivery = conn.deliver(&mail, &mut body).unwrap();
        conn.quit();
        assert!(!delivery.accepted(0));
        assert_eq!(delivery.outcome(0).unwrap().code.value(), 550);
        assert!(delivery.accepted(1));
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            [
                "EHLO client.example\r\n",
                "MAIL FROM:<> SIZE=42 BODY=8BITMIME\r\n",
                "RCPT TO:<nouser@sink.example>\r\n",
                "RCPT TO:<user@sink.example>\r\n",
                "DATA\r\n",
                "Subject: t\r\n",
                "\r\n",
                "..leading dot\r\n",
                "last line without end\r\n",
                ".\r\n",
                "QUIT\r\n",
            ]
        );
    }

    #[test]
    fn each_reply_waits_under_its_own_time_limit() {
        // Commands get a short limit, the end of data a long one. The reply to the dot comes
        // later than the command limit, and is still awaited: its own limit applies even
        // though the socket last waited for command replies.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, "250-sink\r\n250 PIPELINING\r\n"),
                Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"),
                Step::Message(""),
                Step::After(Duration::from_millis(1500), "250 2.0.0 queued\r\n"),
                // The next transaction's MAIL is never answered: the command limit applies again.
                Step::Lines(3, ""),
                Step::After(Duration::from_secs(2), ""),
            ],
        );
        let short = Duration::from_millis(300);
        let opts = ConnectOptions {
            timeouts: Timeouts {
                command: short,
                data_start: short,
                ..Timeouts::uniform(Duration::from_secs(10))
            },
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let from = ReversePath::parse("a@b.example", &domain("x")).unwrap();
        let recipients = [Address::parse("u@sink.example", &domain("x")).unwrap()];
        let mail = Mail {
            from: &from,
            recipients: &recipients,
            size: None,
            eight_bit: false,
        };
        let delivery = conn.deliver(&mail, &mut &b"x\n"[..]).unwrap();
        assert!(delivery.accepted(0));
        let err = conn.deliver(&mail, &mut &b"y\n"[..]).unwrap_err();
        assert!(
            matches!(&err, SmtpError::Timeout { during, .. } if during == "waiting for the reply to MAIL"),
            "{err}"
        );
        drop(conn);
        server.join().unwrap();
    }

    #[test]
    fn without_pipelining_nobody_accepted_means_no_data() {
        let (addr, server) = server(
            "220 sink\r\n",
            vec![
                Step::Lines(1, "250 sink\r\n"),
                Step::Lines(1, "250 Ok\r\n"),
                Step::Lines(1, "450 4.2.0 try later\r\n"),
                Step::Lines(1, "250 reset\r\n"),
            ],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let from = ReversePath::parse("a@b.example", &domain("x")).unwrap();
        let recipients = [Address::parse("u@sink.example", &domain("x")).unwrap()];
        let mail = Mail {
            from: &from,
            recipients: &recipients,
            size: Some(1),
            eight_bit: true,
        };
        let delivery = conn.deliver(&mail, &mut &b"x\n"[..]).unwrap();
        drop(conn);
        assert_eq!(delivery.data, None);
        assert!(delivery.outcome(0).unwrap().is_transient());
        let seen = server.join().unwrap();
        assert_eq!(
            seen[1], "MAIL FROM:<a@b.example>\r\n",
            "SIZE sent unannounced"
        );
        assert_eq!(seen.last().unwrap(), "RSET\r\n");
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let (addr, server) = server(
            "220 old\r\n",
            vec![
                Step::Lines(1, "502 5.5.1 EHLO not implemented\r\n"),
                Step::Lines(1, "250 old.example\r\n"),
            ],
        );
        let captured = Arc::new(Mutex::new(Vec::new()));
        let mut conn =
            Connection::open(addr, None, &options(Transcript::Capture(captured.clone()))).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        assert!(!conn.is_extended());
        assert!(!conn.capabilities().etrn());
        drop(conn);
        assert_eq!(server.join().unwrap()[1], "HELO client.example\r\n");
        let transcript = captured.lock().unwrap().join("\n");
        assert!(
            transcript.contains(">>> EHLO client.example"),
            "{transcript}"
        );
        assert!(transcript.contains("trying HELO"), "{transcript}");
    }

    #[test]
    fn data_before_the_handshake_is_refused() {
        let (addr, _server) = server(
            "220 evil\r\n",
            vec![Step::Lines(1, "220 go ahead\r\n250 injected\r\n")],
        );
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        conn.greeting().unwrap();
        let err = conn
            .starttls(&TlsClient::new(crate::smtp::Verification::Insecure))
            .unwrap_err();
        assert!(matches!(err, SmtpError::Protocol { .. }), "{err}");
    }

    #[test]
    fn a_negative_greeting_is_an_error_with_the_reply() {
        let (addr, _server) = server("421 4.3.2 too busy\r\n", vec![]);
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        let err = conn.greeting().unwrap_err();
        assert_eq!(err.reply().unwrap().to_string(), "421 4.3.2 too busy");
        assert!(err.is_transient());
    }

    #[test]
    fn a_closed_connection_says_what_was_awaited() {
        let (addr, _server) = server("220-first line\r\n", vec![]);
        let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
        let err = conn.greeting().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("lost connection waiting for the greeting"),
            "{err}"
        );
    }

    #[test]
    fn resolving_an_address_literal_needs_no_resolver() {
        let host = RelayHost::Ip("::1".parse().unwrap());
        assert_eq!(resolve(&host, 25, AddressFamily::Any).unwrap().len(), 1);
        let err = resolve(&host, 25, AddressFamily::V4).unwrap_err();
        assert!(matches!(err, SmtpError::NoHost { .. }));
    }
}
