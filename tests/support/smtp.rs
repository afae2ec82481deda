//! The one scripted SMTP server of the end-to-end suites: it answers each command as its
//! [`Script`] says and records what the client sent.
//!
//! A script is a well-behaved receiving MTA by default (PIPELINING, SIZE, ETRN, 8BITMIME,
//! ENHANCEDSTATUSCODES; every recipient and every message accepted). Each hostile or particular
//! behaviour a suite needs is one builder call:
//!
//! - the greeting: another text, none at all (a server that hangs), a pause before it, or
//!   sessions held before it until the test opens a gate ([`Server::open`]);
//! - EHLO refused (so the client falls back to HELO), or other keywords;
//! - STARTTLS with a certificate made for the run, or announced and refused; AUTH PLAIN and LOGIN;
//! - a reply per ETRN argument;
//! - a reply per recipient (by the start of its local part; rules may also change while the
//!   server runs, [`Server::rule`]), and a recipient limit per transaction;
//! - any reply to DATA (250 where 354 belongs, 354 where none does);
//! - a reply to the end of the data chosen by the message's text, or the connection cut there;
//! - replies trickled a byte at a time from a chosen verb on;
//! - a wait before each end-of-data reply, to keep a delivery going.
//!
//! It records every line the client sent, with the connection it came on, and every message
//! it stored (its reply to the end of the data was 2xx), recorded before that reply goes out,
//! so a client killed after that point may send it again, as "at least once" allows.
//!
//! Limits: one thread per connection, so parallel clients are served at once. The server stops
//! when dropped, and after five minutes whatever happens to the test; a connection idle for 30
//! seconds is closed. It listens on loopback addresses only; port 0 gives a free port.

use super::tls::Stream;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

const LIFETIME: Duration = Duration::from_secs(300);
const IDLE: Duration = Duration::from_secs(30);

/// How the server answers EHLO.
#[derive(Clone)]
pub enum Ehlo {
    /// `250` lines with these keywords after the host name (STARTTLS and AUTH are added when
    /// configured).
    Keywords(Vec<String>),
    /// This reply instead (`502 ...`), so the client must fall back to HELO.
    Refuse(String),
}

/// What the end of a message's data gets.
#[derive(Clone)]
pub enum End {
    /// This reply (lines separated by `\n`); a 2xx means the message is stored.
    Reply(String),
    /// No reply: the connection is closed, as by a server that crashed on the message.
    Cut,
}

/// What the server does in one connection.
#[derive(Clone)]
pub struct Script {
    /// The name in the EHLO and HELO replies.
    pub name: String,
    /// `None`: say nothing at all, as a server that hangs.
    pub greeting: Option<String>,
    /// How long to wait before the greeting.
    pub pause: Duration,
    pub ehlo: Ehlo,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// STARTTLS announced but answered with this reply, so the client's STARTTLS fails.
    pub starttls_refusal: Option<String>,
    /// User and password that AUTH accepts, and the mechanisms announced (PLAIN and LOGIN are
    /// understood).
    pub auth: Option<(String, String)>,
    pub auth_mechanisms: &'static str,
    /// Reply per ETRN argument (as sent); lines separated by `\n`.
    pub etrn: Vec<(String, String)>,
    pub etrn_default: String,
    /// Reply to RCPT for recipients whose local part starts with the prefix (the first rule
    /// that matches; a 2xx reply accepts the recipient); the others are accepted.
    pub rcpt: Vec<(String, String)>,
    /// Recipients accepted per transaction; those past it get `452 4.5.3`.
    pub recipient_limit: Option<usize>,
    /// The reply to DATA when a recipient was accepted; anything but 354 reads no data.
    pub data: String,
    /// What the end of the data gets when the message contains the text (the first rule that
    /// matches); otherwise `250`, and the message is stored.
    pub end_of_data: Vec<(String, End)>,
    /// How long to wait after the end of each message's data before answering it.
    pub per_message: Duration,
    /// From the reply to this verb on (`.` for the end of the data, `220` for the greeting),
    /// every reply is written one byte at a time with this pause before each byte.
    pub trickle: Option<(&'static str, Duration)>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            name: "sink.test".to_string(),
            greeting: Some("220 sink.test ESMTP scripted".to_string()),
            pause: Duration::ZERO,
            ehlo: Ehlo::Keywords(
                [
                    "PIPELINING",
                    "SIZE 10240000",
                    "ETRN",
                    "8BITMIME",
                    "ENHANCEDSTATUSCODES",
                    "HELP",
                ]
                .map(String::from)
                .to_vec(),
            ),
            tls: None,
            starttls_refusal: None,
            auth: None,
            auth_mechanisms: "PLAIN LOGIN",
            etrn: Vec::new(),
            etrn_default: "250 2.0.0 Queuing started".to_string(),
            rcpt: Vec::new(),
            recipient_limit: None,
            data: "354 End data with <CR><LF>.<CR><LF>".to_string(),
            end_of_data: Vec::new(),
            per_message: Duration::ZERO,
            trickle: None,
        }
    }
}

