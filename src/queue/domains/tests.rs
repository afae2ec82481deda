//! The record as the queue uses it: commits, look-ups, damage of every kind, rebuilds racing
//! commits, compaction racing appends.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::stat::Mode;

use super::{COMPACT_MIN, DIR, LIST, MAX_FILE, UNKNOWN, boot_id, lookup, record};
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::selection::DomainPattern;
use crate::queue::{Draft as MessageDraft, LockAttempt, Place, Queue, QueueError, QueueId};

fn envelope(id: QueueId, recipients: &[&str]) -> Envelope {
    Envelope {
        id,
        arrival: 1_795_418_591,
        size: 2,
        sender: "alice@example.test".into(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients: recipients
            .iter()
            .map(|r| Recipient::new(r.to_string()))
            .collect(),
    }
}

pub(super) fn commit(queue: &Queue, recipients: &[&str]) -> QueueId {
    let mut draft: MessageDraft<'_> = queue.draft().unwrap();
    draft.write_all(b"x\n").unwrap();
    let id = draft.id();
    draft.commit(&envelope(id, recipients)).unwrap()
}

pub(super) fn pattern(text: &str) -> DomainPattern {
    DomainPattern::parse(text).unwrap()
}

/// The ids the record names for `text`, or why it is not believed.
pub(super) fn candidates(queue: &Queue, text: &str) -> Result<Vec<QueueId>, String> {
    lookup(queue, &[pattern(text)])
        .map(|found| found.ids)
        .map_err(|e| e.to_string())
}

/// Each file of the record, whether it names `id`, and its first two lines: what a failed
/// look-up leaves behind, for the failure message.
pub(super) fn record_state(queue: &Queue, id: QueueId) -> String {
    let mut state = String::new();
    let entries = std::fs::read_dir(queue.root.join(DIR));
    for entry in entries.into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let head: Vec<&str> = text.lines().take(2).collect();
        state += &format!(
            "{:?} names it: {}; begins {}\n",
            entry.file_name(),
            text.contains(id.as_str()),
            head.join(" | ")
        );
    }
    state
}

/// A per-domain pass for customer.test and its subdomains (which reads `.list` and the
/// domain's file), rebuilding the record when it cannot believe it.
pub(super) fn rebuild_now(queue: &Queue) {
    let scan = queue.scan_domains(&[pattern("@customer.test")]).unwrap();
    scan.for_each(scan.ids(), |_| -> Result<(), QueueError> { Ok(()) })
        .unwrap();
    if let Some((why, outcome)) = scan.record_rebuild() {
        assert!(
            matches!(outcome, Some(Ok(()))),
            "rebuild after: {why}: {outcome:?}"
        );
    }
}

pub(super) fn sorted_ids(mut ids: Vec<QueueId>) -> Vec<QueueId> {
    ids.sort();
    ids
}

fn record_path(queue: &Queue, name: &str) -> std::path::PathBuf {
    queue.root.join(DIR).join(name)
}

#[test]
fn commits_record_every_domain_once_in_lower_case() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let one = commit(
        &queue,
        &["a@Customer.TEST", "b@customer.test", "c@other.test"],
    );
    let two = commit(&queue, &["d@sub.customer.test"]);
    // No record is believed before a pass has made one from every envelope.
    assert!(candidates(&queue, "customer.test").is_err());
    rebuild_now(&queue);
    assert_eq!(candidates(&queue, "customer.test").unwrap(), [one]);
    assert_eq!(candidates(&queue, "CUSTOMER.test.").unwrap(), [one]);
    assert_eq!(candidates(&queue, "other.test").unwrap(), [one]);
    assert_eq!(
        candidates(&queue, "@customer.test").unwrap(),
        sorted_ids(vec![one, two])
    );
    assert_eq!(candidates(&queue, "nowhere.test").unwrap(), []);
    // After the record is made, commits keep it whole; a new domain is named in .list.
    let three = commit(&queue, &["e@new.test", "f@customer.test"]);
    assert_eq!(candidates(&queue, "new.test").unwrap(), [three]);
    assert_eq!(
        candidates(&queue, "customer.test").unwrap(),
        sorted_ids(vec![one, three])
    );
    let list = std::fs::read_to_string(record_path(&queue, LIST)).unwrap();
    assert!(list.lines().any(|l| l == "new.test"), "{list}");
}

