//! A pass and the index: envelopes read from a current index in one sequential read, and a fresh
//! index written by a pass over every message that found the one on disk stale.
//!
//! The index is advisory. An envelope it lacks or holds damaged is read from its own file, since
//! only that file may condemn a message to `corrupt/`. A fresh index is written under `tmp/` and
//! renamed into place only when the pass saw every envelope whole and the directories' stamps did
//! not move meanwhile; otherwise it is removed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Seek};
use std::path::PathBuf;

use super::{Inspection, Scan, parse};
use crate::queue::files::create_file;
use crate::queue::index::{self, DirStamp, Entry, IndexWriter, Records, Stamps};
use crate::queue::{INDEX, Place, Queue, QueueId, TMP};

impl Queue {
    /// The stamps of the directories whose every change moves them (see `index`).
    pub(super) fn stamps(&self) -> io::Result<Stamps> {
        Ok(Stamps {
            active: DirStamp::of(&self.env.metadata()?),
            held: DirStamp::of(&self.hold.metadata()?),
            data: DirStamp::of(&self.data.metadata()?),
        })
    }

    /// The index, when it was made for the queue as `stamps` describe it: its messages, and
    /// those among them whose data file's inode is one of `held_inodes`. The table's inodes are
    /// not kept, so that a pass holds only the ids.
    pub(super) fn current_index(
        &self,
        stamps: &Stamps,
        held_inodes: Option<&HashSet<u64>>,
    ) -> Option<CurrentIndex> {
        let (file, _) = self.open_own(&self.top, INDEX).ok()??;
        let (mut ids, mut locked) = (Vec::new(), HashSet::new());
        let records_at = index::read_table(
            &mut io::BufReader::with_capacity(256 * 1024, &file),
            stamps,
            |entry| {
                if held_inodes.is_some_and(|held| held.contains(&entry.data_inode)) {
                    locked.insert(entry.id);
                }
                ids.push((entry.id, entry.place));
            },
        )?;
        Some(CurrentIndex {
            file,
            ids,
            locked,
            records_at,
        })
    }
}

/// An index that describes the queue as it is.
pub(super) struct CurrentIndex {
    pub(super) file: File,
    /// In listing order.
    pub(super) ids: Vec<(QueueId, Place)>,
    /// The messages whose data file someone held a lock on when the pass began.
    pub(super) locked: HashSet<QueueId>,
    /// Where the first record starts.
    pub(super) records_at: u64,
}

impl Scan<'_> {
    /// Visits `ids` with the envelopes the index holds, in one sequential read; one it lacks or
    /// holds damaged is read from its file.
    pub(super) fn for_each_indexed<E>(
        &self,
        (file, records_at): &(File, u64),
        ids: &[(QueueId, Place)],
        keep: &(dyn Fn(QueueId, Place) -> bool + Sync),
        mut visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut reader = file;
        let mut records = match reader.seek(io::SeekFrom::Start(*records_at)) {
            Ok(_) => Some(Records::new(io::BufReader::with_capacity(
                256 * 1024,
                reader,
            ))),
            Err(_) => None,
        };
        let mut record = records.as_mut().and_then(Iterator::next);
        for &(id, place) in ids.iter().filter(|&&(id, place)| keep(id, place)) {
            while record
                .as_ref()
                .is_some_and(|r| (r.id, r.place) < (id, place))
            {
                record = records.as_mut().and_then(Iterator::next);
            }
            let indexed = match &mut record {
                Some(r) if (r.id, r.place) == (id, place) => {
                    let bytes = std::mem::take(&mut r.envelope);
                    record = records.as_mut().and_then(Iterator::next);
                    // Only the envelope's own file may condemn a message to corrupt/.
                    parse(id, &bytes).ok().map(|envelope| Inspection {
                        id,
                        place,
                        locked: match self.held_inodes {
                            Some(_) => self.indexed_locked.contains(&id),
                            None => self.queue.probe_lock(id),
                        },
                        envelope: Ok(envelope),
                        bytes,
                        data_inode: None,
                    })
                }
                _ => None,
            };
            let inspection = match indexed {
                Some(inspection) => Some(inspection),
                None => self.inspect(id, place),
            };
            if let Some(inspection) = inspection {
                visit(inspection)?;
            }
        }
        Ok(())
    }

    /// A writer for a fresh index, when this pass covers every message, the index on disk is
    /// stale, and the directories had settled before the pass began.
    pub(super) fn index_recorder(&self, ids: &[(QueueId, Place)]) -> Option<IndexRecorder> {
        let stamps = self.stamps?;
        if !self.refresh_index || ids.len() != self.ids.len() || !stamps.is_settled(self.began) {
            return None;
        }
        let path = self
            .queue
            .path(TMP, &format!("{INDEX}.{}", QueueId::generate()));
        let file = create_file(&path).ok()?;
        let out = io::BufWriter::with_capacity(256 * 1024, file);
        Some(IndexRecorder {
            writer: IndexWriter::new(out, &stamps, ids.len()).ok(),
            path,
        })
    }
}

/// A fresh index being written under `tmp/` during a pass; renamed into place only if the pass
/// saw every envelope whole and the queue did not change meanwhile, removed otherwise.
pub(super) struct IndexRecorder {
    /// `None` once anything went wrong: the index is then abandoned, never half written.
    writer: Option<IndexWriter<io::BufWriter<File>>>,
    path: PathBuf,
}

impl IndexRecorder {
    pub(super) fn add(&mut self, inspection: &Inspection) {
        let written = match (
            self.writer.as_mut(),
            &inspection.envelope,
            inspection.data_inode,
        ) {
            (Some(writer), Ok(_), Some(data_inode)) => {
                let entry = Entry {
                    id: inspection.id,
                    place: inspection.place,
                    data_inode,
                };
                writer.add(&entry, &inspection.bytes).is_ok()
            }
            _ => false,
        };
        if !written {
            self.writer = None;
        }
    }

    pub(super) fn commit(mut self, scan: &Scan<'_>) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let unchanged = scan.queue.stamps().ok() == scan.stamps;
        if unchanged && writer.finish().is_ok() {
            // Advisory: a failed rename leaves the old index, which its stamps already refute.
            let _ = fs::rename(&self.path, scan.queue.root.join(INDEX));
        }
    }
}

impl Drop for IndexRecorder {
    fn drop(&mut self) {
        // After a successful rename the name is gone and this fails harmlessly.
        let _ = fs::remove_file(&self.path);
    }
}
