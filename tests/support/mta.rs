//! A receiving SMTP server for queue-run's tests: it takes whole messages (MAIL, RCPT, DATA,
//! PIPELINING, STARTTLS), answers each recipient as the test's rules say (rules may change
//! between runs), and records every message it accepted with its envelope and the data as it
//! arrived, dot-stuffing undone. One thread per connection, so parallel clients are served at
//! once. It stops when dropped, and after a few minutes whatever happens to the test.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use super::tls::Stream;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LIFETIME: Duration = Duration::from_secs(300);
const IDLE: Duration = Duration::from_secs(30);

/// One message the server accepted (its reply to the end of data was 250).
#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL FROM argument, `<a@b.test>` and any parameters.
    pub mail: String,
    /// The recipients it accepted, as `a@b.test`.
    pub recipients: Vec<String>,
    /// The message with CRLF line ends, dot-stuffing removed.
    pub data: Vec<u8>,
    /// True when it came over TLS.
    pub tls: bool,
}

impl Received {
    /// The value of the first header field `name`, unfolded no further than its first line.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let prefix = format!("{}:", name.to_ascii_lowercase());
        text.split("\r\n")
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_string())
    }
}

/// How the server is set up before it starts.
#[derive(Clone)]
pub struct Setup {
    /// EHLO keywords after the greeting line (STARTTLS is added when `tls` is set).
    pub keywords: Vec<String>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long to wait after the end of each message before answering it.
    pub per_message: Duration,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            keywords: [
                "PIPELINING",
                "SIZE 10240000",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
            ]
            .map(String::from)
            .to_vec(),
            tls: None,
            per_message: Duration::ZERO,
        }
    }
}

impl Setup {
    pub fn keywords(mut self, keywords: &[&str]) -> Setup {
        self.keywords = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    pub fn tls(mut self) -> Setup {
        self.tls = Some(super::tls::self_signed(&["sink.test"]));
        self
    }

    pub fn per_message(mut self, wait: Duration) -> Setup {
        self.per_message = wait;
        self
    }

    /// Starts on 127.0.0.1, a port of the system's choosing.
    pub fn start(self) -> Mta {
        self.start_on("127.0.0.1:0".parse().expect("address"))
            .expect("bind 127.0.0.1")
    }

    /// Starts on `addr` (port 25 of a loopback address needs root).
    pub fn start_on(self, addr: SocketAddr) -> std::io::Result<Mta> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            setup: self,
            rules: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
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
                            // Replies go out as they are written: with Nagle's algorithm each
                            // one after the first of a pipelined group waits for the client's
                            // delayed acknowledgement, some 40 ms per message.
                            let _ = stream.set_nodelay(true);
                            shared.connections.fetch_add(1, Ordering::SeqCst);
                            let shared = shared.clone();
                            sessions.push(std::thread::spawn(move || {
                                let tcp = stream.try_clone().ok();
                                let mut session = Session {
                                    stream: Stream::Plain(stream),
                                    buffer: Vec::new(),
                                    shared: &shared,
                                };
                                let _ = session.serve();
                                if let Some(tcp) = tcp {
                                    let _ = tcp.shutdown(Shutdown::Both);
                                }
                                shared.ended.fetch_add(1, Ordering::SeqCst);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                shared.stop.store(true, Ordering::SeqCst);
                for session in sessions {
                    let _ = session.join();
                }
            })
        };
        Ok(Mta {
            addr,
            shared,
            thread: Some(thread),
        })
    }
}

struct Shared {
    setup: Setup,
    /// (local-part prefix, reply): the first rule whose prefix starts a recipient's local part
    /// decides its reply; otherwise 250.
    rules: Mutex<Vec<(String, String)>>,
    messages: Mutex<Vec<Received>>,
    commands: Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// Sessions that are over, every message of theirs recorded.
    ended: AtomicUsize,
    stop: AtomicBool,
}

/// A running server.
pub struct Mta {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Mta {
    /// Recipients whose local part starts with `prefix` get `reply` to RCPT.
    pub fn rule(&self, prefix: &str, reply: &str) {
        self.shared
            .rules
            .lock()
            .expect("rules")
            .push((prefix.to_string(), reply.to_string()));
    }

    /// Every recipient accepted from now on.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().expect("messages").clone()
    }

    pub fn message_count(&self) -> usize {
        self.shared.messages.lock().expect("messages").len()
    }

