//! Writing a locked message's next state: room set aside beforehand, then the new envelope renamed
//! over the old one.
//!
//! A state is written under `tmp/ID.env`, synced, and renamed over `env/ID`, so a reader sees the
//! old state or the new one, never a mixture. [`Locked::reserve`](super::Locked::reserve) sets the
//! room aside before a delivery, so that its outcome can still be recorded on a disk that filled
//! up meanwhile (see the queue's known limits for copy-on-write file systems). A write that fails
//! leaves the old state and nothing in `tmp/`.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use nix::unistd::{UnlinkatFlags, unlinkat};

use super::envelope::Envelope;
use super::error::{io_error, nix_error};
use super::files::write_synced;
use super::{Place, Queue, QueueError, TMP};

impl Queue {
    /// Writes `envelope` under `tmp/` and renames it over the one in `place`. On failure nothing
    /// is left in `tmp/` and the old envelope stands.
    pub(super) fn replace_envelope(
        &self,
        place: Place,
        envelope: &Envelope,
    ) -> Result<(), QueueError> {
        let id = envelope.id;
        let tmp_name = format!("{id}.env");
        let tmp_path = self.path(TMP, &tmp_name);
        write_synced(&tmp_path, &envelope.to_bytes(), true)?;
        if let Err(e) = fs::rename(&tmp_path, self.path(place.dir(), id.as_str())) {
            let _ = fs::remove_file(&tmp_path);
            return Err(io_error("cannot rename", tmp_path)(e));
        }
        self.dir_of(place)
            .sync_all()
            .map_err(io_error("cannot sync", self.root.join(place.dir())))
    }
}

/// Space set aside under `tmp/` for a message's next state. Only the holder of the message's
/// lock writes this name; the file is also locked itself, so a sweep never takes it however
/// long the delivery lasts. Dropped unused, it is removed.
#[derive(Debug)]
pub(super) struct Reservation<'q> {
    pub(super) tmp: &'q File,
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Set once the file became the envelope.
    pub(super) renamed: bool,
}

impl Reservation<'_> {
    pub(super) fn fill(&self, bytes: u64) -> Result<(), QueueError> {
        let io = |action| io_error(action, &self.path);
        self.file.lock().map_err(io("cannot lock"))?;
        let zeros = [0u8; 4096];
        let mut left = bytes;
        let mut writer = &self.file;
        while left > 0 {
            let chunk = left.min(zeros.len() as u64) as usize;
            writer
                .write_all(&zeros[..chunk])
                .map_err(io("cannot write"))?;
            left -= chunk as u64;
        }
        Ok(())
    }

    /// Overwrites the reserved bytes with `envelope`, cuts the file to its length, syncs it and
    /// renames it over the envelope in `place`. A state longer than the reservation still works
    /// while there is room.
    pub(super) fn commit(
        &mut self,
        queue: &Queue,
        place: Place,
        envelope: &Envelope,
    ) -> Result<(), QueueError> {
        let bytes = envelope.to_bytes();
        let io = |action| io_error(action, &self.path);
        self.file
            .write_all_at(&bytes, 0)
            .map_err(io("cannot write"))?;
        self.file
            .set_len(bytes.len() as u64)
            .map_err(io("cannot write"))?;
        self.file.sync_all().map_err(io("cannot sync"))?;
        let id = envelope.id.as_str();
        let dir = queue.dir_of(place);
        nix::fcntl::renameat(self.tmp, self.name.as_str(), dir, id)
            .map_err(|e| nix_error("cannot rename", self.path.clone())(e))?;
        self.renamed = true;
        dir.sync_all()
            .map_err(io_error("cannot sync", queue.root.join(place.dir())))
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = unlinkat(self.tmp, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;
    use crate::queue::{ENV, LockAttempt};
    use std::time::Duration;

    #[test]
    fn a_reservation_holds_its_room_until_the_state_is_written_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let tmp = dir.path().join(TMP).join(format!("{id}.env"));
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.reserve(10_000).unwrap();
        assert_eq!(fs::metadata(&tmp).unwrap().len(), 10_000);
        // Locked itself, so a sweep of stale leftovers leaves it alone.
        assert_eq!(queue.sweep_tmp(Duration::ZERO).unwrap(), 0);
        assert!(tmp.exists());
        locked.envelope_mut().recipients[0].reason = "450 later".into();
        locked.save().unwrap();
        assert!(!tmp.exists(), "the reservation became the envelope");
        let expected = locked.envelope().to_bytes();
        assert_eq!(fs::read(queue.path(ENV, id.as_str())).unwrap(), expected);

        // A reservation that is not used goes with the message or the lock.
        locked.reserve(100).unwrap();
        drop(locked);
        assert!(!tmp.exists());
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.reserve(100).unwrap();
        locked.remove().unwrap();
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
        assert!(queue.ids().unwrap().is_empty());
    }

    #[test]
    fn a_failed_save_leaves_the_old_state_and_nothing_in_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        // The rename over the envelope fails: a directory with something in it stands there.
        let env = queue.path(ENV, id.as_str());
        let old = fs::read(&env).unwrap();
        fs::remove_file(&env).unwrap();
        fs::create_dir(&env).unwrap();
        fs::write(env.join("keep"), &old).unwrap();
        locked.envelope_mut().recipients[0].attempts = 7;
        for reserved in [false, true] {
            if reserved {
                locked.reserve(4096).unwrap();
            }
            assert!(locked.save().is_err(), "reserved: {reserved}");
            assert_eq!(
                fs::read_dir(dir.path().join(TMP)).unwrap().count(),
                0,
                "reserved: {reserved}"
            );
        }
        assert_eq!(fs::read(env.join("keep")).unwrap(), old);
    }
}
