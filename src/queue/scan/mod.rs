//! Passes over the queue: which messages there are and what each envelope says, for a listing, a
//! count or the plan of a queue run.
//!
//! A pass begins with the ids ([`Queue::scan`], [`Queue::scan_files`], [`Queue::scan_domains`])
//! and one look at the kernel's lock table, then reads one envelope per message and looks at its
//! data file ([`Scan::for_each`], [`Scan::inspect`]). A message that cannot be read is an
//! [`Inspection`] like any other, with an [`Unusable`] envelope: only the caller ends a pass
//! early.
//!
//! A pass holds its ids and nothing else per message (15 bytes each, about 15 MB for a million
//! messages): envelopes are read a few hundred at a time ahead of the caller, the index's table
//! is read and written line by line, and the lock table names only the messages being delivered.
//!
//! Decisions come from the envelope files alone. The index serves listings (`indexed`); the
//! per-domain record only chooses which envelope files a per-domain pass reads, and a pass that
//! cannot believe it reads every envelope file and rebuilds it (see `domains`).

use std::collections::HashSet;
use std::fs::File;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::envelope::Envelope;
use super::index::{Layout, Stamps};
use super::proc_locks::locked_inodes;
use super::selection::DomainPattern;
use super::{DATA, Place, Queue, QueueError, QueueId, RecordError, Unusable, domains};

mod batches;
mod indexed;
mod read_ahead;

pub use batches::Batches;

impl Queue {
    /// Starts a pass over the queue for a listing or a count. While the index is current, its
    /// table is the whole pass: no directory is read and no envelope opened. Otherwise the ids
    /// come from `env/` and `hold/`, then one read of the kernel's lock table, so that each
    /// message afterwards costs one small file read and a look at its data file.
    pub fn scan(&self) -> Result<Scan<'_>, QueueError> {
        self.scan_from(true)
    }

    /// Starts a pass that decides something (a queue run's plan): the ids come from the
    /// directories and every envelope from its own file, whatever the index says.
    pub fn scan_files(&self) -> Result<Scan<'_>, QueueError> {
        self.scan_from(false)
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
        let absent = |dir: &File, id: QueueId| matches!(entry_of(dir, id), Err(nix::Error::ENOENT));
        let (mut ids, mut gone) = (Vec::new(), Vec::new());
        for &id in &found.ids {
            let data_entry = entry_of(&self.data, id);
            let place = if !absent(&self.env, id) {
                Some(Place::Active)
            } else if !absent(&self.hold, id) {
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
            held_inodes: locked_inodes(&self.root.join(DATA)),
            stamps: None,
            began: SystemTime::now(),
            index: None,
            refresh_index: false,
            rebuild: None,
        }
    }

    fn scan_from(&self, use_index: bool) -> Result<Scan<'_>, QueueError> {
        let began = SystemTime::now();
        // Taken before anything is read: a change after this instant makes the index stale.
        let stamps = self.stamps().ok();
        let held_inodes = locked_inodes(&self.root.join(DATA));
        let index = stamps
            .as_ref()
            .filter(|_| use_index)
            .and_then(|s| self.current_index(s));
        let ids = match index {
            Some(_) => OnceLock::new(),
            None => OnceLock::from(self.ids()?),
        };
        Ok(Scan {
            queue: self,
            ids,
            held_inodes,
            stamps,
            began,
            index,
            refresh_index: false,
            rebuild: None,
        })
    }
}

/// A directory entry's status, without following a link.
fn entry_of(dir: &File, id: QueueId) -> nix::Result<nix::sys::stat::FileStat> {
    nix::sys::stat::fstatat(dir, id.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
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
        self.ids.get_or_init(|| self.indexed_ids())
    }

    /// How many messages the pass covers.
    pub fn count(&self) -> usize {
        match (&self.index, self.ids.get()) {
            (Some((_, layout)), _) => layout.count,
            (None, Some(ids)) => ids.len(),
            (None, None) => 0,
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
        let ids = only.unwrap_or_else(|| self.ids());
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
        self.read_each(ids, keep, &mut visit)?;
        if let Some(recorder) = recorder {
            recorder.commit(self);
        }
        if let Some(census) = census {
            let visited = |id, place| keep(id, place) && ids.binary_search(&(id, place)).is_ok();
            self.rebuild_record(census, visited);
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
                if matches!(entry_of(dir, id), Err(nix::Error::ENOENT)) {
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
