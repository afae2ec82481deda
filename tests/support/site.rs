//! The one sandbox of the end-to-end suites: a mail site in a temporary directory (its queue
//! directory, configuration file and log file) and the programs run against it.
//!
//! Nothing outside the temporary directory is read or written: every program gets `-C` with the
//! site's file, which names the site's queue and log; `ETRNQ_CONFIG`, `ETRNQ_QUEUE_DIR` and
//! `ETRN_PASSWORD` from the caller's environment are removed, and `TZ` is UTC so dates are
//! predictable. The directory and all in it go when the site is dropped.
//!
//! Limits: a program that runs longer than [`LIMIT`] is killed and the test fails; the site does
//! not start servers (see `smtp` and `daemon`), it only names them in its configuration.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use super::daemon::free_port;

/// Long enough for a debug build flushing a thousand messages on a busy machine; a bound, not
/// a measurement.
pub const LIMIT: Duration = Duration::from_secs(240);

/// This host's name in every test configuration, so HELO, added headers and bounces never use
/// the machine's.
pub const HOSTNAME: &str = "mx2.isp.test";

/// The sender of the test messages, at a domain the tests route to their own servers.
pub const SENDER: &str = "frank@sender.test";

/// A small message with the headers a mail client writes; queue-enqueue adds the rest.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: Frank <{SENDER}>\nTo: site users\nSubject: {subject}\n\n{body}").into_bytes()
}

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
        Site::configured(&format!("hostnames = [{hostname:?}]\n{extra}"))
    }

    /// A site whose configuration is the queue, the log file and `text`.
    pub fn configured(text: &str) -> Site {
        let site = Site::with_text("");
        site.configure(text);
        site
    }

    /// A site whose configuration file holds exactly `text` (no queue, no log file).
    pub fn with_text(text: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::write(site.config_path(), text).expect("write config");
        site
    }

    /// A backup MX for customer.test and held.test (ETRN-released, both routed to a closed
    /// loopback port, so a queue run defers and nothing is looked up in DNS); `extra` is added
    /// to the top-level keys.
    pub fn relay(extra: &str) -> Site {
        Site::relay_to(extra, free_port())
    }

    /// As [`Site::relay`], both customer domains routed to `[127.0.0.1]:route_port`.
    pub fn relay_to(extra: &str, route_port: u16) -> Site {
        Site::new(&format!(
            "relay_domains = [\"customer.test\"]\n\
             hold_domains = [\"customer.test\", \"held.test\"]\n\
             {extra}\n\
             [routes]\n\
             \"customer.test\" = \"[127.0.0.1]:{route_port}\"\n\
             \"held.test\" = \"[127.0.0.1]:{route_port}\"\n"
        ))
    }

    /// Writes the configuration: the queue, the log file and `text`.
    pub fn configure(&self, text: &str) {
        let text = format!(
            "queue_dir = {:?}\nlog = {:?}\n{text}\n",
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

    /// Writes `contents` to `name` in the site's directory.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// `program` with this site's configuration, isolated from the environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::from_std(self.std_command(program));
        cmd.timeout(LIMIT);
        cmd
    }

    /// As [`Site::command`], for tests that manage the child process themselves.
    pub fn std_command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin(program));
        cmd.env_remove("ETRNQ_CONFIG")
            .env_remove("ETRNQ_QUEUE_DIR")
            .env_remove("ETRN_PASSWORD")
            .env("TZ", "UTC")
            .arg("-C")
            .arg(self.config_path());
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
        queued_id(&output)
    }

    /// Queues one short message from alice@example.test to `to`, as local mail arrives.
    pub fn submit(&self, to: &str, subject: &str) {
        let status = self
            .std_command("queue-enqueue")
            .args(["-f", "alice@example.test", to])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(format!("Subject: {subject}\n\n{subject}\n").as_bytes())?;
                drop(stdin);
                child.wait()
            })
            .expect("queue-enqueue");
        assert!(status.success());
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

    /// Queue ids from `mailq --json`.
    pub fn queued_ids(&self) -> Vec<String> {
        self.mailq()
            .iter()
            .map(|m| m["queue_id"].as_str().expect("queue_id").to_string())
            .collect()
    }

    /// The names in one queue subdirectory, sorted; empty when it does not exist.
    pub fn files(&self, sub: &str) -> Vec<String> {
        list(&self.queue_dir().join(sub))
    }

    /// Ids of the messages queued now (active envelopes), sorted.
    pub fn ids(&self) -> Vec<String> {
        self.files("env")
    }

    /// The stored message bytes of `id`.
    pub fn data(&self, id: &str) -> Vec<u8> {
        std::fs::read(self.queue_dir().join("data").join(id)).expect("message data")
    }

    /// The contents of every queued data file.
    pub fn queued_data(&self) -> Vec<String> {
        self.files("data")
            .iter()
            .map(|id| String::from_utf8(self.data(id)).expect("data file"))
            .collect()
    }

    /// Files anywhere in the queue's tmp/, data/ and env/: nothing partial may be left behind.
    pub fn queue_files(&self) -> usize {
        ["tmp", "data", "env"]
            .iter()
            .map(|sub| self.files(sub).len())
            .sum()
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

/// The path of one of the programs under test.
pub fn bin(program: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(program)
}

/// The queue id that `queue-enqueue -v` printed; the test fails if it did not queue.
pub fn queued_id(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "queue-enqueue: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .trim()
        .strip_prefix("queued as ")
        .unwrap_or_else(|| panic!("no queue id in {stdout:?}"))
        .to_string()
}

/// The names in `dir`, sorted; empty when it does not exist.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
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

/// Standard error as lines, for the "one line on stderr" promise.
pub fn stderr_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_string)
        .collect()
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

/// True when running as root (binding port 25 and changing owners need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
