//! Sweeping what died half way: leftovers in `tmp/`, and message data without an envelope.
//!
//! A file goes only when it is older than the grace period, is a regular file, and nobody holds a
//! lock on it: a draft being written and a reserved state are locked by their writer, so no sweep
//! takes them however long they last. Opening a leftover neither follows a link nor waits on a
//! pipe, and what is not a regular file is left alone, as it is none of the queue's.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::error::io_error;
use super::{DATA, Queue, QueueError, TMP, domains, is_absent};

/// How long a file in `tmp/`, or data without an envelope, must sit unlocked before a sweep
/// deletes it.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);

impl Queue {
    /// Removes leftovers in `tmp/` older than `grace` that nobody holds a lock on.
    pub fn sweep_tmp(&self, grace: Duration) -> Result<usize, QueueError> {
        let dir = self.root.join(TMP);
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_error("cannot read", &dir))? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if is_stale(&path, grace) && unlocked_then_removed(&path) {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes message data that has had no envelope for longer than `grace` and that nobody
    /// holds: what a submission or a removal left when it died between its two steps. The
    /// per-domain record loses the ids of messages that left (see `domains`). It reads all of
    /// `data/`, one name at a time and keeping none: passes over the whole queue call it,
    /// per-domain ones do not.
    pub fn sweep_orphans(&self, grace: Duration) -> Result<usize, QueueError> {
        let mut removed = 0;
        self.each_id(&self.data, DATA, |id| {
            let has_envelope = [&self.env, &self.hold]
                .into_iter()
                .any(|envelopes| !is_absent(envelopes, id));
            let orphan = self.path(DATA, id.as_str());
            if !has_envelope && is_stale(&orphan, grace) && unlocked_then_removed(&orphan) {
                removed += 1;
            }
        })?;
        domains::sweep(self);
        Ok(removed)
    }
}

fn is_stale(path: &Path, grace: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|mtime| mtime.elapsed().ok())
        .is_some_and(|age| age >= grace)
}

/// Removes a leftover regular file nobody holds a lock on. Opening it neither follows a link nor
/// waits on a pipe; anything but a regular file is left alone, as it is none of ours.
fn unlocked_then_removed(path: &Path) -> bool {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let Ok(file) = opened else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) || file.try_lock().is_err() {
        return false;
    }
    fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueId;
    use crate::queue::testing::commit;

    #[test]
    fn sweeps_leave_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let pipe = dir.path().join(TMP).join("stale.fifo");
        nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(queue.sweep_tmp(Duration::ZERO).unwrap(), 0);
        assert!(pipe.exists());
    }

    #[test]
    fn orphaned_data_is_swept_but_not_a_queued_message() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let kept = commit(&queue, b"queued\n");
        let orphan = QueueId::generate();
        fs::write(queue.path(DATA, orphan.as_str()), b"half a submission").unwrap();
        assert_eq!(queue.sweep_orphans(SWEEP_GRACE).unwrap(), 0);
        assert_eq!(queue.sweep_orphans(Duration::ZERO).unwrap(), 1);
        assert!(!queue.path(DATA, orphan.as_str()).exists());
        assert!(queue.path(DATA, kept.as_str()).exists());
    }

    #[test]
    fn sweep_spares_fresh_and_locked_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let draft = queue.draft().unwrap();
        fs::write(dir.path().join(TMP).join("stale.data"), b"left over").unwrap();
        assert_eq!(queue.sweep_tmp(SWEEP_GRACE).unwrap(), 0);
        assert_eq!(queue.sweep_tmp(Duration::ZERO).unwrap(), 1);
        assert!(draft.tmp_path.exists(), "a locked draft was swept");
    }
}
