//! A scripted SMTP server on 127.0.0.1 for end-to-end tests: it answers each command as its
//! [`Script`] says, records every line the client sent, and stops when dropped (or after a minute
//! at most, whatever happens to the test).

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

/// What the server does in one connection.
#[derive(Clone)]
pub struct Script {
    /// `None`: say nothing at all, as a server that hangs.
    pub greeting: Option<String>,
    pub ehlo: Ehlo,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User and password that AUTH accepts, and the mechanisms announced (PLAIN and LOGIN are
    /// understood).
    pub auth: Option<(String, String)>,
    pub auth_mechanisms: &'static str,
    /// Reply per ETRN argument (as sent); lines separated by `\n`.
    pub etrn: Vec<(String, String)>,
    pub etrn_default: String,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: Some("220 sink.test ESMTP scripted".to_string()),
            ehlo: Ehlo::Keywords(vec!["PIPELINING", "SIZE 10240000", "ETRN", "8BITMIME"]),
            tls: None,
            auth: None,
            auth_mechanisms: "PLAIN LOGIN",
            etrn: Vec::new(),
            etrn_default: "250 2.0.0 Queuing started".to_string(),
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

    pub fn auth(mut self, user: &str, password: &str, mechanisms: &'static str) -> Script {
        self.auth = Some((user.to_string(), password.to_string()));
        self.auth_mechanisms = mechanisms;
        self
    }
}

/// A running server. Connection `n` follows `scripts[n]`, the last script repeating.
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(script: Script) -> Server {
        Server::start_sequence(vec![script])
    }

    pub fn start_sequence(scripts: Vec<Script>) -> Server {
        assert!(!scripts.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let n = connections.fetch_add(1, Ordering::SeqCst);
                            let script = &scripts[n.min(scripts.len() - 1)];
                            let mut session = Session {
                                stream: Stream::Plain(stream),
                                buffer: Vec::new(),
                                seen: &seen,
                                stop: &stop,
                            };
                            let _ = session.serve(script);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Server {
            addr,
            seen,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every line the clients sent, in order; `-- TLS` marks a completed STARTTLS.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lines").clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Session<'a> {
    stream: Stream,
    buffer: Vec<u8>,
    seen: &'a Mutex<Vec<String>>,
    stop: &'a AtomicBool,
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
        self.reply(greeting)?;
        let mut in_tls = false;
        loop {
            let line = self.read_line()?;
            self.seen.lock().ok()?.push(line.clone());
            let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => match &script.ehlo {
                    Ehlo::Refuse(reply) => self.reply(reply)?,
                    Ehlo::Keywords(keywords) => {
                        let mut lines = vec!["250-sink.test".to_string()];
                        lines.extend(keywords.iter().map(|k| format!("250-{k}")));
                        if script.tls.is_some() && !in_tls {
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
                "STARTTLS" => match (&script.tls, in_tls) {
                    (Some(config), false) => {
                        self.reply("220 2.0.0 Ready to start TLS")?;
                        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone)
                        else {
                            return None;
                        };
                        let conn = rustls::ServerConnection::new(config.clone()).ok()?;
                        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                        self.buffer.clear();
                        in_tls = true;
                        self.seen.lock().ok()?.push("-- TLS".to_string());
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
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Some(());
                }
                _ => self.reply("502 5.5.2 Error: command not recognized")?,
            }
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

    fn reply(&mut self, text: &str) -> Option<()> {
        let mut wire = text.replace('\n', "\r\n");
        wire.push_str("\r\n");
        self.stream.write_all(wire.as_bytes()).ok()?;
        self.stream.flush().ok()
    }

    /// The next line without its CRLF; `None` at the end of the connection, when the test is
    /// over, or after a long silence.
    fn read_line(&mut self) -> Option<String> {
        let mut idle = Instant::now();
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                return Some(text.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.stop.load(Ordering::SeqCst) || idle.elapsed() > IDLE {
                return None;
            }
            let mut chunk = [0u8; 4096];
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