impl Script {
    /// Calls itself `name` in its greeting, EHLO and HELO replies.
    pub fn named(name: &str) -> Script {
        Script {
            name: name.to_string(),
            greeting: Some(format!("220 {name} ESMTP scripted")),
            ..Script::default()
        }
    }

    pub fn etrn(mut self, argument: &str, reply: &str) -> Script {
        self.etrn.push((argument.to_string(), reply.to_string()));
        self
    }

    pub fn greeting(mut self, greeting: Option<&str>) -> Script {
        self.greeting = greeting.map(str::to_string);
        self
    }

    pub fn pause(mut self, pause: Duration) -> Script {
        self.pause = pause;
        self
    }

    pub fn ehlo(mut self, ehlo: Ehlo) -> Script {
        self.ehlo = ehlo;
        self
    }

    /// EHLO answered with these keywords.
    pub fn keywords(self, keywords: &[&str]) -> Script {
        self.ehlo(Ehlo::Keywords(
            keywords.iter().map(|k| k.to_string()).collect(),
        ))
    }

    /// EHLO answered with this reply, so the client falls back to HELO.
    pub fn refuse_ehlo(self, reply: &str) -> Script {
        self.ehlo(Ehlo::Refuse(reply.to_string()))
    }

    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Script {
        self.tls = Some(config);
        self
    }

    pub fn starttls_refusal(mut self, reply: &str) -> Script {
        self.starttls_refusal = Some(reply.to_string());
        self
    }

    pub fn auth(mut self, user: &str, password: &str, mechanisms: &'static str) -> Script {
        self.auth = Some((user.to_string(), password.to_string()));
        self.auth_mechanisms = mechanisms;
        self
    }

    pub fn rcpt(mut self, prefix: &str, reply: &str) -> Script {
        self.rcpt.push((prefix.to_string(), reply.to_string()));
        self
    }

    pub fn recipient_limit(mut self, limit: usize) -> Script {
        self.recipient_limit = Some(limit);
        self
    }

    pub fn data(mut self, reply: &str) -> Script {
        self.data = reply.to_string();
        self
    }

    pub fn end_of_data(mut self, containing: &str, end: End) -> Script {
        self.end_of_data.push((containing.to_string(), end));
        self
    }

    pub fn per_message(mut self, wait: Duration) -> Script {
        self.per_message = wait;
        self
    }

    pub fn trickle(mut self, from: &'static str, pause: Duration) -> Script {
        self.trickle = Some((from, pause));
        self
    }

    /// Starts one server following this script on every connection, on 127.0.0.1.
    pub fn start(self) -> Server {
        Server::start(self)
    }
}

/// A message the server stored: its answer to the end of the data was 2xx.
#[derive(Debug, Clone)]
pub struct Received {
    /// The connection it came on, counting from 0.
    pub connection: usize,
    /// The MAIL FROM argument, `<a@b.test>` and any parameters.
    pub mail: String,
    /// The recipients it accepted, as `a@b.test`.
    pub recipients: Vec<String>,
    /// The data as it came over the wire, dot-stuffed, without the final dot line.
    pub wire: Vec<u8>,
    /// True when it came over TLS.
    pub tls: bool,
}

