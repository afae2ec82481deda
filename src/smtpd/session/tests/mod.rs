//! The session driven over in-memory connections (and, for STARTTLS, a loopback socket): every
//! phase, every refusal by phase, pipelining and ETRN, with the queue each leaves behind.
//!
//! The connection is the only part replaced: the queue, the log and the configuration are real
//! files in a temporary directory, and an ETRN run starts `/bin/true` as its queue-run.

mod bdat;
mod conversation;
mod refusals;
mod starttls;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::address::Domain;
use crate::config::{Config, LogTarget};
use crate::maillog::MailLog;
use crate::smtpd::{Client, Limits, RunCommand, Server};

use super::super::wire::Channel;
use super::run;

const CLIENT: &str = "192.0.2.7:4711";
const GREETING: &str = "220 mx.example.test ESMTP etrnq";

/// The client's bytes, arriving in the reads given: a read never joins two of them, so what
/// one holds is what a pipelining client sent at once.
struct Script(VecDeque<Vec<u8>>);

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(front) = self.0.front_mut() else {
            return Ok(0);
        };
        let n = front.len().min(buf.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.drain(..n);
        if front.is_empty() {
            self.0.pop_front();
        }
        Ok(n)
    }
}

/// What the server sent, one entry for each write that reached the connection.
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<String>>>);

impl Write for Sent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8(buf.to_vec()).unwrap();
        self.0.lock().unwrap().push(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

/// A server for `customer.example` (relayed) and `held.example` (held), logging to a file.
fn fixture(limits: impl FnOnce(&mut Limits), configure: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        queue_dir: dir.path().join("queue"),
        hostnames: vec![domain("mx.example.test")],
        relay_domains: vec![domain("customer.example")].into(),
        hold_domains: vec![domain("held.example")].into(),
        min_free: Some(0),
        log: LogTarget::File(dir.path().join("log")),
        ..Config::default()
    };
    configure(&mut config);
    let mut server_limits = Limits::new(&config);
    limits(&mut server_limits);
    let log = Arc::new(MailLog::open(&config.log, "queue-smtpd"));
    let run = RunCommand {
        program: PathBuf::from("/bin/true"),
        config: None,
        queue_dir: config.queue_dir.clone(),
        hand_off: None,
    };
    let server = Server::new(config, server_limits, run, log).unwrap();
    Fixture { dir, server }
}

fn plain() -> Fixture {
    fixture(|_| {}, |_| {})
}

impl Fixture {
    /// Runs a session to its end over an in-memory connection; what the server sent, one
    /// entry per write.
    fn session(&self, reads: &[&str]) -> Vec<String> {
        let script = Script(reads.iter().map(|r| r.as_bytes().to_vec()).collect());
        let sent = Sent::default();
        let channel = Channel::new(Box::new(script), Box::new(sent.clone()), None);
        let client: SocketAddr = CLIENT.parse().unwrap();
        run(&self.server, channel, Client::Tcp(client));
        self.server.wait_for_runs();
        sent.0.lock().unwrap().clone()
    }

    /// The replies of a session whose commands each come in a read of their own.
    fn replies(&self, commands: &[&str]) -> Vec<String> {
        let reads: Vec<String> = commands.iter().map(|c| format!("{c}\r\n")).collect();
        let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
        replies(&self.session(&reads).concat())
    }

    /// The messages in the queue, by their envelope files.
    fn queued(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("queue/env"))
            .unwrap()
            .count()
    }

    /// The one message queued, as written to its data file.
    fn message(&self) -> String {
        let mut files = std::fs::read_dir(self.dir.path().join("queue/data")).unwrap();
        let file = files.next().unwrap().unwrap();
        assert!(files.next().is_none());
        std::fs::read_to_string(file.path()).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// Output cut into whole replies, the lines of each joined by `\n` without their CRLF.
fn replies(output: &str) -> Vec<String> {
    let mut replies = Vec::new();
    let mut lines = Vec::new();
    for line in output.split_terminator("\r\n") {
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        lines.push(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push(lines.join("\n"));
            lines.clear();
        }
    }
    assert!(lines.is_empty(), "a reply cut short: {lines:?}");
    replies
}

/// The EHLO reply to `client.example` from `literal`.
fn ehlo_reply(literal: &str, starttls: bool) -> String {
    let tail = if starttls {
        "250-ETRN\n250 STARTTLS"
    } else {
        "250 ETRN"
    };
    format!(
        "250-mx.example.test Hello client.example {literal}\n250-PIPELINING\n250-SIZE 52428800\n\
         250-8BITMIME\n250-CHUNKING\n250-ENHANCEDSTATUSCODES\n{tail}"
    )
}
