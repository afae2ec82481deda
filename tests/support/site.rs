//! One mail site for an end-to-end test: its own queue directory, configuration file and log
//! file in a temporary directory, and the programs run against them. Nothing outside the
//! temporary directory is read or written: every program gets `-C` with the site's file, and
//! `ETRNQ_CONFIG` / `ETRNQ_QUEUE_DIR` from the caller's environment are removed.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// Long enough for a debug build flushing a thousand messages on a busy machine; a bound, not
/// a measurement.
pub const LIMIT: Duration = Duration::from_secs(240);

/// This host's name in every test configuration, so HELO and bounces never use the machine's.
pub const HOSTNAME: &str = "mx2.isp.test";

pub struct Site {
    pub dir: TempDir,
}

/// What a program did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Site {
    /// A site whose configuration is the queue, the log file, this host's name and `extra`.
    pub fn new(extra: &str) -> Site {
        Site::named(HOSTNAME, extra)
    }

    /// A site whose host calls itself `hostname`.
    pub fn named(hostname: &str, extra: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        site.configure(hostname, extra);
        site
    }

    /// Writes the configuration (queue and log stay where they are).
    pub fn configure(&self, hostname: &str, extra: &str) {
        let text = format!(
            "queue_dir = {:?}\nlog = {:?}\nhostnames = [{hostname:?}]\n{extra}\n",
            self.queue_dir().display().to_string(),
            self.log_path().display().to_string(),
        );
        std::fs::write(self.config_path(), text).expect("write config");
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("etrnq.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mail.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::cargo_bin(program).unwrap_or_else(|e| panic!("{program}: {e}"));
        cmd.arg("-C")
            .arg(self.config_path())
            .env_remove("ETRNQ_CONFIG")
            .env_remove("ETRNQ_QUEUE_DIR")
            .timeout(LIMIT);
        cmd
    }

    /// Queues `message` with queue-enqueue and `args`; returns its queue id.
    pub fn enqueue(&self, args: &[&str], message: &[u8]) -> String {
        let output = self
            .command("queue-enqueue")
            .arg("-v")
            .args(args)
            .write_stdin(message.to_vec())
            .output()
            .expect("queue-enqueue runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "queue-enqueue {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .trim()
            .strip_prefix("queued as ")
            .unwrap_or_else(|| panic!("no queue id in {stdout:?}"))
            .to_string()
    }

    /// Runs queue-run with `args`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let output = self
            .command("queue-run")
            .args(args)
            .output()
            .expect("queue-run runs");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `mailq --json`: one object per queued message.
    pub fn mailq(&self) -> Vec<Value> {
        let output = self
            .command("mailq")
            .arg("--json")
            .output()
            .expect("mailq runs");
        assert!(
            output.status.success(),
            "mailq: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    /// The message in the queue with this id, from `mailq --json`.
    pub fn entry(&self, id: &str) -> Option<Value> {
        self.mailq()
            .into_iter()
            .find(|m| m["queue_id"].as_str() == Some(id))
    }

    /// Ids of the messages queued now (active envelopes).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.queue_dir().join("env"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The stored message bytes of `id`.
    pub fn data(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.queue_dir().join("data").join(id)).expect("message data")
    }

    pub fn envelope_path(&self, id: &str) -> PathBuf {
        self.queue_dir().join("env").join(id)
    }

    /// Moves a message's arrival `seconds` into the past, as if it had waited that long.
    pub fn age(&self, id: &str, seconds: i64) {
        let path = self.envelope_path(id);
        let text = std::fs::read_to_string(&path).expect("envelope");
        let aged: Vec<String> = text
            .lines()
            .map(|line| match line.strip_prefix("arrival\t") {
                Some(epoch) => {
                    let epoch: i64 = epoch.parse().expect("arrival is a number");
                    format!("arrival\t{}", epoch - seconds)
                }
                None => line.to_string(),
            })
            .collect();
        std::fs::write(&path, aged.join("\n") + "\n").expect("rewrite envelope");
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// CRLF line ends as LF, for comparing what was stored with what went over the wire.
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// True when running as root (binding port 25 needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The files in `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}
