//! A message entering the queue: written under `tmp/`, then committed by two renames.
//!
//! [`Draft::commit`] is the commit instant of the state table: the data is synced, renamed into
//! `data/` and `data/` synced; the id is added to the per-domain record; the envelope is written,
//! synced and renamed into `env/`, and `env/` synced. A draft dropped before its commit leaves
//! nothing behind, and a commit that fails leaves neither data nor envelope. Its lock is held from
//! the first byte, so no sweep takes a draft however slowly it is written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

use super::envelope::{self, Envelope};
use super::error::{io_error, nix_error};
use super::files::{create_file, rename_noreplace, write_synced};
use super::{DATA, ENV, Queue, QueueError, QueueId, TMP, domains};

impl Queue {
    /// Starts a new message: a locked, empty data file under `tmp/`.
    pub fn draft(&self) -> Result<Draft<'_>, QueueError> {
        let id = QueueId::generate();
        let tmp_name = format!("{id}.data");
        let tmp_path = self.path(TMP, &tmp_name);
        let file = create_file(&tmp_path).map_err(io_error("cannot create", &tmp_path))?;
        file.lock().map_err(io_error("cannot lock", &tmp_path))?;
        Ok(Draft {
            queue: self,
            id,
            tmp_name,
            tmp_path,
            writer: io::BufWriter::with_capacity(64 * 1024, file),
            committed: false,
        })
    }
}

/// A message being written. Dropped without `commit`, it leaves nothing behind.
pub struct Draft<'q> {
    queue: &'q Queue,
    id: QueueId,
    tmp_name: String,
    pub(super) tmp_path: PathBuf,
    writer: io::BufWriter<File>,
    committed: bool,
}

impl Draft<'_> {
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Queues the message: data synced and renamed into `data/`, `data/` synced, the envelope
    /// written, synced and renamed into `env/`, `env/` synced. When this returns `Ok` the message
    /// survives a power cut. The lock is held until the draft is dropped.
    ///
    /// An envelope that could outgrow [`envelope::MAX_BYTES`] as its recipients gather replies
    /// is refused before anything is committed: readers would take it for damage.
    pub fn commit(mut self, envelope: &Envelope) -> Result<QueueId, QueueError> {
        let id = self.id;
        let queue = self.queue;
        let largest = envelope.largest_size();
        if largest > envelope::MAX_BYTES {
            return Err(QueueError::TooManyRecipients {
                recipients: envelope.recipients.len(),
                largest,
            });
        }
        self.writer
            .flush()
            .map_err(io_error("cannot write", &self.tmp_path))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(io_error("cannot sync", &self.tmp_path))?;

        rename_noreplace(&queue.tmp, &self.tmp_name, &queue.data, id.as_str())
            .map_err(|e| collision_or(e, id, "cannot commit", self.tmp_path.clone()))?;
        self.committed = true;
        queue
            .data
            .sync_all()
            .map_err(io_error("cannot sync", queue.root.join(DATA)))?;

        let env_tmp_name = format!("{id}.env");
        let env_tmp = queue.path(TMP, &env_tmp_name);
        let result = write_synced(&env_tmp, &envelope.to_bytes(), false).and_then(|()| {
            let _recording = domains::record(queue, envelope)?;
            rename_noreplace(&queue.tmp, &env_tmp_name, &queue.env, id.as_str())
                .map_err(|e| collision_or(e, id, "cannot commit", env_tmp.clone()))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&env_tmp);
            let _ = fs::remove_file(queue.path(DATA, id.as_str()));
            return Err(e);
        }
        queue
            .env
            .sync_all()
            .map_err(io_error("cannot sync", queue.root.join(ENV)))?;
        Ok(id)
    }
}

impl Write for Draft<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for Draft<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

fn collision_or(e: nix::Error, id: QueueId, action: &'static str, path: PathBuf) -> QueueError {
    if e == nix::Error::EEXIST {
        QueueError::IdCollision { id }
    } else {
        nix_error(action, path)(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Recipient;
    use crate::queue::testing::envelope;

    #[test]
    fn an_uncommitted_draft_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let mut draft = queue.draft().unwrap();
        draft.write_all(b"partial").unwrap();
        drop(draft);
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
        assert!(queue.ids().unwrap().is_empty());
    }

    #[test]
    fn an_envelope_that_could_outgrow_the_limit_is_refused_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let mut draft = queue.draft().unwrap();
        draft.write_all(b"x\n").unwrap();
        let mut many = envelope(draft.id(), 2);
        many.recipients = (0..20_000)
            .map(|n| Recipient::new(format!("user{n}@customer.example")))
            .collect();
        assert!(matches!(
            draft.commit(&many),
            Err(QueueError::TooManyRecipients {
                recipients: 20_000,
                ..
            })
        ));
        assert!(queue.ids().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join(DATA)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
    }
}
