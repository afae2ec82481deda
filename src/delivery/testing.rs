//! What the unit tests of delivery share: a queue in a temporary directory, its log, a policy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::address::Domain;
use crate::config::{Config, LogTarget};
use crate::maillog::MailLog;
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{LockAttempt, Queue, QueueId};
use crate::smtp::{TlsClient, Verification};

use super::RunOptions;
use super::policy::Policy;

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) queue: Queue,
    pub(super) log: MailLog,
}

pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(&dir.path().join("q")).unwrap();
    let log = MailLog::open(&LogTarget::File(dir.path().join("log")), "queue-run");
    Fixture { dir, queue, log }
}

impl Fixture {
    pub(super) fn commit(&self, recipients: &[&str], arrival: i64) -> QueueId {
        let mut draft = self.queue.draft().unwrap();
        draft.write_all(b"Subject: s\n\nbody\n").unwrap();
        let envelope = Envelope {
            id: draft.id(),
            arrival,
            size: 17,
            sender: "frank@sender.test".into(),
            notify: None,
            ret: None,
            envid: None,
            warned: None,
            recipients: recipients
                .iter()
                .map(|r| Recipient::new(r.to_string()))
                .collect(),
        };
        draft.commit(&envelope).unwrap()
    }

    pub(super) fn envelope(&self, id: QueueId) -> Option<Envelope> {
        match self.queue.try_lock(id).unwrap() {
            LockAttempt::Locked(locked) => Some(locked.envelope().clone()),
            _ => None,
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub(super) fn tmp(&self) -> PathBuf {
        self.queue.root().join("tmp")
    }
}

pub(super) fn policy<'a>(config: &'a Config, options: &'a RunOptions, now: i64) -> Policy<'a> {
    Policy {
        config,
        options,
        now,
        here: Domain::parse("mx2.isp.test").unwrap(),
        tls: TlsClient::new(Verification::Insecure),
        alone: Mutex::default(),
    }
}

/// An envelope that is never queued, for the decisions made from one.
pub(super) fn envelope(sender: &str, recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
        arrival: 1_000,
        size: 17,
        sender: sender.into(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients,
    }
}

pub(super) fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
