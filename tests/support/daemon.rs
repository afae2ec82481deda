//! queue-smtpd for the end-to-end suites, and the clients that talk to it.
//!
//! The daemon runs on a free loopback port (or one address of 127.0.0.0/8 alone); the clients
//! are raw SMTP sessions from any 127.0.0.0/8 address, and swaks.
//!
//! Every daemon a test starts gets SIGTERM when its handle is dropped, and must then exit 0
//! (unless the test is already failing). Waits poll and end as soon as the awaited thing
//! happens; [`PATIENCE`] bounds them, so a hung daemon fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::site::Site;

/// Upper bound for anything the tests wait for; waits poll and end as soon as the thing happens.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A port nobody listens on right now on any of `ips` (of 127.0.0.0/8), for servers that must
/// share one port, as backup MX hosts reached with one `-p`.
pub fn port_free_on(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let port = first.local_addr().expect("local address").port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

pub fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` to end and returns its output; after [`PATIENCE`] it is killed and the
/// test fails, naming it as `what`.
pub fn bounded(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("child state").is_none() {
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

impl Site {
    /// queue-smtpd with `args`, listening on a free port of 127.0.0.1.
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
        Daemon::start_on(site, SocketAddrV4::new(ip, port_free_on(&[ip])), args)
    }

    /// queue-smtpd listening on `addr` (of 127.0.0.0/8) alone.
    pub fn start_on(site: &Site, addr: SocketAddrV4, args: &[&str]) -> Daemon {
        Daemon::launch(site, &["--listen", &addr.to_string()], args, addr)
    }

    pub fn start(site: &Site, listen: &[&str], args: &[&str], port: u16) -> Daemon {
        Daemon::launch(
            site,
            listen,
            args,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        )
    }

    /// `command`, a queue-smtpd the test has set up, listening on a free port of 127.0.0.1;
    /// its standard error is kept for [`Daemon::finish`].
    pub fn listening(mut command: Command) -> Daemon {
        let port = free_port();
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon::spawn(command, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    fn launch(site: &Site, listen: &[&str], args: &[&str], probe: SocketAddrV4) -> Daemon {
        let mut command = site.std_command("queue-smtpd");
        command.args(listen).args(args).stdin(Stdio::null());
        Daemon::spawn(command, probe)
    }

    /// Starts `command` and waits until `probe` takes connections.
    fn spawn(mut command: Command, probe: SocketAddrV4) -> Daemon {
        let child = command.spawn().expect("start queue-smtpd");
        let mut daemon = Daemon {
            child: Some(child),
            port: probe.port(),
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
        self.finish().status
    }

    /// Sends SIGTERM and returns how the daemon ended, with what it wrote where that was kept.
    pub fn finish(&mut self) -> Output {
        let child = self.child.take().expect("running daemon");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        bounded(child, "queue-smtpd after SIGTERM")
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
