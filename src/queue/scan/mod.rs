//! Passes over the queue: which messages there are and what each envelope says, for a listing, a
//! count or the plan of a queue run.
//!
//! A pass begins with the ids ([`Queue::scan`], [`Queue::scan_files`], [`Queue::scan_domains`])
//! and one look at the kernel's lock table, then reads one envelope per message and looks at its
//! data file ([`Scan::for_each`], [`Scan::inspect`]). A message that cannot be read is an
//! [`Inspection`] like any other, with an [`Unusable`] envelope: only the caller ends a pass
//! early.
//!
//! A pass holds its ids and nothing else per message (15 bytes each): envelopes are read a few
//! hundred at a time ahead of the caller, the index's table is read and written line by line, and
//! the lock table names only the messages being delivered. A listing from a current index holds
//! no ids at all, and one without it at most [`LISTING_BATCH`] (see `batches`), so that a
//! listing's memory stays flat however long the queue; a plan of a queue run holds one batch
//! (`Queue::scan_active_in_batches`). Other passes over the whole queue (`queue-admin`, a
//! per-domain pass that rebuilds the record) hold every id.
//!
//! Decisions come from the envelope files alone. The index serves listings (`indexed`); the
//! per-domain record only chooses which envelope files a per-domain pass reads, and a pass that
//! cannot believe it reads every envelope file and rebuilds it (see `domains`).

use std::collections::HashSet;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::envelope::Envelope;
use super::index::{Layout, Stamps};
use super::proc_locks::locked_inodes;
use super::selection::DomainPattern;
use super::{
    DATA, Place, Queue, QueueError, QueueId, RecordError, Unusable, domains, entry_of, is_absent,
};

mod batches;
mod indexed;
mod read_ahead;

pub use batches::Batches;

/// The most messages a listing without a current index holds the ids of at once; a longer
/// queue is read in batches (see `batches`).
const LISTING_BATCH: usize = 250_000;

impl Queue {
    /// Starts a pass over the queue for a listing or a count. While the index is current, its
    /// table is the whole pass: no directory is read and no envelope opened. Otherwise the ids
    /// come from `env/` and `hold/`, then one read of the kernel's lock table, so that each
    /// message afterwards costs one small file read and a look at its data file.
    pub fn scan(&self) -> Result<Scan<'_>, QueueError> {
        self.scan_from(Some(LISTING_BATCH))
    }

    /// Starts a pass that decides something (a queue run's plan): the ids come from the
    /// directories and every envelope from its own file, whatever the index says.
    pub fn scan_files(&self) -> Result<Scan<'_>, QueueError> {
        self.scan_from(None)
    }

    /// Starts a pass over the messages that may have an open recipient in one of `patterns`
    /// (`-R`, ETRN): the per-domain record (see `domains`) names them, and only their files are
    /// read, so the pass costs what they cost however long the queue is. When the record cannot
    /// be believed, the pass is [`Queue::scan_files`]'s, and its first [`Scan::for_each`]
    /// rebuilds the record from the envelopes it reads. Either way every envelope comes from its
    /// own file: the record only chooses which files, and never leaves out a queued message of
    /// those domains.
    pub fn scan_domains(&self, patterns: &[DomainPattern]) -> Result<Scan<'_>, QueueError> {
        match domains::lookup(self, patterns) {
            Ok(found) => Ok(self.scan_found(found)),
            Err(reason) => {
                let mut scan = self.scan_files()?;
                scan.rebuild = Some(Rebuild {
                    reason,
                    outcome: std::sync::Mutex::new(None),
                });
                Ok(scan)
            }
        }
    }

    /// A pass over the ids the record named that are still queued. Each costs a look at its
    /// entries in `data/`, `env/` and `hold/`; the files that named many ids of messages that
    /// left are compacted.
    fn scan_found(&self, found: domains::Found) -> Scan<'_> {
        let began = SystemTime::now();
        let (mut ids, mut gone) = (Vec::new(), Vec::new());
        for &id in &found.ids {
            let data_entry = entry_of(&self.data, id);
            let place = if !is_absent(&self.env, id) {
                Some(Place::Active)
            } else if !is_absent(&self.hold, id) {
                Some(Place::Held)
            } else {
                None
            };
            match (place, data_entry) {
                (Some(place), _) => ids.push((id, place)),
                // Data goes last when a message leaves, and ids are never reused: it is gone.
                (None, Err(nix::Error::ENOENT)) => gone.push(id),
                // Being committed or being removed.
                (None, _) => {}
            }
        }
        domains::compact(self, &found, &gone);
        Scan {
            began,
            ..self.scan_of(ids)
        }
    }

    /// A pass over `ids`, oldest first, that decides from the envelope files.
    fn scan_of(&self, ids: Vec<(QueueId, Place)>) -> Scan<'_> {
        Scan {
            queue: self,
            ids: OnceLock::from(ids),
            later: None,
            held_inodes: locked_inodes(&self.root.join(DATA)),
            stamps: None,
            began: SystemTime::now(),
            index: None,
            refresh_index: false,
            rebuild: None,
        }
    }

    /// A pass over every message: a listing's (`listing_batch`), which uses a current index
    /// and else holds at most that many ids at once, or one that decides from the files.
    fn scan_from(&self, listing_batch: Option<usize>) -> Result<Scan<'_>, QueueError> {
        let began = SystemTime::now();
        // Taken before anything is read: a change after this instant makes the index stale.
        let stamps = self.stamps().ok();
        let held_inodes = locked_inodes(&self.root.join(DATA));
        let index = stamps
            .as_ref()
            .filter(|_| listing_batch.is_some())
            .and_then(|s| self.current_index(s));
        let (ids, later) = match (index.as_ref(), listing_batch) {
            (Some(_), _) => (OnceLock::new(), None),
            (None, Some(batch)) => {
                let mut batches = Batches::new(self, batch, true);
                let first = batches.next_ids()?.unwrap_or_default();
                if batches.is_finished() {
                    (OnceLock::from(first), None)
                } else {
                    let first = Mutex::new(Some(first));
                    (OnceLock::new(), Some(Later { batches, first }))
                }
            }
            (None, None) => (OnceLock::from(self.ids()?), None),
        };
        Ok(Scan {
            queue: self,
            ids,
            later,
            held_inodes,
            stamps,
            began,
            index,
            refresh_index: false,
            rebuild: None,
        })
    }
}

