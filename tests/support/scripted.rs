//! A scripted SMTP server on loopback for end-to-end tests: it answers each command as its
//! [`Script`] says, hostile answers included (250 to DATA, 354 where none belongs, replies
//! trickled a byte at a time, control characters, a recipient limit, a connection cut on one
//! chosen message), records every line the client sent and every message it took, and stops
//! when dropped (or after a minute at most, whatever happens to the test). Each connection is
//! served on its own thread.

#![allow(dead_code)] // each suite uses its own part of this module

use super::tls::Stream;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

const LIFETIME: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(10);

/// How the server answers EHLO.
#[derive(Clone)]
pub enum Ehlo {
    /// `250-` lines with these keywords (STARTTLS and AUTH are added when configured).
    Keywords(Vec<&'static str>),
    /// This reply instead (`502 ...`), so the client must fall back to HELO.
    Refuse(&'static str),
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
    /// `None`: say nothing at all, as a server that hangs.
    pub greeting: Option<String>,
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
    /// that matches); the others are accepted.
    pub rcpt: Vec<(String, String)>,
    /// Recipients accepted per transaction; those past it get `452 4.5.3`.
    pub recipient_limit: Option<usize>,
    /// The reply to DATA when a recipient was accepted; anything but 354 reads no data.
    pub data: String,
    /// What the end of the data gets when the message contains the text (the first rule that
    /// matches); otherwise `250`, and the message is stored.
    pub end_of_data: Vec<(String, End)>,
    /// From the reply to this verb on (`.` for the end of the data, `220` for the greeting),
    /// every reply is written one byte at a time with this pause before each byte.
    pub trickle: Option<(&'static str, Duration)>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: Some("220 sink.test ESMTP scripted".to_string()),
            ehlo: Ehlo::Keywords(vec!["PIPELINING", "SIZE 10240000", "ETRN", "8BITMIME"]),
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
            trickle: None,
        }
    }
}

impl Script {
    pub fn etrn(mut self, argument: &str, reply: &str) -> Script {
        self.etrn.push((argument.to_string(), reply.to_string()));
        self
    }

    pub fn greeting(mut self, greeting: Option<&str>) -> Script {
        self.greeting = greeting.map(str::to_string);
        self
    }

    pub fn ehlo(mut self, ehlo: Ehlo) -> Script {
        self.ehlo = ehlo;
        self
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

    pub fn trickle(mut self, from: &'static str, pause: Duration) -> Script {
        self.trickle = Some((from, pause));
        self
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
}

struct Shared {
    /// Lines the clients sent, with the connection each came on.
    seen: Mutex<Vec<(usize, String)>>,
    messages: Mutex<Vec<Received>>,
    connections: AtomicUsize,
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
        assert!(!scripts.is_empty());
        let listener = TcpListener::bind(addr).expect("bind a loopback address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut sessions = Vec::new();
                while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let n = shared.connections.fetch_add(1, Ordering::SeqCst);
                            let script = scripts[n.min(scripts.len() - 1)].clone();
                            let shared = shared.clone();
                            sessions.push(std::thread::spawn(move || {
                                let mut session = Session {
                                    stream: Stream::Plain(stream),
                                    buffer: Vec::new(),
                                    shared: &shared,
                                    connection: n,
                                    trickling: None,
                                };
                                let _ = session.serve(&script);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                shared.stop.store(true, Ordering::SeqCst);
                for session in sessions {
                    let _ = session.join();
                }
            })
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

    /// Every line the clients sent, in order; `-- TLS` marks a completed STARTTLS.
    pub fn seen(&self) -> Vec<String> {
        let seen = self.shared.seen.lock().expect("lines");
        seen.iter().map(|(_, line)| line.clone()).collect()
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

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Session<'a> {
    stream: Stream,
    buffer: Vec<u8>,
    shared: &'a Shared,
    connection: usize,
    /// The pause before each byte of a reply, once trickling has begun.
    trickling: Option<Duration>,
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
        self.trickle_from(script, "220");
        self.reply(greeting)?;
        let mut in_tls = false;
        let mut transaction = Transaction::default();
        loop {
            let line = self.read_line()?;
            self.note(line.clone())?;
            let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            self.trickle_from(script, &verb);
            match verb.as_str() {
                "EHLO" => match &script.ehlo {
                    Ehlo::Refuse(reply) => self.reply(reply)?,
                    Ehlo::Keywords(keywords) => {
                        let mut lines = vec!["250-sink.test".to_string()];
                        lines.extend(keywords.iter().map(|k| format!("250-{k}")));
                        let starttls = script.tls.is_some() || script.starttls_refusal.is_some();
                        if starttls && !in_tls {
                            lines.push("250-STARTTLS".to_string());
                        }
                        if script.auth.is_some() {
                            lines.push(format!("250-AUTH {}", script.auth_mechanisms));
                        }
                        lines.push("250 HELP".to_string());
                        self.reply(&lines.join("\n"))?
                    }
                },
                "HELO" => self.reply("250 sink.test")?,
                "STARTTLS" => match (&script.tls, &script.starttls_refusal, in_tls) {
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
                        in_tls = true;
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
                    let reply = self.rcpt(script, rest, &mut transaction);
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

    /// The reply to one RCPT, noting the recipient when it is accepted.
    fn rcpt(&self, script: &Script, rest: &str, transaction: &mut Transaction) -> String {
        let address = rest
            .trim_start_matches("TO:")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_string();
        let local = address.split('@').next().unwrap_or_default();
        if let Some((_, reply)) = script
            .rcpt
            .iter()
            .find(|(prefix, _)| local.starts_with(prefix.as_str()))
        {
            return reply.clone();
        }
        if script
            .recipient_limit
            .is_some_and(|limit| transaction.recipients.len() >= limit)
        {
            return "452 4.5.3 Error: too many recipients".to_string();
        }
        transaction.recipients.push(address);
        "250 2.1.5 Ok".to_string()
    }

    /// Answers the end of a message's data, or closes the connection, as the script says.
    fn end_of_data(&mut self, script: &Script, taken: Transaction, wire: Vec<u8>) -> Option<()> {
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