#[test]
fn a_record_of_another_boot_or_without_its_list_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let id = commit(&queue, &["u@customer.test"]);
    rebuild_now(&queue);
    let list = record_path(&queue, LIST);
    let text = std::fs::read_to_string(&list).unwrap();
    let boot = boot_id().unwrap();
    std::fs::write(
        &list,
        text.replace(boot, "00000000-0000-0000-0000-000000000000"),
    )
    .unwrap();
    assert!(
        candidates(&queue, "customer.test")
            .unwrap_err()
            .contains("boot")
    );
    rebuild_now(&queue);
    assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
    std::fs::remove_file(&list).unwrap();
    assert!(candidates(&queue, "customer.test").is_err());
}

#[test]
fn damage_of_any_kind_is_not_believed_and_a_rebuild_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let ids = sorted_ids(
        (0..5)
            .map(|_| commit(&queue, &["u@customer.test"]))
            .collect(),
    );
    let other = commit(&queue, &["u@other.test"]);
    rebuild_now(&queue);
    let file = record_path(&queue, "customer.test");
    let list = record_path(&queue, LIST);
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage<'_>> = vec![
        ("deleted", Box::new(|| std::fs::remove_file(&file).unwrap())),
        (
            "truncated to nothing",
            Box::new(|| std::fs::write(&file, "").unwrap()),
        ),
        (
            "truncated at a line",
            Box::new(|| {
                let text = std::fs::read_to_string(&file).unwrap();
                let cut = text.trim_end().rfind('\n').unwrap() + 1;
                std::fs::write(&file, &text[..cut]).unwrap();
            }),
        ),
        (
            "a line gone",
            Box::new(|| {
                let text = std::fs::read_to_string(&file).unwrap();
                let first = format!("{}\n", ids[0]);
                std::fs::write(&file, text.replacen(&first, "", 1)).unwrap();
            }),
        ),
        (
            "a named pipe",
            Box::new(|| {
                std::fs::remove_file(&file).unwrap();
                nix::unistd::mkfifo(&file, Mode::S_IRWXU).unwrap();
            }),
        ),
        (
            "a symbolic link",
            Box::new(|| {
                std::fs::remove_file(&file).unwrap();
                std::os::unix::fs::symlink(record_path(&queue, "other.test"), &file).unwrap();
            }),
        ),
        (
            "oversized",
            Box::new(|| {
                File::options()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_len(MAX_FILE + 1)
                    .unwrap()
            }),
        ),
        ("no list", Box::new(|| std::fs::remove_file(&list).unwrap())),
        (
            "a torn list",
            Box::new(|| {
                let text = std::fs::read_to_string(&list).unwrap();
                std::fs::write(&list, &text[..text.len() - 2]).unwrap();
            }),
        ),
        (
            "the list a named pipe",
            Box::new(|| {
                std::fs::remove_file(&list).unwrap();
                nix::unistd::mkfifo(&list, Mode::S_IRWXU).unwrap();
            }),
        ),
        (
            "no unknown",
            Box::new(|| std::fs::remove_file(record_path(&queue, UNKNOWN)).unwrap()),
        ),
        (
            "the whole record deleted",
            Box::new(|| std::fs::remove_dir_all(queue.root.join(DIR)).unwrap()),
        ),
        (
            "the record a symbolic link",
            Box::new(|| {
                std::fs::remove_dir_all(queue.root.join(DIR)).unwrap();
                std::os::unix::fs::symlink("/tmp", queue.root.join(DIR)).unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        damage();
        // `.list` is read whole only by a look-up that needs it.
        assert!(
            candidates(&queue, "@customer.test").is_err(),
            "{what}: believed"
        );
        rebuild_now(&queue);
        assert_eq!(
            candidates(&queue, "customer.test"),
            Ok(ids.clone()),
            "{what}"
        );
        assert_eq!(candidates(&queue, "other.test"), Ok(vec![other]), "{what}");
    }
    // Nothing outside the queue was touched, and what held the record's name was moved aside.
    assert!(std::fs::symlink_metadata("/tmp").unwrap().is_dir());
    let aside: Vec<String> = std::fs::read_dir(&queue.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("domains.unusable."))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

#[test]
fn another_users_record_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path()).unwrap();
    let id = commit(&queue, &["u@customer.test"]);
    rebuild_now(&queue);
    // As if every record file were another user's: the queue expects an owner they lack.
    queue.owner += 1;
    assert!(
        candidates(&queue, "customer.test")
            .unwrap_err()
            .contains("owned by")
    );
    queue.owner -= 1;
    assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
}

