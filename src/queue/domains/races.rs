//! Commits, look-ups, rebuilds and compactions racing one another, and record files deleted
//! under them: what a look-up believes must name every message queued before it began.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::DIR;
use super::record::add;
use super::rewrite::{Rewrite, rewrite};
use super::store::{read_ids, usable_dir};
use super::tests::{candidates, commit, pattern, rebuild_now, record_state, sorted_ids};
use crate::queue::{Queue, QueueError, QueueId, TMP};

#[test]
fn compaction_racing_appenders_loses_no_append() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let rec = usable_dir(&queue).unwrap();
    let gone: Vec<QueueId> = sorted_ids((0..200).map(|_| QueueId::generate()).collect());
    for &id in &gone {
        add(&queue, &rec, "race.test", id).unwrap();
    }
    let appended: Vec<Vec<QueueId>> = std::thread::scope(|scope| {
        let appenders: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..300)
                        .map(|_| {
                            let id = QueueId::generate();
                            add(&queue, &rec, "race.test", id).unwrap();
                            id
                        })
                        .collect::<Vec<QueueId>>()
                })
            })
            .collect();
        for _ in 0..100 {
            rewrite(&queue, &rec, "race.test", &[], &gone, Rewrite::Compact).unwrap();
        }
        appenders.into_iter().map(|a| a.join().unwrap()).collect()
    });
    rewrite(&queue, &rec, "race.test", &[], &gone, Rewrite::Compact).unwrap();
    let left = sorted_ids(read_ids(&queue, &rec, "race.test").unwrap().unwrap());
    let appended: Vec<QueueId> = appended.into_iter().flatten().collect();
    let lost = appended
        .iter()
        .filter(|id| left.binary_search(id).is_err())
        .count();
    assert_eq!(lost, 0, "{lost} of {} appends lost", appended.len());
    assert_eq!(left.len(), appended.len(), "ids that left are still there");
    assert!(
        std::fs::read_dir(queue.root.join(TMP))
            .unwrap()
            .next()
            .is_none(),
        "drafts left behind"
    );
}

/// Sets its flag when dropped, so that a failed assertion stops the other threads of a
/// scope instead of leaving the scope waiting for them.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Checks, `rounds` times, that a look-up that believes the record names every message queued
/// before it began, while three threads commit and `vandal` deletes parts of the record; each
/// round first lets a per-domain pass rebuild what it cannot believe. Returns how many look-ups
/// were believed.
fn lookups_stay_complete(queue: &Queue, rounds: usize, vandal: impl Fn() + Sync) -> usize {
    let stop = AtomicBool::new(false);
    let (committed, checked) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let committers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut ids = Vec::new();
                    while !stop.load(Relaxed) {
                        ids.push(commit(queue, &["u@customer.test"]));
                    }
                    ids
                })
            })
            .collect();
        let remover = scope.spawn(|| {
            while !stop.load(Relaxed) {
                vandal();
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        let mut checked = 0;
        for _ in 0..rounds {
            let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
            scan.for_each(scan.ids(), |_| -> Result<(), QueueError> { Ok(()) })
                .unwrap();
            let before = queue.ids().unwrap();
            if let Ok(found) = candidates(queue, "customer.test") {
                checked += 1;
                for (id, _) in before {
                    if found.binary_search(&id).is_err() {
                        panic!("{id} missing; the record:\n{}", record_state(queue, id));
                    }
                }
            }
        }
        stop.store(true, Relaxed);
        remover.join().unwrap();
        let committed: Vec<QueueId> = committers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        (committed, checked)
    });
    assert!(!committed.is_empty());
    println!(
        "{} commits; {checked} records believed and checked",
        committed.len()
    );
    rebuild_now(queue);
    let found = candidates(queue, "customer.test").unwrap();
    let queued: Vec<QueueId> = queue.ids().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(found, queued);
    checked
}

#[test]
fn commits_during_a_rebuild_are_all_in_the_record_it_makes() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    for _ in 0..50 {
        commit(&queue, &["u@customer.test"]);
    }
    // The record is deleted at any moment, so that commits record into a directory a rebuild
    // never sees: only its second look at the queue finds them.
    lookups_stay_complete(&queue, 40, || {
        let _ = std::fs::remove_dir_all(queue.root.join(DIR));
    });
}

#[test]
fn a_domain_file_deleted_under_commits_is_never_believed_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    for _ in 0..50 {
        commit(&queue, &["u@customer.test"]);
    }
    // `.list` stays and names the file: the next commit makes the file afresh with its own id
    // alone, which no look-up may take for the domain's whole mail.
    let checked = lookups_stay_complete(&queue, 200, || {
        let _ = std::fs::remove_file(queue.root.join(DIR).join("customer.test"));
    });
    assert!(
        checked > 0,
        "no look-up was believed: the test proves nothing"
    );
}

#[test]
fn commits_racing_to_make_a_new_domain_file_keep_the_record_believed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        let list = queue.root.join(DIR).join(super::LIST);
        assert!(list.exists(), "no record to begin with");
        let rec = usable_dir(&queue).unwrap();
        let start = std::sync::Barrier::new(6);
        let added: Vec<QueueId> = std::thread::scope(|scope| {
            let committers: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        let id = QueueId::generate();
                        start.wait();
                        add(&queue, &rec, "new.test", id).map(|()| id)
                    })
                })
                .collect();
            committers
                .into_iter()
                .map(|c| c.join().unwrap().unwrap())
                .collect()
        });
        assert!(
            list.exists(),
            "round {round}: a new file taken for a lost one"
        );
        let recorded = sorted_ids(read_ids(&queue, &rec, "new.test").unwrap().unwrap());
        assert_eq!(recorded, sorted_ids(added), "round {round}");
    }
}
