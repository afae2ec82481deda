//! Moving a damaged message to `corrupt/`, and the words a report uses for what became of it.
//!
//! Only damage comes here ([`Unusable::Damaged`](super::Unusable::Damaged),
//! [`LockAttempt::Corrupt`](super::LockAttempt::Corrupt)), never an access problem. A message that
//! a runner holds, or whose data file this process may not lock, is left where it is. Nothing is
//! deleted: what is in `corrupt/` waits for a human.

use std::fs;
use std::io;

use super::error::io_error;
use super::{CORRUPT, DATA, Place, Queue, QueueError, QueueId};

/// What became of a message a pass could not use, as a log line or a listing says it: `moved` is
/// what [`Queue::quarantine`] answered (false for an access problem, which never goes there).
pub fn disposition(moved: bool) -> &'static str {
    if moved {
        "moved to corrupt/"
    } else {
        "left in place"
    }
}

impl Queue {
    /// Moves a damaged message to `corrupt/`, unless a runner holds it right now or its data
    /// file is not one this process may lock. Returns whether it was moved. Only damage comes
    /// here (`Unusable::Damaged`, `LockAttempt::Corrupt`), never an access problem.
    pub fn quarantine(&self, id: QueueId, place: Place) -> Result<bool, QueueError> {
        let data_path = self.path(DATA, id.as_str());
        let lock = match self.open_own(&self.data, id.as_str()) {
            Ok(Some((file, _))) => match file.try_lock() {
                Ok(()) => Some(file),
                Err(fs::TryLockError::WouldBlock) => return Ok(false),
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_error("cannot lock", data_path)(e));
                }
            },
            Ok(None) => None,
            Err(_) => return Ok(false),
        };
        let env_path = self.path(place.dir(), id.as_str());
        let env_target = self.path(CORRUPT, &format!("{id}.env"));
        match fs::rename(&env_path, &env_target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error("cannot move aside", env_path)(e)),
        }
        if lock.is_some() {
            let data_target = self.path(CORRUPT, &format!("{id}.data"));
            fs::rename(&data_path, &data_target)
                .map_err(io_error("cannot move aside", data_path))?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;
    use crate::queue::{ENV, LockAttempt};

    #[test]
    fn corrupt_envelopes_are_quarantined_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        fs::write(queue.path(ENV, id.as_str()), b"garbage").unwrap();
        assert!(matches!(
            queue.try_lock(id).unwrap(),
            LockAttempt::Corrupt(_)
        ));
        assert!(
            queue
                .scan()
                .unwrap()
                .inspect(id, Place::Active)
                .unwrap()
                .envelope
                .is_err()
        );
        assert!(queue.quarantine(id, Place::Active).unwrap());
        assert!(queue.ids().unwrap().is_empty());
        assert_eq!(
            fs::read(queue.path(CORRUPT, &format!("{id}.env"))).unwrap(),
            b"garbage"
        );
        assert_eq!(
            fs::read(queue.path(CORRUPT, &format!("{id}.data"))).unwrap(),
            b"x\n"
        );
    }

    #[test]
    fn quarantine_leaves_a_message_a_runner_holds() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let LockAttempt::Locked(_locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        assert!(!queue.quarantine(id, Place::Active).unwrap());
        assert_eq!(queue.ids().unwrap().len(), 1);
    }

    #[test]
    fn the_words_follow_what_quarantine_did() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let held = commit(&queue, b"x\n");
        let free = commit(&queue, b"y\n");
        for id in [held, free] {
            fs::write(queue.path(ENV, id.as_str()), b"garbage").unwrap();
        }
        let runner = fs::File::open(queue.path(DATA, held.as_str())).unwrap();
        runner.lock().unwrap();
        let moved = queue.quarantine(held, Place::Active).unwrap();
        assert_eq!(disposition(moved), "left in place");
        let moved = queue.quarantine(free, Place::Active).unwrap();
        assert_eq!(disposition(moved), "moved to corrupt/");
        assert!(queue.path(CORRUPT, &format!("{free}.env")).exists());
    }
}