impl Received {
    /// The message as a receiver stores it: dot-stuffing undone, line ends as received.
    pub fn data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(self.wire.len());
        for line in self.wire.split_inclusive(|&b| b == b'\n') {
            data.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        data
    }

    /// The value of the first header field `name`, unfolded no further than its first line.
    pub fn header(&self, name: &str) -> Option<String> {
        let data = self.data();
        let text = String::from_utf8_lossy(&data);
        let prefix = format!("{}:", name.to_ascii_lowercase());
        text.split("\r\n")
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_string())
    }

    /// The envelope lines and the data as one text, for searching.
    pub fn text(&self) -> String {
        let mut text = format!("MAIL FROM:{}\n", self.mail);
        for rcpt in &self.recipients {
            text.push_str(&format!("RCPT TO:<{rcpt}>\n"));
        }
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&self.data()));
        text
    }
}

/// Holds every session before its greeting until opened.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self, stop: &AtomicBool) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open && !stop.load(Ordering::SeqCst) {
            open = match self.opened.wait_timeout(open, Duration::from_millis(100)) {
                Ok((open, _)) => open,
                Err(_) => return,
            };
        }
    }

    fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
        }
        self.opened.notify_all();
    }
}

struct Shared {
    /// Lines the clients sent, with the connection each came on.
    seen: Mutex<Vec<(usize, String)>>,
    messages: Mutex<Vec<Received>>,
    /// Recipient rules added while the server runs; they come before the script's.
    rules: Mutex<Vec<(String, String)>>,
    connections: AtomicUsize,
    /// Sessions that are over, every message of theirs recorded.
    ended: AtomicUsize,
    gate: Gate,
    stop: AtomicBool,
}

