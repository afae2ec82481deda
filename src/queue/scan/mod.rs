//! Passes over the queue: which messages there are and what each envelope says, for a listing, a
//! count or the plan of a queue run.
//!
//! A pass begins with the ids ([`Queue::scan`], [`Queue::scan_files`], [`Queue::scan_domains`]),
//! one look at `data/` and one at the kernel's lock table, then reads one envelope per message
//! ([`Scan::for_each`], [`Scan::inspect`]). A message that cannot be read is an [`Inspection`]
//! like any other, with an [`Unusable`] envelope: only the caller ends a pass early.
//!
//! Decisions come from the envelope files alone. The index serves listings (`indexed`); the
//! per-domain record only chooses which envelope files a per-domain pass reads, and a pass that
//! cannot believe it reads every envelope file and rebuilds it (see `domains`).

use std::fs::{self, File};
use std::os::unix::fs::DirEntryExt;
use std::sync::Arc;
use std::time::SystemTime;

use super::envelope::Envelope;
use super::error::io_error;
use super::index::Stamps;
use super::proc_locks::locked_inodes;
use super::selection::DomainPattern;
use super::{DATA, Place, Queue, QueueError, QueueId, RecordError, Unusable, domains};

mod indexed;
mod read_ahead;

impl Queue {
    /// Starts a pass over the queue for a listing or a count. While the index is current, its
    /// table is the whole pass: no directory is read and no envelope opened. Otherwise the ids
    /// come from `env/` and `hold/`, then one read of `data/` and of the kernel's lock table,
    /// so that each message afterwards costs one small file read.
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
        let entry = |dir: &File, id: QueueId| {
            nix::sys::stat::fstatat(dir, id.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        };
        let absent = |dir: &File, id: QueueId| matches!(entry(dir, id), Err(nix::Error::ENOENT));
        let (mut ids, mut data, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for &id in &found.ids {
            let data_entry = entry(&self.data, id);
            let place = if !absent(&self.env, id) {
                Some(Place::Active)
            } else if !absent(&self.hold, id) {
                Some(Place::Held)
            } else {
                None
            };
            match (place, data_entry) {
                (Some(place), data_entry) => {
                    ids.push((id, place));
                    if let Ok(stat) = data_entry {
                        data.push((id, stat.st_ino));
                    }
                }
                // Data goes last when a message leaves, and ids are never reused: it is gone.
                (None, Err(nix::Error::ENOENT)) => gone.push(id),
                // Being committed or being removed.
                (None, _) => {}
            }
        }
        domains::compact(self, &found, &gone);
        let held_inodes = locked_inodes(&self.root.join(DATA));
        let locked = held_inodes.map(|held| {
            data.iter()
                .filter(|(_, inode)| held.contains(inode))
                .map(|&(id, _)| id)
                .collect()
        });
        Scan {
            queue: self,
            ids,
            data,
            locked,
            stamps: None,
            began,
            index: None,
            refresh_index: false,
            rebuild: None,
        }
    }

    fn scan_from(&self, use_index: bool) -> Result<Scan<'_>, QueueError> {
        let began = SystemTime::now();
        // Taken before anything is read: a change after this instant makes the index stale.
        let stamps = self.stamps().ok();
        let data_dir = self.root.join(DATA);
        let held_inodes = locked_inodes(&data_dir);
        let locked_ids = |data: &[(QueueId, u64)]| {
            held_inodes.as_ref().map(|held| {
                data.iter()
                    .filter(|(_, inode)| held.contains(inode))
                    .map(|&(id, _)| id)
                    .collect()
            })
        };
        let current = stamps
            .as_ref()
            .filter(|_| use_index)
            .and_then(|s| self.current_index(s));
        let (ids, mut data, index) = match current {
            Some((file, table)) => (
                table.entries.iter().map(|e| (e.id, e.place)).collect(),
                table.entries.iter().map(|e| (e.id, e.data_inode)).collect(),
                Some((file, table.records_at)),
            ),
            None => {
                let mut data = Vec::new();
                let ids = self.ids()?;
                for entry in fs::read_dir(&data_dir).map_err(io_error("cannot read", &data_dir))? {
                    let entry = entry.map_err(io_error("cannot read", &data_dir))?;
                    if let Some(id) = entry.file_name().to_str().and_then(QueueId::parse) {
                        data.push((id, entry.ino()));
                    }
                }
                (ids, data, None)
            }
        };
        data.sort_unstable();
        Ok(Scan {
            queue: self,
            ids,
            locked: locked_ids(&data),
            data,
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
    ids: Vec<(QueueId, Place)>,
    /// Ids with a data file when the pass began, with its inode, sorted.
    data: Vec<(QueueId, u64)>,
    /// Ids whose data file someone held a lock on when the pass began; `None` when the kernel's
    /// lock table could not be read, and each message is asked instead.
    locked: Option<std::collections::HashSet<QueueId>>,
    /// The directories' stamps when the pass began, if they could be read.
    stamps: Option<Stamps>,
    began: SystemTime,
    /// The current index and where its records start, when the pass is made from it.
    index: Option<(File, u64)>,
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
    /// Active and held messages, oldest first.
    pub fn ids(&self) -> &[(QueueId, Place)] {
        &self.ids
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
    pub fn for_each<E>(
        &self,
        ids: &[(QueueId, Place)],
        mut visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(index) = &self.index {
            return self.for_each_indexed(index, ids, visit);
        }
        let mut recorder = self.index_recorder(ids);
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
        self.read_each(ids, &mut visit)?;
        if let Some(recorder) = recorder {
            recorder.commit(self);
        }
        if let Some(census) = census {
            self.rebuild_record(census, ids);
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
    fn rebuild_record(&self, mut census: domains::Census, visited: &[(QueueId, Place)]) {
        let Some(rebuild) = &self.rebuild else {
            return;
        };
        for &(id, place) in &self.ids {
            if visited.binary_search(&(id, place)).is_err()
                && let Some(inspection) = self.inspect(id, place)
            {
                census.add(id, inspection.envelope.as_ref().ok());
            }
        }
        let outcome = domains::rebuild(self.queue, census, &self.ids).map_err(Arc::new);
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
        match self.queue.read_envelope(id, place) {
            Ok(Some(bytes)) => Some(self.inspection(id, place, bytes)),
            Ok(None) => None,
            Err(unusable) => Some(Inspection {
                id,
                place,
                locked: false,
                envelope: Err(unusable),
                bytes: Vec::new(),
            }),
        }
    }

    /// What an envelope's bytes say, with what this pass learnt about the message's data file.
    fn inspection(&self, id: QueueId, place: Place, bytes: Vec<u8>) -> Inspection {
        // Data is committed before its envelope and removed after it, so an envelope that is
        // still there when its data was not is damage, not a race.
        if self.data.binary_search_by_key(&id, |&(id, _)| id).is_err() {
            return Inspection {
                id,
                place,
                locked: false,
                envelope: Err(Unusable::Damaged(
                    "message data file is missing".to_string(),
                )),
                bytes,
            };
        }
        let locked = match &self.locked {
            Some(locked) => locked.contains(&id),
            None => self.queue.probe_lock(id),
        };
        let envelope = match Envelope::parse(&bytes) {
            Ok(env) if env.id == id => Ok(env),
            Ok(env) => Err(Unusable::Damaged(format!(
                "envelope names id {}, file is {id}",
                env.id
            ))),
            Err(e) => Err(Unusable::Damaged(e.to_string())),
        };
        Inspection {
            id,
            place,
            locked,
            envelope,
            bytes,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::LockAttempt;
    use crate::queue::testing::commit;

    #[test]
    fn without_the_lock_table_each_message_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let held = commit(&queue, b"x\n");
        let free = commit(&queue, b"y\n");
        let mut scan = queue.scan().unwrap();
        scan.locked = None;
        let LockAttempt::Locked(_runner) = queue.try_lock(held).unwrap() else {
            panic!("not locked")
        };
        assert!(scan.inspect(held, Place::Active).unwrap().locked);
        assert!(!scan.inspect(free, Place::Active).unwrap().locked);
    }
}
