//! The listening half of the scripted server: it accepts connections, gives each its script
//! and a thread, and answers the test's questions about what was seen.

use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::session::Session;
use super::{Received, Script, Shared};
use crate::support::tls::Stream;

const LIFETIME: Duration = Duration::from_secs(300);

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
        let shared = Shared::new(open);
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

    /// The scripted session on a connection that is open already, as an ODMR customer serves
    /// its provider after ATRN: one session, counted as connection 0.
    pub fn over(stream: TcpStream, script: Script) -> Server {
        let addr = stream.local_addr().expect("local address");
        let shared = Shared::new(true);
        shared.connections.store(1, Ordering::SeqCst);
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || session(stream, 0, &script, &shared))
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
            session(stream, n, &script, &shared)
        }));
    }
    shared.stop.store(true, Ordering::SeqCst);
    for session in sessions {
        let _ = session.join();
    }
}

/// Serves one connection with `script`, and counts it over when it ends.
fn session(stream: std::net::TcpStream, n: usize, script: &Script, shared: &Shared) {
    let tcp = stream.try_clone().ok();
    shared.gate.wait(&shared.stop);
    let mut session = Session {
        stream: Stream::Plain(stream),
        buffer: Vec::new(),
        shared,
        connection: n,
        trickling: None,
        tls: false,
    };
    let _ = session.serve(script);
    if let Some(tcp) = tcp {
        let _ = tcp.shutdown(Shutdown::Both);
    }
    shared.ended.fetch_add(1, Ordering::SeqCst);
}
