//! The one scripted SMTP server of the end-to-end suites, hostile when the test says so.
//!
//! It answers each command as its [`Script`] says and records what the client sent. A script is
//! a well-behaved receiving MTA by default (PIPELINING, SIZE, ETRN, 8BITMIME,
//! ENHANCEDSTATUSCODES; every recipient and every message accepted). It takes BDAT (RFC 3030)
//! whether it announces CHUNKING ([`Script::chunking`]) or not, so a client that sends BDAT
//! unasked is seen doing it. Each hostile or particular
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
//! - a reply to the end of the data (or to `BDAT LAST`) chosen by the message's text, or the
//!   connection cut there;
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
//!
//! Layout: the script and what the server keeps are here; `server` accepts connections and
//! answers the test's questions, `session` serves one connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

mod server;
mod session;

pub use server::Server;

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

    /// CHUNKING announced after the other keywords.
    pub fn chunking(mut self) -> Script {
        if let Ehlo::Keywords(keywords) = &mut self.ehlo {
            keywords.push("CHUNKING".to_string());
        }
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
    /// The data as it came over the wire: after DATA dot-stuffed, without the final dot line;
    /// in BDAT chunks, joined.
    pub wire: Vec<u8>,
    /// True when it came over TLS.
    pub tls: bool,
    /// True when it came in BDAT chunks.
    pub chunked: bool,
}

impl Received {
    /// The message as a receiver stores it: dot-stuffing undone, line ends as received.
    pub fn data(&self) -> Vec<u8> {
        if self.chunked {
            return self.wire.clone();
        }
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

impl Shared {
    fn new(open: bool) -> Arc<Shared> {
        Arc::new(Shared {
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
        })
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

/// A self-signed certificate for `localhost` and 127.0.0.1, as a rustls server configuration.
pub fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    super::tls::self_signed(&["localhost", "127.0.0.1"])
}

/// A stored message as a receiver must store it, whether it went in DATA or in chunks: every
/// line end (CRLF, a bare CR, a bare LF) as CRLF, the last line ended.
pub fn crlf(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 64);
    let mut i = 0;
    while i < stored.len() {
        match stored[i] {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if stored[i] == b'\r' && stored.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}