    /// Every command line received, in order over all connections (message data excluded).
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().expect("commands").clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Sessions accepted and not yet over: while there are any, a message may still be recorded.
    pub fn open_sessions(&self) -> usize {
        self.connections() - self.shared.ended.load(Ordering::SeqCst)
    }

    /// `[127.0.0.1]:PORT`, a static route to this server.
    pub fn route(&self) -> String {
        format!("[{}]:{}", self.addr.ip(), self.addr.port())
    }
}

impl Drop for Mta {
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
}

impl Session<'_> {
    fn serve(&mut self) -> Option<()> {
        if let Stream::Plain(tcp) = &self.stream {
            tcp.set_read_timeout(Some(Duration::from_millis(100)))
                .ok()?;
        }
        self.reply("220 sink.test ESMTP recording server")?;
        let setup = &self.shared.setup;
        let mut tls = false;
        let mut mail: Option<String> = None;
        let mut recipients: Vec<String> = Vec::new();
        loop {
            let line = String::from_utf8_lossy(&self.read_line()?).into_owned();
            self.shared.commands.lock().ok()?.push(line.clone());
            let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    let mut lines = vec!["250-sink.test".to_string()];
                    lines.extend(setup.keywords.iter().map(|k| format!("250-{k}")));
                    if setup.tls.is_some() && !tls {
                        lines.push("250-STARTTLS".to_string());
                    }
                    lines.push("250 HELP".to_string());
                    self.reply(&lines.join("\r\n"))?;
                }
                "HELO" => self.reply("250 sink.test")?,
                "STARTTLS" if setup.tls.is_some() && !tls => {
                    self.reply("220 2.0.0 Ready to start TLS")?;
                    let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone)
                    else {
                        return None;
                    };
                    let config = setup.tls.clone()?;
                    let conn = rustls::ServerConnection::new(config).ok()?;
                    self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                    self.buffer.clear();
                    tls = true;
                    mail = None;
                    recipients.clear();
                }
                "MAIL" => {
                    mail = Some(rest.trim_start_matches("FROM:").to_string());
                    recipients.clear();
                    self.reply("250 2.1.0 Ok")?;
                }
                "RCPT" if mail.is_none() => self.reply("503 5.5.1 Error: need MAIL command")?,
                "RCPT" => {
                    let address = rest
                        .trim_start_matches("TO:")
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_matches(['<', '>'])
                        .to_string();
                    let local = address.split('@').next().unwrap_or_default().to_string();
                    let rule = self
                        .shared
                        .rules
                        .lock()
                        .ok()?
                        .iter()
                        .find(|(prefix, _)| local.starts_with(prefix.as_str()))
                        .map(|(_, reply)| reply.clone());
                    match rule {
                        Some(reply) => self.reply(&reply)?,
                        None => {
                            recipients.push(address);
                            self.reply("250 2.1.5 Ok")?;
                        }
                    }
                }
                "DATA" if mail.is_none() || recipients.is_empty() => {
                    self.reply("554 5.5.1 Error: no valid recipients")?
                }
                "DATA" => {
                    self.reply("354 End data with <CR><LF>.<CR><LF>")?;
                    let data = self.read_data()?;
                    std::thread::sleep(setup.per_message);
                    let received = Received {
                        mail: mail.take().unwrap_or_default(),
                        recipients: std::mem::take(&mut recipients),
                        data,
                        tls,
                    };
                    // Recorded before the reply: a client killed after this point may send the
                    // message again, which is what "at least once" allows.
                    let count = {
                        let mut messages = self.shared.messages.lock().ok()?;
                        messages.push(received);
                        messages.len()
                    };
                    self.reply(&format!("250 2.0.0 Ok: queued as M{count}"))?;
                }
                "RSET" => {
                    mail = None;
                    recipients.clear();
                    self.reply("250 2.0.0 Ok")?;
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

    /// The message after DATA, up to the lone dot; `None` if the connection ends first.
    fn read_data(&mut self) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let line = self.read_line()?;
            if line == b"." {
                return Some(data);
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
    }

    fn reply(&mut self, text: &str) -> Option<()> {
        self.stream.write_all(text.as_bytes()).ok()?;
        self.stream.write_all(b"\r\n").ok()?;
        self.stream.flush().ok()
    }

    /// The next line without its CRLF; `None` at the end of the connection, when the server
    /// stops, or after a long silence.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut idle = Instant::now();
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
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