/// A running server. Connection `n` follows `scripts[n]`, the last script repeating.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(script: Script) -> Server {
        Server::start_sequence(vec![script])
    }

    pub fn start_sequence(scripts: Vec<Script>) -> Server {
        Server::start_on("127.0.0.1:0".parse().expect("address"), scripts)
    }

    /// Starts on `addr`, a loopback address (port 0: one of the system's choosing).
    pub fn start_on(addr: SocketAddr, scripts: Vec<Script>) -> Server {
        Server::try_start_on(addr, scripts).expect("bind a loopback address")
    }

    /// As [`Server::start_on`], or why the address cannot be bound (port 25 needs root).
    pub fn try_start_on(addr: SocketAddr, scripts: Vec<Script>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        Ok(Server::listen(listener, scripts, true))
    }

    /// A server whose sessions wait before their greeting until [`Server::open`]: a client
    /// that has connected is kept there until the test lets it go on.
    pub fn gated(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        Server::listen(listener, vec![script], false)
    }

    /// One server per `(address, script)`, all on one port, and that port.
    pub fn start_group(servers: &[(IpAddr, Script)]) -> (u16, Vec<Server>) {
        for _ in 0..50 {
            let Ok(first) = TcpListener::bind((servers[0].0, 0)) else {
                continue;
            };
            let port = first.local_addr().expect("listener address").port();
            let mut listeners = vec![first];
            for (ip, _) in &servers[1..] {
                match TcpListener::bind((*ip, port)) {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => break,
                }
            }
            if listeners.len() == servers.len() {
                let started = listeners
                    .into_iter()
                    .zip(servers)
                    .map(|(listener, (_, script))| {
                        Server::listen(listener, vec![script.clone()], true)
                    })
                    .collect();
                return (port, started);
            }
        }
        let addresses: Vec<IpAddr> = servers.iter().map(|(ip, _)| *ip).collect();
        panic!("no port free on all of {addresses:?}");
    }

    fn listen(listener: TcpListener, scripts: Vec<Script>, open: bool) -> Server {
        assert!(!scripts.is_empty());
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            gate: Gate {
                open: Mutex::new(open),
                opened: Condvar::new(),
            },
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || accept(&listener, &scripts, &shared))
        };
        Server {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `[127.0.0.1]:PORT`, a static route to this server.
    pub fn route(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }

    /// A `[routes]` section sending `domains`, and the senders' domain sender.test, to this
    /// server, so that no test asks the machine's resolver.
    pub fn routes(&self, domains: &[&str]) -> String {
        let mut text = String::from("[routes]\n");
        for domain in domains.iter().chain(&["sender.test"]) {
            text.push_str(&format!("{domain:?} = {:?}\n", self.route()));
        }
        text
    }

    /// Lets the sessions that wait before their greeting, and every later one, go on.
    pub fn open(&self) {
        self.shared.gate.open();
    }

    /// From now on, recipients whose local part starts with `prefix` get `reply` to RCPT.
    pub fn rule(&self, prefix: &str, reply: &str) {
        self.shared
            .rules
            .lock()
            .expect("rules")
            .push((prefix.to_string(), reply.to_string()));
    }

    /// Drops the rules added by [`Server::rule`].
    pub fn clear_rules(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// Every line the clients sent, in order; `-- TLS` marks a completed STARTTLS.
    pub fn seen(&self) -> Vec<String> {
        let seen = self.shared.seen.lock().expect("lines");
        seen.iter().map(|(_, line)| line.clone()).collect()
    }

    /// Every command line the clients sent, in order (no message data, no `-- TLS` marks).
    pub fn commands(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|line| !line.starts_with("-- "))
            .collect()
    }

    /// The lines of each connection, in the order the connections came.
    pub fn sessions(&self) -> Vec<Vec<String>> {
        let mut sessions = vec![Vec::new(); self.connections()];
        for (n, line) in self.shared.seen.lock().expect("lines").iter() {
            sessions[*n].push(line.clone());
        }
        sessions
    }

    /// The messages stored, in the order their data ended.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().expect("messages").clone()
    }

    pub fn message_count(&self) -> usize {
        self.shared.messages.lock().expect("messages").len()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Sessions accepted and not yet over: while there are any, a message may still be recorded.
    pub fn open_sessions(&self) -> usize {
        self.connections() - self.shared.ended.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.gate.open();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections, one thread each, until the server is dropped or its lifetime is over.
fn accept(listener: &TcpListener, scripts: &[Script], shared: &Arc<Shared>) {
    let started = Instant::now();
    let mut sessions = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        // Replies go out as they are written: with Nagle's algorithm each one after the first
        // of a pipelined group waits for the client's delayed acknowledgement, some 40 ms per
        // message.
        let _ = stream.set_nodelay(true);
        let n = shared.connections.fetch_add(1, Ordering::SeqCst);
        let script = scripts[n.min(scripts.len() - 1)].clone();
        let shared = shared.clone();
        sessions.push(std::thread::spawn(move || {
            let tcp = stream.try_clone().ok();
            shared.gate.wait(&shared.stop);
            let mut session = Session {
                stream: Stream::Plain(stream),
                buffer: Vec::new(),
                shared: &shared,
                connection: n,
                trickling: None,
                tls: false,
            };
            let _ = session.serve(&script);
            if let Some(tcp) = tcp {
                let _ = tcp.shutdown(Shutdown::Both);
            }
            shared.ended.fetch_add(1, Ordering::SeqCst);
        }));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for session in sessions {
        let _ = session.join();
    }
}

struct Session<'a> {
    stream: Stream,
    buffer: Vec<u8>,
    shared: &'a Shared,
    connection: usize,
    /// The pause before each byte of a reply, once trickling has begun.
    trickling: Option<Duration>,
    tls: bool,
}

/// A mail transaction as far as it went.
#[derive(Default)]
struct Transaction {
    mail: Option<String>,
    recipients: Vec<String>,
}

impl Session<'_> {
    fn serve(&mut self, script: &Script) -> Option<()> {
        if let Some(tcp) = self.stream.tcp() {
            tcp.set_read_timeout(Some(Duration::from_millis(100)))
                .ok()?;
        }
        let Some(greeting) = &script.greeting else {
            // Silent server: hold the connection until the client gives up.
            while self.read_line().is_some() {}
            return None;
        };
        std::thread::sleep(script.pause);
        self.trickle_from(script, "220");
        self.reply(greeting)?;
        let mut transaction = Transaction::default();
        loop {
            let line = self.read_line()?;
            self.note(line.clone())?;
            let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            self.trickle_from(script, &verb);
            match verb.as_str() {
                "EHLO" => {
                    let reply = self.ehlo(script);
                    self.reply(&reply)?
                }
                "HELO" => self.reply(&format!("250 {}", script.name))?,
                "STARTTLS" => match (&script.tls, &script.starttls_refusal, self.tls) {
                    (_, Some(refusal), false) => self.reply(refusal)?,
                    (Some(config), None, false) => {
                        self.reply("220 2.0.0 Ready to start TLS")?;
                        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone)
                        else {
                            return None;
                        };
                        let conn = rustls::ServerConnection::new(config.clone()).ok()?;
                        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                        self.buffer.clear();
                        self.tls = true;
                        transaction = Transaction::default();
                        self.note("-- TLS".to_string())?;
                    }
                    _ => self.reply("502 5.5.1 STARTTLS not available")?,
                },
                "AUTH" => {
                    let accepted = self.authenticate(script, rest)?;
                    if accepted {
                        self.reply("235 2.7.0 Authentication successful")?
                    } else {
                        self.reply("535 5.7.8 Authentication credentials invalid")?
                    }
                }
                "ETRN" => {
                    let reply = script
                        .etrn
                        .iter()
                        .find(|(argument, _)| argument == rest)
                        .map_or(script.etrn_default.as_str(), |(_, reply)| reply.as_str())
                        .to_string();
                    self.reply(&reply)?
                }
                "MAIL" => {
                    transaction = Transaction {
                        mail: Some(rest.trim_start_matches("FROM:").to_string()),
                        recipients: Vec::new(),
                    };
                    self.reply("250 2.1.0 Ok")?
                }
                "RCPT" if transaction.mail.is_none() => {
                    self.reply("503 5.5.1 Error: need MAIL command")?
                }
                "RCPT" => {
                    let reply = self.rcpt(script, rest, &mut transaction)?;
                    self.reply(&reply)?
                }
                "DATA" if transaction.mail.is_none() || transaction.recipients.is_empty() => {
                    self.reply("554 5.5.1 Error: no valid recipients")?
                }
                "DATA" => {
                    self.reply(&script.data)?;
                    if !script.data.starts_with("354") {
                        continue;
                    }
                    let wire = self.read_data()?;
                    let taken = std::mem::take(&mut transaction);
                    self.end_of_data(script, taken, wire)?;
                }
                "RSET" => {
                    transaction = Transaction::default();
                    self.reply("250 2.0.0 Ok")?
                }
                "NOOP" => self.reply("250 2.0.0 Ok")?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Some(());
                }
                _ => self.reply("502 5.5.2 Error: command not recognized")?,
            }
        }
    }

    /// The EHLO reply: the name, the keywords, then STARTTLS and AUTH where the script has them.
    fn ehlo(&self, script: &Script) -> String {
        let keywords = match &script.ehlo {
            Ehlo::Refuse(reply) => return reply.clone(),
            Ehlo::Keywords(keywords) => keywords,
        };
        let mut lines = vec![script.name.clone()];
        lines.extend(keywords.iter().cloned());
        let starttls = script.tls.is_some() || script.starttls_refusal.is_some();
        if starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if script.auth.is_some() {
            lines.push(format!("AUTH {}", script.auth_mechanisms));
        }
        let last = lines.len() - 1;
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, text)| format!("250{}{text}", if i == last { ' ' } else { '-' }))
            .collect();
        lines.join("\n")
    }

    /// The reply to one RCPT, noting the recipient when it is accepted.
    fn rcpt(&self, script: &Script, rest: &str, transaction: &mut Transaction) -> Option<String> {
        let address = rest
            .trim_start_matches("TO:")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_string();
        let local = address.split('@').next().unwrap_or_default();
        let rules = self.shared.rules.lock().ok()?.clone();
        let rule = rules
            .iter()
            .chain(&script.rcpt)
            .find(|(prefix, _)| local.starts_with(prefix.as_str()));
        if let Some((_, reply)) = rule {
            if reply.starts_with('2') {
                transaction.recipients.push(address);
            }
            return Some(reply.clone());
        }
        if script
            .recipient_limit
            .is_some_and(|limit| transaction.recipients.len() >= limit)
        {
            return Some("452 4.5.3 Error: too many recipients".to_string());
        }
        transaction.recipients.push(address);
        Some("250 2.1.5 Ok".to_string())
    }

    /// Answers the end of a message's data, or closes the connection, as the script says.
    fn end_of_data(&mut self, script: &Script, taken: Transaction, wire: Vec<u8>) -> Option<()> {
        std::thread::sleep(script.per_message);
        let text = String::from_utf8_lossy(&wire).into_owned();
        self.trickle_from(script, ".");
        let end = script
            .end_of_data
            .iter()
            .find(|(containing, _)| text.contains(containing.as_str()))
            .map(|(_, end)| end.clone());
        let reply = match end {
            Some(End::Cut) => return None,
            Some(End::Reply(reply)) => reply,
            None => "250 2.0.0 Ok: queued".to_string(),
        };
        if reply.starts_with('2') {
            self.shared.messages.lock().ok()?.push(Received {
                connection: self.connection,
                mail: taken.mail.unwrap_or_default(),
                recipients: taken.recipients,
                wire,
                tls: self.tls,
            });
        }
        self.reply(&reply)
    }

    fn note(&self, line: String) -> Option<()> {
        self.shared.seen.lock().ok()?.push((self.connection, line));
        Some(())
    }

    fn trickle_from(&mut self, script: &Script, verb: &str) {
        if let Some((from, pause)) = script.trickle
            && from.eq_ignore_ascii_case(verb)
        {
            self.trickling = Some(pause);
        }
    }

    fn authenticate(&mut self, script: &Script, rest: &str) -> Option<bool> {
        let (user, password) = script.auth.clone()?;
        let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
        let mechanism = mechanism.to_ascii_uppercase();
        if !script.auth_mechanisms.split(' ').any(|m| m == mechanism) {
            return Some(false);
        }
        match mechanism.as_str() {
            "PLAIN" => {
                let token = BASE64.decode(initial).ok()?;
                Some(token == format!("\0{user}\0{password}").into_bytes())
            }
            "LOGIN" => {
                self.reply("334 VXNlcm5hbWU6")?;
                let given_user = BASE64.decode(self.read_line()?).ok()?;
                self.reply("334 UGFzc3dvcmQ6")?;
                let given_password = BASE64.decode(self.read_line()?).ok()?;
                Some(given_user == user.as_bytes() && given_password == password.as_bytes())
            }
            _ => Some(false),
        }
    }

    /// Writes a reply, lines separated by `\n`, each ended with CRLF: whole, or a byte at a
    /// time once trickling has begun, until the client goes or the test ends.
    fn reply(&mut self, text: &str) -> Option<()> {
        let mut wire = text.replace('\n', "\r\n");
        wire.push_str("\r\n");
        let Some(pause) = self.trickling else {
            self.stream.write_all(wire.as_bytes()).ok()?;
            return self.stream.flush().ok();
        };
        for byte in wire.as_bytes() {
            std::thread::sleep(pause);
            if self.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            self.stream.write_all(&[*byte]).ok()?;
            self.stream.flush().ok()?;
        }
        Some(())
    }

    /// The message data up to the line holding a lone dot, as received.
    fn read_data(&mut self) -> Option<Vec<u8>> {
        let mut wire = Vec::new();
        loop {
            let line = self.read_raw_line()?;
            if line == b".\r\n" {
                return Some(wire);
            }
            wire.extend_from_slice(&line);
        }
    }

    /// The next line without its CRLF.
    fn read_line(&mut self) -> Option<String> {
        let line = self.read_raw_line()?;
        let text = String::from_utf8_lossy(&line);
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// The next line with its line end, as received; `None` at the end of the connection, when
    /// the test is over, or after a long silence.
    fn read_raw_line(&mut self) -> Option<Vec<u8>> {
        let mut idle = Instant::now();
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                return Some(self.buffer.drain(..=end).collect());
            }
            if self.shared.stop.load(Ordering::SeqCst) || idle.elapsed() > IDLE {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    idle = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as a rustls server configuration.
pub fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    super::tls::self_signed(&["localhost", "127.0.0.1"])
}
