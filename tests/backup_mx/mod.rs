//! A backup MX for the end-to-end suites of queue-smtpd: its queue, configuration and log in a
//! temporary directory, the daemon on a free loopback port, raw SMTP sessions (from any
//! 127.0.0.0/8 address), swaks, and a sink standing in for the customer's site. Everything a
//! test starts is stopped when its handle is dropped.
#![allow(dead_code)] // each suite uses its own subset of these helpers

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound for anything the tests wait for; waits poll and end as soon as the thing happens.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

pub fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One test's queue, configuration and log.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    /// A site whose customer domains route to a closed loopback port: a queue run started by
    /// ETRN defers, and nothing is ever looked up in DNS.
    pub fn new(extra: &str) -> Site {
        Site::routed(extra, free_port())
    }

    /// `extra` is added to the configuration's top-level keys; both customer domains route to
    /// `[127.0.0.1]:route_port`.
    pub fn routed(extra: &str, route_port: u16) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let config = format!(
            "queue_dir = \"{root}/queue\"\n\
             hostnames = [\"mx2.isp.test\"]\n\
             relay_domains = [\"customer.test\"]\n\
             hold_domains = [\"customer.test\", \"held.test\"]\n\
             log = \"{root}/mail.log\"\n\
             {extra}\n\
             [routes]\n\
             \"customer.test\" = \"[127.0.0.1]:{route_port}\"\n\
             \"held.test\" = \"[127.0.0.1]:{route_port}\"\n"
        );
        std::fs::write(dir.path().join("etrnq.toml"), config).expect("write config");
        Site { dir }
    }

    /// A site whose configuration is `text` after its own queue directory and log.
    pub fn configured(text: &str) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().display().to_string();
        let config = format!(
            "queue_dir = \"{root}/queue\"\n\
             log = \"{root}/mail.log\"\n\
             {text}\n"
        );
        std::fs::write(dir.path().join("etrnq.toml"), config).expect("write config");
        Site { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("etrnq.toml")
    }

    pub fn queue(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mail.log")).unwrap_or_default()
    }

    /// Queue ids from `mailq --json`.
    pub fn queued_ids(&self) -> Vec<String> {
        let output = Command::new(bin("mailq"))
            .arg("-C")
            .arg(self.config())
            .arg("--json")
            .output()
            .expect("run mailq");
        assert!(output.status.success(), "mailq: {output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                value["queue_id"].as_str().expect("queue_id").to_string()
            })
            .collect()
    }

    /// The queued message data files' contents.
    pub fn queued_data(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.queue().join("data")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("data file"))
            .collect()
    }

    /// Files anywhere in the queue directory: nothing partial may be left behind.
    pub fn queue_files(&self) -> usize {
        ["tmp", "data", "env"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.queue().join(sub)).ok())
            .map(|entries| entries.count())
            .sum()
    }

    /// Queues one message with queue-enqueue, as local mail arrives.
    pub fn enqueue(&self, to: &str, subject: &str) {
        let mut child = Command::new(bin("queue-enqueue"))
            .arg("-C")
            .arg(self.config())
            .args(["-f", "alice@example.test", to])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start queue-enqueue");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("Subject: {subject}\n\n{subject}\n").as_bytes())
            .expect("write message");
        drop(stdin);
        assert!(child.wait().expect("queue-enqueue").success());
    }

    pub fn start(&self, args: &[&str]) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Daemon::start(self, &["--listen", &listen], args, port)
    }
}

/// A running queue-smtpd; SIGTERM and a check of its exit status when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
}

impl Daemon {
    /// queue-smtpd listening on `ip` (of 127.0.0.0/8) alone.
    pub fn start_at(site: &Site, ip: Ipv4Addr, args: &[&str]) -> Daemon {
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("{ip}:{port}");
        Daemon::launch(
            site,
            &["--listen", &listen],
            args,
            SocketAddrV4::new(ip, port),
        )
    }

    pub fn start(site: &Site, listen: &[&str], args: &[&str], port: u16) -> Daemon {
        Daemon::launch(
            site,
            listen,
            args,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        )
    }

    fn launch(site: &Site, listen: &[&str], args: &[&str], probe: SocketAddrV4) -> Daemon {
        let port = probe.port();
        let child = Command::new(bin("queue-smtpd"))
            .arg("-C")
            .arg(site.config())
            .args(listen)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("start queue-smtpd");
        let mut daemon = Daemon {
            child: Some(child),
            port,
        };
        poll_until("queue-smtpd to listen", || {
            if let Some(child) = daemon.child.as_mut() {
                assert!(
                    child.try_wait().expect("child state").is_none(),
                    "queue-smtpd exited at start"
                );
            }
            TcpStream::connect(probe).is_ok()
        });
        daemon
    }

    pub fn session(&self) -> Session {
        Session::connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
    }