#[test]
fn a_commit_that_cannot_append_makes_the_record_unbelieved() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let first = commit(&queue, &["u@customer.test"]);
    rebuild_now(&queue);
    let file = record_path(&queue, "customer.test");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() - 1]).unwrap();
    let second = commit(&queue, &["v@customer.test"]);
    assert!(
        !record_path(&queue, LIST).exists(),
        "the record is still believed"
    );
    rebuild_now(&queue);
    assert_eq!(
        candidates(&queue, "customer.test").unwrap(),
        sorted_ids(vec![first, second])
    );
}

#[test]
fn a_record_directory_that_is_not_the_queues_own_is_moved_aside_by_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), queue.root.join(DIR)).unwrap();
    let id = commit(&queue, &["u@customer.test"]);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(queue.root.join(DIR).is_dir());
    rebuild_now(&queue);
    assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
}

#[test]
fn unreadable_envelopes_are_candidates_for_every_domain() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let odd = commit(&queue, &["u@elsewhere.test"]);
    // As an older version would have left it, before any record: whom it is for cannot be
    // read.
    std::fs::remove_dir_all(queue.root.join(DIR)).unwrap();
    let env = queue.path(super::super::ENV, odd.as_str());
    std::fs::remove_file(&env).unwrap();
    nix::unistd::mkfifo(&env, Mode::S_IRWXU).unwrap();
    rebuild_now(&queue);
    assert_eq!(candidates(&queue, "customer.test").unwrap(), [odd]);
    assert_eq!(candidates(&queue, "@test").unwrap(), [odd]);
}

#[test]
fn compaction_drops_what_left_and_keeps_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let ids: Vec<QueueId> = (0..3 * COMPACT_MIN)
        .map(|_| commit(&queue, &["u@customer.test"]))
        .collect();
    rebuild_now(&queue);
    for &id in &ids[..2 * COMPACT_MIN] {
        let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.remove().unwrap();
    }
    let kept = sorted_ids(ids[2 * COMPACT_MIN..].to_vec());
    // The first pass still reads every id the file names, and compacts it.
    let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
    assert_eq!(
        scan.ids().iter().map(|&(id, _)| id).collect::<Vec<_>>(),
        kept
    );
    assert_eq!(candidates(&queue, "customer.test").unwrap(), kept);
    // A sweep with nothing queued for a domain removes its file and its name in .list.
    for &id in &kept {
        let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.remove().unwrap();
    }
    queue.sweep_orphans(SWEEP).unwrap();
    assert!(!record_path(&queue, "customer.test").exists());
    assert_eq!(candidates(&queue, "customer.test").unwrap(), []);
    let list = std::fs::read_to_string(record_path(&queue, LIST)).unwrap();
    assert!(!list.contains("customer.test"), "{list}");
}

const SWEEP: Duration = Duration::from_secs(3600);

#[test]
fn a_commit_killed_before_its_envelope_leaves_a_harmless_stale_id() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let kept = commit(&queue, &["u@customer.test"]);
    rebuild_now(&queue);
    // What a commit that died after recording leaves: its id, its data, no envelope.
    let id = QueueId::generate();
    std::fs::write(queue.path(super::super::DATA, id.as_str()), b"x\n").unwrap();
    let recording = record(&queue, &envelope(id, &["u@customer.test"])).unwrap();
    drop(recording);
    assert_eq!(
        candidates(&queue, "customer.test").unwrap(),
        sorted_ids(vec![kept, id])
    );
    let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
    assert_eq!(scan.ids(), [(kept, Place::Active)]);
}

#[test]
fn record_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    commit(&queue, &["u@customer.test"]);
    rebuild_now(&queue);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&queue.root.join(DIR)), 0o700);
    for name in ["customer.test", LIST, UNKNOWN] {
        assert_eq!(mode(&record_path(&queue, name)), 0o600, "{name}");
    }
}
