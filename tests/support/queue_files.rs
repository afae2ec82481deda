//! The queue's files as the end-to-end suites read and write them: envelope files by the format
//! documented in `src/queue/envelope.rs`, written and parsed here independently of the library
//! so that the tests check the format itself, and a site's queue looked at file by file.
//!
//! A file that is not in the documented format fails the test with the record that is wrong.

use std::fs;

use super::site::Site;

impl Site {
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
        let envelope = fs::read_to_string(self.envelope_path(id)).expect("envelope");
        Message {
            id: id.to_string(),
            envelope: Envelope::parse(&envelope),
            data: self.data(id),
        }
    }

    /// Writes a message by hand, as a queue run would have left it: `data/ID`, then `env/ID`
    /// in the documented envelope format. The layout is created by a listing first.
    pub fn plant(&self, envelope: &Envelope, data: &[u8]) {
        self.mailq();
        let queue = self.queue_dir();
        fs::write(queue.join("data").join(&envelope.id), data).expect("data");
        fs::write(queue.join("env").join(&envelope.id), envelope.render()).expect("env");
    }
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
    pub warned: Option<i64>,
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
            warned: None,
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
                "warned" => env.warned = Some(value.parse().expect("warned")),
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
        if let Some(warned) = self.warned {
            out.push_str(&format!("warned\t{warned}\n"));
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