/// What rebuilding the per-domain record came to: shared, since a pass may be asked more than
/// once and an I/O error cannot be cloned.
pub type RebuildOutcome = Result<(), Arc<RecordError>>;

/// One pass over the queue, from [`Queue::scan`].
pub struct Scan<'q> {
    queue: &'q Queue,
    /// Set when the pass begins, except in a pass made from the index, which reads its table as
    /// it goes and makes the list only if it is asked for.
    ids: OnceLock<Vec<(QueueId, Place)>>,
    /// A listing of more messages than one batch, made without the index: the messages come
    /// a batch at a time instead of `ids` (see `batches`).
    later: Option<Later<'q>>,
    /// The inodes of the data files someone held a lock on when the pass began; `None` when the
    /// kernel's lock table could not be read, and each message is asked instead.
    held_inodes: Option<HashSet<u64>>,
    /// The directories' stamps when the pass began, if they could be read.
    stamps: Option<Stamps>,
    began: SystemTime,
    /// The current index and where its parts are, when the pass is made from it.
    index: Option<(File, Layout)>,
    /// A pass over every message writes a fresh index when the one on disk is stale.
    refresh_index: bool,
    /// Set when [`Queue::scan_domains`] could not believe the per-domain record.
    rebuild: Option<Rebuild>,
}

/// The messages of a listing longer than a batch: what its first reading found, and the batches
/// after it.
struct Later<'q> {
    /// As they stood after the first batch was read.
    batches: Batches<'q>,
    /// The first batch, until a visit takes it; a later visit reads it again.
    first: Mutex<Option<Vec<(QueueId, Place)>>>,
}

/// A pass that could not believe the per-domain record rebuilds it from what it reads.
struct Rebuild {
    /// Why the record was not believed.
    reason: RecordError,
    /// What the rebuild came to, once it ran.
    outcome: std::sync::Mutex<Option<RebuildOutcome>>,
}

