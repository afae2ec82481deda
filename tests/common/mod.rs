//! What the end-to-end suites share: a private queue and configuration per test, the programs
//! started against them and nothing else, and readers for the queue files as documented in
//! `src/queue/mod.rs` and `src/queue/envelope.rs`.
#![allow(dead_code)] // each suite uses its own subset of these helpers

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// A temporary directory holding one queue and one configuration file. Everything a test writes
/// lives under it and disappears with it.
pub struct Sandbox {
    pub dir: TempDir,
    pub queue: PathBuf,
    pub config: PathBuf,
}

/// This host's name as the tests configure it, so added headers are predictable.
pub const HOSTNAME: &str = "mx.example.test";

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_config("")
    }

    /// A sandbox whose configuration file holds `extra` after the host name.
    pub fn with_config(extra: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("temporary directory");
        let queue = dir.path().join("queue");
        let config = dir.path().join("etrnq.toml");
        fs::write(&config, format!("hostnames = [\"{HOSTNAME}\"]\n{extra}")).expect("config");
        Sandbox { dir, queue, config }
    }

    /// `program` with this sandbox's configuration and queue, isolated from the environment.
    pub fn command(&self, program: &str) -> Command {
        Command::from_std(self.std_command(program))
    }

    /// As [`Sandbox::command`], for tests that manage the child process themselves.
    pub fn std_command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin(program));
        cmd.env_remove("ETRNQ_CONFIG")
            .env_remove("ETRNQ_QUEUE_DIR")
            .env("TZ", "UTC")
            .arg("-C")
            .arg(&self.config)
            .arg("--queue-dir")
            .arg(&self.queue);
        cmd
    }

    pub fn enqueue(&self) -> Command {
        self.command("queue-enqueue")
    }

    pub fn mailq(&self) -> Command {
        self.command("mailq")
    }

    /// The names in one queue subdirectory, sorted; empty when it does not exist.
    pub fn files(&self, sub: &str) -> Vec<String> {
        list(&self.queue.join(sub))
    }

    /// Queue ids of the active messages, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.files("env")
    }

    /// Asserts that no message, part of a message or leftover is in the queue.
    pub fn assert_untouched(&self) {
        for sub in ["env", "data", "tmp", "hold", "corrupt"] {
            assert_eq!(
                self.files(sub),
                Vec::<String>::new(),
                "files left in {sub}/"
            );
        }
    }

    /// The one message in the queue: its envelope and its data.
    pub fn only_message(&self) -> Message {
        let ids = self.ids();
        assert_eq!(ids.len(), 1, "expected exactly one message, found {ids:?}");
        self.message(&ids[0])
    }

    pub fn message(&self, id: &str) -> Message {
        let envelope = fs::read_to_string(self.queue.join("env").join(id)).expect("envelope");
        let data = fs::read(self.queue.join("data").join(id)).expect("data");
        Message {
            id: id.to_string(),
            envelope: Envelope::parse(&envelope),
            data,
        }
    }

    /// Writes a message by hand, as a queue run would have left it: `data/ID`, then `env/ID`
    /// in the documented envelope format. The layout is created by a listing first.
    pub fn plant(&self, envelope: &Envelope, data: &[u8]) {
        self.mailq().assert().success();
        fs::write(self.queue.join("data").join(&envelope.id), data).expect("data");
        fs::write(self.queue.join("env").join(&envelope.id), envelope.render()).expect("env");
    }
}

/// The path of one of the programs under test.
pub fn bin(program: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(program)
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

pub struct Message {
    pub id: String,
    pub envelope: Envelope,
    pub data: Vec<u8>,
}

impl Message {
    /// The stored header section (up to the first empty line), as text.
    pub fn header(&self) -> String {
        let text = String::from_utf8_lossy(&self.data);
        let end = text
            .find("\n\n")
            .or_else(|| text.find("\r\n\r\n"))
            .unwrap_or(text.len());
        text[..end].to_string()
    }

    /// The header lines that start a field named `name` (any case).
    pub fn fields(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.header()
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }
}

/// One recipient record of an envelope file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub status: String,
    pub attempts: u32,
    pub next_attempt: i64,
    pub address: String,
    pub reason: String,
}

impl Rcpt {
    pub fn pending(address: &str) -> Rcpt {
        Rcpt {
            status: "pending".into(),
            attempts: 0,
            next_attempt: 0,
            address: address.into(),
            reason: String::new(),
        }
    }

    pub fn deferred(address: &str, reason: &str) -> Rcpt {
        Rcpt {
            status: "deferred".into(),
            attempts: 2,
            next_attempt: 1_795_422_191,
            address: address.into(),
            reason: reason.into(),
        }
    }
}

/// An envelope file, read and written by the format documented in `src/queue/envelope.rs`, kept
/// independent of the library so the tests check the format itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub arrival: i64,
    pub size: u64,
    pub sender: String,
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub rcpts: Vec<Rcpt>,
}

impl Envelope {
    pub fn new(id: &str, arrival: i64, size: u64, sender: &str, rcpts: Vec<Rcpt>) -> Envelope {
        Envelope {
            id: id.into(),
            arrival,
            size,
            sender: sender.into(),
            notify: None,
            ret: None,
            envid: None,
            rcpts,
        }
    }

    pub fn parse(text: &str) -> Envelope {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("etrnq-envelope 1"), "magic line");
        assert!(text.ends_with("\nend\n"), "no end record: {text:?}");
        let mut env = Envelope::new("", 0, 0, "", Vec::new());
        for line in lines.take_while(|l| *l != "end") {
            let (key, value) = line.split_once('\t').expect("record with a TAB");
            match key {
                "id" => env.id = value.into(),
                "arrival" => env.arrival = value.parse().expect("arrival"),
                "size" => env.size = value.parse().expect("size"),
                "sender" => env.sender = value.into(),
                "notify" => env.notify = Some(value.into()),
                "ret" => env.ret = Some(value.into()),
                "envid" => env.envid = Some(value.into()),
                "rcpt" => {
                    let f: Vec<&str> = value.split('\t').collect();
                    assert_eq!(f.len(), 5, "rcpt fields in {line:?}");
                    env.rcpts.push(Rcpt {
                        status: f[0].into(),
                        attempts: f[1].parse().expect("attempts"),
                        next_attempt: f[2].parse().expect("next attempt"),
                        address: f[3].into(),
                        reason: f[4].into(),
                    });
                }
                other => panic!("unknown record {other:?}"),
            }
        }
        env
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "etrnq-envelope 1\nid\t{}\narrival\t{}\nsize\t{}\nsender\t{}\n",
            self.id, self.arrival, self.size, self.sender
        );
        for (key, value) in [
            ("notify", &self.notify),
            ("ret", &self.ret),
            ("envid", &self.envid),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("{key}\t{v}\n"));
            }
        }
        for r in &self.rcpts {
            out.push_str(&format!(
                "rcpt\t{}\t{}\t{}\t{}\t{}\n",
                r.status, r.attempts, r.next_attempt, r.address, r.reason
            ));
        }
        out.push_str("end\n");
        out
    }

    pub fn addresses(&self) -> Vec<&str> {
        self.rcpts.iter().map(|r| r.address.as_str()).collect()
    }
}

/// Standard error as lines, for the "one line on stderr" promise.
pub fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A small deterministic generator (xorshift), seeded by the caller so a failure can be rerun.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
