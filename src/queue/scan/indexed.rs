//! A pass and the index: envelopes read from a current index in one sequential read, and a fresh
//! index written by a pass over every message that found the one on disk stale.
//!
//! The index is advisory. An envelope it lacks or holds damaged is read from its own file, since
//! only that file may condemn a message to `corrupt/`. A fresh index is written under `tmp/` and
//! renamed into place only when the pass saw every envelope whole and the directories' stamps did
//! not move meanwhile; otherwise it is removed.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{Inspection, Scan, parse};
use crate::queue::files::create_file;
use crate::queue::index::{self, DirStamp, Entries, Entry, IndexWriter, Layout, Records, Stamps};
use crate::queue::{INDEX, Place, Queue, QueueError, QueueId, TMP};

impl Queue {
    /// The stamps of the directories whose every change moves them (see `index`).
    pub(super) fn stamps(&self) -> io::Result<Stamps> {
        Ok(Stamps {
            active: DirStamp::of(&self.env.metadata()?),
            held: DirStamp::of(&self.hold.metadata()?),
            data: DirStamp::of(&self.data.metadata()?),
        })
    }

    /// The index and where its parts are, when it was made for the queue as `stamps` describe
    /// it. Its table is read through once, to know it whole, and nothing of it is kept.
    pub(super) fn current_index(&self, stamps: &Stamps) -> Option<(File, Layout)> {
        let (file, _) = self.open_own(&self.top, INDEX).ok()??;
        let mut reader = io::BufReader::with_capacity(256 * 1024, At::new(&file, 0));
        let layout = index::read_table(&mut reader, stamps, |_| {})?;
        Some((file, layout))
    }
}

/// Reads a file from a position of its own, so that the table and the records of one index are
/// read side by side.
struct At<'f> {
    file: &'f File,
    position: u64,
}