    /// A session from another loopback address (`127.0.0.x`), which the daemon counts as
    /// another client.
    pub fn session_from(&self, from: Ipv4Addr) -> Session {
        Session::from_stream(self.connect_from(from))
    }

    /// A bare connection from `from`.
    pub fn connect_from(&self, from: Ipv4Addr) -> TcpStream {
        connect_from(from, SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running daemon").id()
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running daemon");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("child state") {
                return status;
            }
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("queue-smtpd ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            if !std::thread::panicking() {
                assert!(status.success(), "queue-smtpd exit status {status}");
            }
        }
    }
}

/// A raw SMTP session.
pub struct Session {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8).
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .expect("bind");
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    TcpStream::from(fd)
}

impl Session {
    pub fn connect(addr: SocketAddr) -> Session {
        Session::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Session {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Session {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// One whole reply: its code and its lines joined with `\n`.
    pub fn reply(&mut self) -> (u16, String) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; got so far {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines[0][..3].parse().expect("reply code");
        (code, lines.join("\n"))
    }

    pub fn command(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn expect(&mut self, line: &str, code: u16) -> String {
        let (got, text) = self.command(line);
        assert_eq!(got, code, "{line} -> {text}");
        text
    }

    /// Greeting and EHLO.
    pub fn hello(&mut self) {
        assert_eq!(self.reply().0, 220);
        self.expect("EHLO client.test", 250);
    }

    /// MAIL, RCPT, DATA and the message; the final reply.
    pub fn message(&mut self, to: &str, body: &[u8]) -> (u16, String) {
        self.expect("MAIL FROM:<alice@example.test>", 250);
        self.expect(&format!("RCPT TO:<{to}>"), 250);
        self.expect("DATA", 354);
        self.send(body);
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

pub fn swaks(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port"])
        .arg(daemon.port.to_string())
        .args(["--from", "alice@example.test", "--helo", "client.test"])
        .args(args)
        .output()
        .expect("swaks (Debian package swaks) must be installed")
}

/// A stand-in for the customer's own SMTP server: accepts everything and keeps each message.
pub struct Sink {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Holds every session before its greeting until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open {
            open = match self.opened.wait(open) {
                Ok(open) => open,
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

impl Sink {
    /// `pause`: how long to wait before the greeting, to keep a delivery going for a while.
    pub fn start(pause: Duration) -> Sink {
        let sink = Sink::gated(pause);
        sink.open();
        sink
    }

    /// A sink whose sessions wait before their greeting until [`Sink::open`] (and then `pause`):
    /// a delivery that has connected is going until the test lets it go on.
    pub fn gated(pause: Duration) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (messages, connections, gate, stop) = (
                messages.clone(),
                connections.clone(),
                gate.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            let (messages, gate) = (messages.clone(), gate.clone());
                            std::thread::spawn(move || {
                                gate.wait();
                                sink_session(stream, pause, &messages)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Sink {
            port,
            messages,
            connections,
            gate,
            stop,
            thread: Some(thread),
        }
    }

    /// Lets the sessions that wait, and every later one, go on.
    pub fn open(&self) {
        self.gate.open();
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.gate.open();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sink_session(stream: TcpStream, pause: Duration, messages: &Mutex<Vec<String>>) {
    std::thread::sleep(pause);
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut say = |text: &str| writer.write_all(format!("{text}\r\n").as_bytes()).is_ok();
    if !say("220 site.customer.test ESMTP sink") {
        return;
    }
    let mut envelope = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" => say("250-site.customer.test\r\n250-PIPELINING\r\n250 8BITMIME"),
            "MAIL" | "RCPT" => {
                envelope.push(line.trim_end().to_string());
                say("250 2.0.0 Ok")
            }
            "DATA" => {
                let mut data = envelope.join("\n");
                envelope.clear();
                data.push_str("\n\n");
                let _ = say("354 go ahead");
                loop {
                    let mut text = String::new();
                    if reader.read_line(&mut text).unwrap_or(0) == 0 {
                        return;
                    }
                    if text == ".\r\n" {
                        break;
                    }
                    data.push_str(&text);
                }
                messages.lock().expect("messages").push(data);
                say("250 2.0.0 Ok: kept")
            }
            "QUIT" => {
                let _ = say("221 2.0.0 Bye");
                return;
            }
            _ => say("250 2.0.0 Ok"),
        };
        if !ok {
            return;
        }
    }
}

/// Queues `count` messages to `to` over one session.
pub fn queue_over_smtp(daemon: &Daemon, to: &str, count: usize) {
    let mut s = daemon.session();
    s.hello();
    for i in 0..count {
        let body = format!("Subject: held {i}\r\n\r\nheld message {i}");
        let (code, text) = s.message(to, body.as_bytes());
        assert_eq!(code, 250, "{text}");
    }
    s.expect("QUIT", 221);
}