impl Scan<'_> {
    /// Active and held messages, oldest first. A pass made from the index reads them from its
    /// table the first time they are asked for; [`Scan::count`] and [`Scan::for_each_where`] do
    /// not need them.
    pub fn ids(&self) -> &[(QueueId, Place)] {
        self.ids.get_or_init(|| match &self.later {
            Some(later) => {
                let mut ids = self.queue.ids().unwrap_or_default();
                ids.retain(|&key| later.batches.covers(key));
                ids
            }
            None => self.indexed_ids(),
        })
    }

    /// How many messages the pass covers.
    pub fn count(&self) -> usize {
        match (&self.index, &self.later, self.ids.get()) {
            (Some((_, layout)), _, _) => layout.count,
            (None, Some(later), _) => later.batches.found(),
            (None, None, Some(ids)) => ids.len(),
            (None, None, None) => 0,
        }
    }

    /// Inspects `ids` in order and hands each inspection to `visit`, reading ahead on a few
    /// threads: a listing is bound by opening one small file per message, and that parallelises.
    /// At most two chunks per thread are read ahead, so memory does not grow with the queue.
    /// Messages that left the queue meanwhile are skipped.
    ///
    /// While the index is current, envelopes come from it instead, in one sequential read. A pass
    /// over every message made with [`Scan::refreshing_index`] writes a fresh index when the one
    /// on disk is stale and the queue stood still throughout.
    ///
    /// A message that cannot be read is an inspection like any other, with its envelope an
    /// [`Unusable`]: only `visit` can end the pass early.
    pub fn for_each<E: From<QueueError>>(
        &self,
        ids: &[(QueueId, Place)],
        visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        self.visit(Some(ids), None, visit)
    }

    /// [`Scan::for_each`] over the pass's own messages that `keep` takes, without a copy of
    /// their ids: a plan over a million messages holds one list of ids, not two, and a listing
    /// from the index none.
    pub fn for_each_where<E: From<QueueError>>(
        &self,
        keep: &(dyn Fn(QueueId, Place) -> bool + Sync),
        visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        self.visit(None, Some(keep), visit)
    }

    /// Visits `only` or every message of the pass, those `keep` takes. Only a visit of every
    /// message may write the index: one that `keep` leaves a message out of writes none, as the
    /// index's writer refuses to finish short of its count.
    fn visit<E: From<QueueError>>(
        &self,
        only: Option<&[(QueueId, Place)]>,
        keep: Option<&(dyn Fn(QueueId, Place) -> bool + Sync)>,
        mut visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        let every = only.is_none_or(|ids| ids.len() == self.count());
        let keep = keep.unwrap_or(&|_, _| true);
        if let Some(index) = &self.index {
            return self.for_each_indexed(index, only, keep, visit);
        }
        let mut recorder = if every { self.index_recorder() } else { None };
        let mut census = self.rebuild_due().then(domains::Census::default);
        let mut visit = |inspection: Inspection| {
            if let Some(recorder) = recorder.as_mut() {
                recorder.add(&inspection);
            }
            if let Some(census) = census.as_mut() {
                census.add(inspection.id, inspection.envelope.as_ref().ok());
            }
            visit(inspection)
        };
        match (only, &self.later) {
            (None, Some(later)) => self.read_in_batches(later, keep, &mut visit)?,
            _ => self.read_each(only.unwrap_or_else(|| self.ids()), keep, &mut visit)?,
        }
        if let Some(recorder) = recorder {
            recorder.commit(self);
        }
        if let Some(census) = census {
            let ids = only.unwrap_or_else(|| self.ids());
            let visited = |id, place| keep(id, place) && ids.binary_search(&(id, place)).is_ok();
            self.rebuild_record(census, visited);
        }
        Ok(())
    }

    /// Reads a listing longer than a batch, a batch at a time: the first as the pass began
    /// read it (read again by a later visit), then each after it.
    fn read_in_batches<E>(
        &self,
        later: &Later<'_>,
        keep: &(dyn Fn(QueueId, Place) -> bool + Sync),
        visit: &mut impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<QueueError>,
    {
        let first = later.first.lock().ok().and_then(|mut first| first.take());
        let (mut batches, first) = match first {
            Some(first) => (later.batches.clone(), first),
            None => {
                let mut again = later.batches.again_from_the_first();
                let first = again.next_ids()?.unwrap_or_default();
                (again, first)
            }
        };
        self.read_each(&first, keep, visit)?;
        drop(first);
        while let Some(batch) = batches.next_ids()? {
            self.read_each(&batch, keep, visit)?;
        }
        Ok(())
    }

    /// When this pass could not believe the per-domain record: why, and, once its first
    /// [`Scan::for_each`] has run, whether it rebuilt the record (`Ok`) or why not.
    pub fn record_rebuild(&self) -> Option<(&RecordError, Option<RebuildOutcome>)> {
        let rebuild = self.rebuild.as_ref()?;
        let outcome = rebuild.outcome.lock().ok().and_then(|o| o.clone());
        Some((&rebuild.reason, outcome))
    }

    fn rebuild_due(&self) -> bool {
        self.rebuild
            .as_ref()
            .is_some_and(|r| r.outcome.lock().is_ok_and(|o| o.is_none()))
    }

    /// Completes `census` with the messages the pass did not visit (a run visits the active ones
    /// only) and rebuilds the record from it.
    fn rebuild_record(
        &self,
        mut census: domains::Census,
        visited: impl Fn(QueueId, Place) -> bool,
    ) {
        let Some(rebuild) = &self.rebuild else {
            return;
        };
        for &(id, place) in self.ids() {
            if !visited(id, place)
                && let Some(inspection) = self.inspect(id, place)
            {
                census.add(id, inspection.envelope.as_ref().ok());
            }
        }
        let outcome = domains::rebuild(self.queue, census, self.ids()).map_err(Arc::new);
        if let Ok(mut slot) = rebuild.outcome.lock() {
            *slot = Some(outcome);
        }
    }

    /// Makes a pass over every message write a fresh index when it is due (see `for_each`).
    pub fn refreshing_index(mut self) -> Self {
        self.refresh_index = true;
        self
    }

    /// Reads one message's envelope, without taking it from a runner. `None` when it left the
    /// queue since the pass began.
    pub fn inspect(&self, id: QueueId, place: Place) -> Option<Inspection> {
        let bytes = match self.queue.read_envelope(id, place) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(unusable) => {
                return Some(Inspection {
                    id,
                    place,
                    locked: false,
                    envelope: Err(unusable),
                    bytes: Vec::new(),
                    data_inode: None,
                });
            }
        };
        // Looked at after the envelope was read: data is committed before its envelope and
        // removed after it, so an envelope still there after its data was found missing is
        // damage, and one gone by then left the queue.
        let data_inode = match entry_of(&self.queue.data, id) {
            Ok(stat) => Some(stat.st_ino),
            Err(nix::Error::ENOENT) => {
                let dir = match place {
                    Place::Active => &self.queue.env,
                    Place::Held => &self.queue.hold,
                };
                if is_absent(dir, id) {
                    return None;
                }
                return Some(Inspection {
                    id,
                    place,
                    locked: false,
                    envelope: Err(Unusable::Damaged(
                        "message data file is missing".to_string(),
                    )),
                    bytes,
                    data_inode: None,
                });
            }
            Err(_) => None,
        };
        let locked = match (&self.held_inodes, data_inode) {
            (Some(held), Some(inode)) => held.contains(&inode),
            _ => self.queue.probe_lock(id),
        };
        Some(Inspection {
            id,
            place,
            locked,
            envelope: parse(id, &bytes),
            bytes,
            data_inode,
        })
    }
}

