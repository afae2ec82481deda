//! Administrative hold: moving a locked message's envelope between `env/` and `hold/`, and
//! reading a message's bytes for a person without taking it from a runner.
//!
//! A message goes on hold at the instant `rename(env/ID, hold/ID)` reaches the disk, and comes
//! back at the instant of the reverse rename; both are made by the holder of the message's lock,
//! never replace a file already there, and are followed by a sync of both directories, so a
//! power cut leaves the message in one place or the other, never in both and never in neither.
//! No run plans or locks from `hold/` (see `Queue::try_lock`), so a held message is attempted by
//! nothing, whatever a run names; it stays listed and stays in the per-domain record, which
//! names held messages too. The listing index goes stale by the rename itself.
//!
//! Reading for a person ([`Queue::peek_data`]) takes no lock: the data file never changes after
//! commit, so what is read is the message whether or not a runner is delivering it. The file is
//! opened like every queue file: no link followed, no wait, only the owner's regular file.

use super::envelope::Envelope;
use super::error::{io_error, nix_error};
use super::files::rename_noreplace;
use super::lock::{Locked, MessageData};
use super::{DATA, Place, Queue, QueueError, QueueId, Unusable};

impl Locked<'_> {
    /// Moves the envelope to `place` (`hold/` or back to `env/`). Nothing happens when it is
    /// there already. On failure the message stays where it was.
    pub fn move_to(&mut self, place: Place) -> Result<(), QueueError> {
        if self.place == place {
            return Ok(());
        }
        let name = self.id().as_str().to_string();
        let queue = self.queue;
        let (from, to) = (queue.dir_of(self.place), queue.dir_of(place));
        let before = self.place;
        rename_noreplace(from, name.as_str(), to, name.as_str())
            .map_err(|e| nix_error("cannot move", queue.path(before.dir(), &name))(e))?;
        self.place = place;
        for dir in [place, before] {
            queue
                .dir_of(dir)
                .sync_all()
                .map_err(io_error("cannot sync", queue.root.join(dir.dir())))?;
        }
        Ok(())
    }
}

impl Queue {
    /// The envelope of message `id` in `place`, read without its lock; `None` when it is not
    /// there.
    pub fn read_envelope_of(
        &self,
        id: QueueId,
        place: Place,
    ) -> Result<Option<Envelope>, Unusable> {
        let Some(bytes) = self.read_envelope(id, place)? else {
            return Ok(None);
        };
        match Envelope::parse(&bytes) {
            Ok(envelope) if envelope.id == id => Ok(Some(envelope)),
            Ok(envelope) => Err(Unusable::Damaged(format!(
                "envelope names id {}, file is {id}",
                envelope.id
            ))),
            Err(e) => Err(Unusable::Damaged(e.to_string())),
        }
    }

    /// The bytes of message `id`, read without its lock; `None` when it has no data file.
    pub fn peek_data(&self, id: QueueId) -> Result<Option<MessageData>, QueueError> {
        match self.open_own(&self.data, id.as_str()) {
            Ok(Some((file, _))) => Ok(Some(MessageData::unlocked(file))),
            Ok(None) => Ok(None),
            Err(refusal) => Err(QueueError::Inaccessible {
                reason: self.refusal_text(
                    refusal,
                    &self.path(DATA, id.as_str()),
                    id,
                    Place::Active,
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;

    use super::*;
    use crate::queue::testing::commit;
    use crate::queue::{ENV, HOLD, LockAttempt};

    #[test]
    fn a_held_message_is_no_runners_and_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"Subject: h\n\nheld\n");
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.move_to(Place::Held).unwrap();
        locked.move_to(Place::Held).unwrap();
        assert_eq!(queue.ids().unwrap(), vec![(id, Place::Held)]);
        // State written while held stays held.
        locked.envelope_mut().recipients[0].attempts = 2;
        locked.save().unwrap();
        drop(locked);
        assert!(!queue.path(ENV, id.as_str()).exists());
        assert!(matches!(queue.try_lock(id).unwrap(), LockAttempt::Gone));

        let LockAttempt::Locked(mut locked) = queue.try_lock_in(id, Place::Held).unwrap() else {
            panic!("not locked")
        };
        assert_eq!(locked.envelope().recipients[0].attempts, 2);
        assert!(matches!(
            queue.try_lock_in(id, Place::Held).unwrap(),
            LockAttempt::Busy
        ));
        let mut body = String::new();
        queue
            .peek_data(id)
            .unwrap()
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, "Subject: h\n\nheld\n", "read while locked");
        locked.move_to(Place::Active).unwrap();
        drop(locked);
        assert_eq!(queue.ids().unwrap(), vec![(id, Place::Active)]);
        assert_eq!(fs::read_dir(dir.path().join(HOLD)).unwrap().count(), 0);
    }

    #[test]
    fn a_held_message_is_removed_from_hold() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.move_to(Place::Held).unwrap();
        locked.remove().unwrap();
        assert!(queue.ids().unwrap().is_empty());
        assert!(queue.peek_data(id).unwrap().is_none());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_move_never_replaces_an_envelope_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        fs::write(queue.path(HOLD, id.as_str()), b"other").unwrap();
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        assert!(locked.move_to(Place::Held).is_err());
        assert_eq!(locked.place(), Place::Active);
        assert!(queue.path(ENV, id.as_str()).exists());
        assert_eq!(fs::read(queue.path(HOLD, id.as_str())).unwrap(), b"other");
    }
}