impl<'f> At<'f> {
    fn new(file: &'f File, position: u64) -> At<'f> {
        At { file, position }
    }
}

impl io::Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.position)?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Scan<'_> {
    /// Visits `only` (else every message) that `keep` takes, with the envelopes the index holds,
    /// reading its table and its records side by side: nothing is held per message. One it
    /// lacks or holds damaged is read from its file. Should the table, whole when the pass
    /// began, end early now, the messages after the last one visited come from the directories.
    pub(super) fn for_each_indexed<E: From<QueueError>>(
        &self,
        (file, layout): &(File, Layout),
        only: Option<&[(QueueId, Place)]>,
        keep: &(dyn Fn(QueueId, Place) -> bool + Sync),
        mut visit: impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        let table = Entries::new(
            io::BufReader::with_capacity(64 * 1024, At::new(file, layout.table_at)),
            layout.count,
        );
        let mut records = Records::new(io::BufReader::with_capacity(
            256 * 1024,
            At::new(file, layout.records_at),
        ));
        let mut record = records.next();
        let mut only = only.map(|ids| ids.iter().copied().peekable());
        let wanted = |only: &mut Option<std::iter::Peekable<_>>, key: (QueueId, Place)| {
            let Some(only) = only else {
                return keep(key.0, key.1);
            };
            while only
                .next_if(|&next: &(QueueId, Place)| next < key)
                .is_some()
            {}
            only.next_if_eq(&key).is_some() && keep(key.0, key.1)
        };
        let (mut read, mut last) = (0, None);
        for entry in table {
            let key = (entry.id, entry.place);
            read += 1;
            last = Some(key);
            if !wanted(&mut only, key) {
                continue;
            }
            while record.as_ref().is_some_and(|r| (r.id, r.place) < key) {
                record = records.next();
            }
            let indexed = match &mut record {
                Some(r) if (r.id, r.place) == key => {
                    let bytes = std::mem::take(&mut r.envelope);
                    record = records.next();
                    // Only the envelope's own file may condemn a message to corrupt/.
                    parse(entry.id, &bytes).ok().map(|envelope| Inspection {
                        id: entry.id,
                        place: entry.place,
                        locked: match &self.held_inodes {
                            Some(held) => held.contains(&entry.data_inode),
                            None => self.queue.probe_lock(entry.id),
                        },
                        envelope: Ok(envelope),
                        bytes,
                        data_inode: Some(entry.data_inode),
                    })
                }
                _ => None,
            };
            if let Some(inspection) = indexed.or_else(|| self.inspect(entry.id, entry.place)) {
                visit(inspection)?;
            }
        }
        if read < layout.count {
            for key in self.queue.ids()? {
                if Some(key) > last
                    && wanted(&mut only, key)
                    && let Some(inspection) = self.inspect(key.0, key.1)
                {
                    visit(inspection)?;
                }
            }
        }
        Ok(())
    }

    /// The ids of a pass made from the index, read from its table; from the directories should
    /// the table, whole when the pass began, not read to its end now.
    pub(super) fn indexed_ids(&self) -> Vec<(QueueId, Place)> {
        let Some((file, layout)) = &self.index else {
            return Vec::new();
        };
        let table = Entries::new(
            io::BufReader::with_capacity(64 * 1024, At::new(file, layout.table_at)),
            layout.count,
        );
        let ids: Vec<(QueueId, Place)> = table.map(|entry| (entry.id, entry.place)).collect();
        if ids.len() == layout.count {
            return ids;
        }
        self.queue.ids().unwrap_or(ids)
    }

    /// A writer for a fresh index, when this pass covers every message, the index on disk is
    /// stale, and the directories had settled before the pass began.
    pub(super) fn index_recorder(&self) -> Option<IndexRecorder> {
        let stamps = self.stamps?;
        if !self.refresh_index || !stamps.is_settled(self.began) {
            return None;
        }
        let path = self
            .queue
            .path(TMP, &format!("{INDEX}.{}", QueueId::generate()));
        let file = create_file(&path).ok()?;
        let out = io::BufWriter::with_capacity(256 * 1024, file);
        Some(IndexRecorder {
            writer: IndexWriter::new(out, &stamps, self.count()).ok(),
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

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};

    use super::*;
    use crate::queue::index::SETTLE;
    use crate::queue::testing::commit;

    /// A queue of three messages with a current index, and the pass made from it.
    fn indexed(dir: &tempfile::TempDir) -> (Queue, Vec<QueueId>) {
        let queue = Queue::open(dir.path()).unwrap();
        let ids: Vec<QueueId> = (0..3)
            .map(|n| commit(&queue, format!("{n}\n").as_bytes()))
            .collect();
        std::thread::sleep(SETTLE + std::time::Duration::from_millis(100));
        let scan = queue.scan().unwrap().refreshing_index();
        scan.for_each(scan.ids(), |_| -> Result<(), QueueError> { Ok(()) })
            .unwrap();
        (queue, ids)
    }

    fn visited(scan: &Scan<'_>) -> Vec<QueueId> {
        let mut seen = Vec::new();
        scan.for_each_where(&|_, _| true, |inspection| -> Result<(), QueueError> {
            seen.push(inspection.id);
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_pass_from_the_index_holds_no_ids_until_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, ids) = indexed(&dir);
        let scan = queue.scan().unwrap();
        assert!(scan.index.is_some());
        assert!(scan.ids.get().is_none());
        assert_eq!(scan.count(), 3);
        assert_eq!(visited(&scan), ids);
        assert!(scan.ids.get().is_none());
        let listed: Vec<QueueId> = scan.ids().iter().map(|&(id, _)| id).collect();
        assert_eq!(listed, ids);
    }

    #[test]
    fn a_table_torn_after_the_pass_began_still_yields_every_message() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, ids) = indexed(&dir);
        let scan = queue.scan().unwrap();
        assert!(scan.index.is_some());
        // Torn in place, so the file the pass opened reads the damage from the second line on.
        let path = queue.root.join(INDEX);
        let text = fs::read(&path).unwrap();
        let second = text
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(1)
            .unwrap()
            .0
            + 1;
        let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(io::SeekFrom::Start(second as u64)).unwrap();
        file.write_all(b"garbage\tgarbage\n").unwrap();
        drop(file);
        assert_eq!(visited(&scan), ids);
        let listed: Vec<QueueId> = scan.ids().iter().map(|&(id, _)| id).collect();
        assert_eq!(listed, ids);
    }
}