/// What an envelope file's bytes say about message `id`.
pub(super) fn parse(id: QueueId, bytes: &[u8]) -> Result<Envelope, Unusable> {
    match Envelope::parse(bytes) {
        Ok(env) if env.id == id => Ok(env),
        Ok(env) => Err(Unusable::Damaged(format!(
            "envelope names id {}, file is {id}",
            env.id
        ))),
        Err(e) => Err(Unusable::Damaged(e.to_string())),
    }
}

/// What a listing learns about one message.
#[derive(Debug)]
pub struct Inspection {
    pub id: QueueId,
    pub place: Place,
    /// A runner holds the message right now.
    pub locked: bool,
    pub envelope: Result<Envelope, Unusable>,
    /// The envelope as read, for the index.
    bytes: Vec<u8>,
    /// The inode of its data file, when it was looked at, for the index.
    data_inode: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::LockAttempt;
    use crate::queue::testing::commit;

    #[test]
    fn an_envelope_whose_data_is_missing_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        std::fs::remove_file(queue.path(DATA, id.as_str())).unwrap();
        let scan = queue.scan_files().unwrap();
        let inspection = scan.inspect(id, Place::Active).unwrap();
        assert!(
            matches!(&inspection.envelope, Err(Unusable::Damaged(why)) if why.contains("data file is missing")),
            "{inspection:?}"
        );
    }

    #[test]
    fn a_pass_visits_what_keep_takes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let ids: Vec<QueueId> = (0..5)
            .map(|n| commit(&queue, format!("{n}\n").as_bytes()))
            .collect();
        let scan = queue.scan_files().unwrap();
        let mut seen = Vec::new();
        let odd = |id: QueueId, _| {
            ids.iter()
                .position(|&i| i == id)
                .is_some_and(|n| n % 2 == 1)
        };
        scan.for_each_where(&odd, |inspection| -> Result<(), QueueError> {
            seen.push(inspection.id);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [ids[1], ids[3]]);
    }

    /// Every message a visit of `scan` hands over, in order.
    fn visited(scan: &Scan<'_>) -> Vec<(QueueId, Place)> {
        let mut seen = Vec::new();
        let every = |_, _| true;
        scan.for_each_where(&every, |inspection| -> Result<(), QueueError> {
            seen.push((inspection.id, inspection.place));
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_listing_longer_than_a_batch_reads_it_a_batch_at_a_time_and_writes_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let ids: Vec<QueueId> = (0..8)
            .map(|n| commit(&queue, format!("{n}\n").as_bytes()))
            .collect();
        for &id in &ids[1..3] {
            let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
                panic!("not locked")
            };
            locked.move_to(Place::Held).unwrap();
        }
        let mut all: Vec<(QueueId, Place)> = ids
            .iter()
            .enumerate()
            .map(|(n, &id)| {
                (
                    id,
                    if (1..3).contains(&n) {
                        Place::Held
                    } else {
                        Place::Active
                    },
                )
            })
            .collect();
        all.sort();
        // Wait for the directories to settle, so that a whole visit may write the index.
        std::thread::sleep(crate::queue::index::SETTLE + std::time::Duration::from_millis(100));

        let scan = queue.scan_from(Some(3)).unwrap().refreshing_index();
        assert!(scan.later.is_some(), "more than one batch");
        assert!(scan.index.is_none());
        assert_eq!(scan.count(), 8);
        assert_eq!(visited(&scan), all, "every message once, oldest first");
        assert_eq!(
            visited(&scan),
            all,
            "a second visit reads the first batch again"
        );
        assert_eq!(scan.ids(), all);
        let odd = |id: QueueId, _| {
            ids.iter()
                .position(|&i| i == id)
                .is_some_and(|n| n % 2 == 1)
        };
        let mut seen = Vec::new();
        scan.for_each_where(&odd, |inspection| -> Result<(), QueueError> {
            seen.push(inspection.id);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [ids[1], ids[3], ids[5], ids[7]]);

        // The visit over every message wrote the index, which the next listing uses.
        let next = queue.scan_from(Some(3)).unwrap();
        assert!(next.index.is_some(), "the batched visit wrote the index");
        assert_eq!(visited(&next), all);
    }

    #[test]
    fn a_listing_stops_at_what_the_first_reading_found() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let mut ids: Vec<QueueId> = (0..5).map(|_| commit(&queue, b"x\n")).collect();
        ids.sort();
        let scan = queue.scan_from(Some(2)).unwrap();
        let late = commit(&queue, b"late\n");
        let listed: Vec<QueueId> = visited(&scan).into_iter().map(|(id, _)| id).collect();
        assert_eq!(listed, ids);
        assert!(!scan.ids().contains(&(late, Place::Active)));
        assert_eq!(scan.count(), 5);
        // A message that left during the listing is not listed, and nothing else changes.
        let LockAttempt::Locked(locked) = queue.try_lock(ids[4]).unwrap() else {
            panic!("not locked")
        };
        locked.remove().unwrap();
        let listed: Vec<QueueId> = visited(&scan).into_iter().map(|(id, _)| id).collect();
        assert_eq!(listed, ids[..4]);
    }

    #[test]
    fn without_the_lock_table_each_message_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let held = commit(&queue, b"x\n");
        let free = commit(&queue, b"y\n");
        let mut scan = queue.scan().unwrap();
        scan.held_inodes = None;
        let LockAttempt::Locked(_runner) = queue.try_lock(held).unwrap() else {
            panic!("not locked")
        };
        assert!(scan.inspect(held, Place::Active).unwrap().locked);
        assert!(!scan.inspect(free, Place::Active).unwrap().locked);
    }
}
