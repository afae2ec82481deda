//! Scripted SMTP servers on loopback addresses for `mx-check --probe`. Each behaves one way
//! (accepts, refuses relaying, offers STARTTLS with a self-signed certificate, never answers),
//! records the commands it received, and stops when dropped. Every connection ends within a few
//! seconds on its own, so a misbehaving client cannot hold a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// ETRN, SIZE, PIPELINING, 8BITMIME; accepts postmaster and user, and no one else.
    Accept,
    /// A backup MX that was never told about the domain: 554 Relay access denied.
    DenyRelay,
    /// Offers STARTTLS with a self-signed certificate for `tls.probe.example`.
    StartTls,
    /// Accepts the connection and never says a word.
    Silent,
}

const LIFETIME: Duration = Duration::from_secs(15);

pub struct SmtpServer {
    /// Commands received, in order, over all connections.
    pub commands: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SmtpServer {
    fn start(listener: TcpListener, behaviour: Behaviour) -> SmtpServer {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let commands = commands.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut sessions = Vec::new();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let commands = commands.clone();
                            let stop = stop.clone();
                            sessions.push(std::thread::spawn(move || {
                                serve(stream, behaviour, &commands, &stop)
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                stop.store(true, Ordering::Relaxed);
                for session in sessions {
                    let _ = session.join();
                }
            })
        };
        SmtpServer {
            commands,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts one server per `(address, behaviour)`, all on one port, and returns the port.
pub fn start_all(servers: &[(IpAddr, Behaviour)]) -> (u16, Vec<SmtpServer>) {
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
                .map(|(listener, (_, behaviour))| SmtpServer::start(listener, *behaviour))
                .collect();
            return (port, started);
        }
    }
    panic!("no port free on all of {servers:?}");
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    commands: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let started = Instant::now();
    if behaviour == Behaviour::Silent {
        let mut sink = [0u8; 512];
        let mut stream = stream;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
            if let Ok(0) = stream.read(&mut sink) {
                break;
            }
        }
        return;
    }
    let tcp = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(Box::new(stream) as Box<dyn Stream>);
    let name = match behaviour {
        Behaviour::Accept => "accept.probe.example",
        Behaviour::DenyRelay => "deny.probe.example",
        _ => "tls.probe.example",
    };
    let mut tls_active = false;
    if write!(reader.get_mut(), "220 {name} ESMTP test server\r\n").is_err() {
        return;
    }
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
        // A time-out may leave half a line in `line`; the rest follows on the next read.
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
        if !line.ends_with('\n') {
            continue;
        }
        let command = line.trim_end().to_string();
        line.clear();
        if let Ok(mut log) = commands.lock() {
            log.push(command.clone());
        }
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => ehlo(name, behaviour, tls_active),
            "HELO" => format!("250 {name}\r\n"),
            "STARTTLS" if behaviour == Behaviour::StartTls && !tls_active => {
                if reader
                    .get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .is_err()
                {
                    break;
                }
                let Ok(tls) = tcp.try_clone() else { break };
                let Ok(connection) =
                    rustls::ServerConnection::new(super::tls::self_signed(&["tls.probe.example"]))
                else {
                    break;
                };
                reader = BufReader::new(Box::new(rustls::StreamOwned::new(connection, tls)));
                tls_active = true;
                continue;
            }
            "MAIL" => "250 2.1.0 Ok\r\n".to_string(),
            "RCPT" if behaviour == Behaviour::DenyRelay => {
                "554 5.7.1 Relay access denied\r\n".to_string()
            }
            // A site that knows its users, as a backup MX should.
            "RCPT"
                if !["<postmaster@", "<user@"]
                    .iter()
                    .any(|u| command.contains(u)) =>
            {
                "550 5.1.1 User unknown\r\n".to_string()
            }
            "RCPT" => "250 2.1.5 Ok\r\n".to_string(),
            "RSET" => "250 2.0.0 Ok\r\n".to_string(),
            "DATA" => "554 5.5.1 This test server takes no DATA\r\n".to_string(),
            "QUIT" => {
                let _ = reader.get_mut().write_all(b"221 2.0.0 Bye\r\n");
                break;
            }
            _ => "502 5.5.2 Command not recognised\r\n".to_string(),
        };
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            break;
        }
        let _ = reader.get_mut().flush();
    }
    let _ = tcp.shutdown(Shutdown::Both);
}

fn ehlo(name: &str, behaviour: Behaviour, tls_active: bool) -> String {
    let mut lines = vec![
        name.to_string(),
        "PIPELINING".into(),
        "SIZE 10240000".into(),
    ];
    match behaviour {
        Behaviour::Accept => lines.push("ETRN".into()),
        Behaviour::StartTls if !tls_active => lines.push("STARTTLS".into()),
        _ => {}
    }
    lines.push("8BITMIME".into());
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, text)| format!("250{}{text}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}
