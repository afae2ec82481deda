//! Taking a message for delivery: the kernel lock on its data file, its envelope read from its own
//! file, and the message's removal once it is done.
//!
//! The lock is an exclusive `flock` on `data/ID`, a file that is never replaced, taken with
//! try-lock semantics: a busy message is skipped, never waited for, and a lock dies with its
//! process. Whatever a runner does to a message it does while a [`Locked`], or the [`Leftover`] it
//! leaves, holds the lock. The message is read through the descriptor that holds the lock
//! ([`MessageData`]) and removed by name in the open queue directories, so nothing is opened by
//! path again once the message is taken.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use nix::unistd::{UnlinkatFlags, unlinkat};

use super::envelope::Envelope;
use super::error::nix_error;
use super::state::Reservation;
use super::{DATA, Place, Queue, QueueError, QueueId, TMP, Unusable};

impl Queue {
    /// Whether a runner holds `id` right now, asked with a shared try-lock held for an instant.
    /// A data file this process cannot open is taken as not held: nobody delivers it.
    pub(super) fn probe_lock(&self, id: QueueId) -> bool {
        match self.open_own(&self.data, id.as_str()) {
            Ok(Some((file, _))) => {
                matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
            }
            _ => false,
        }
    }

    /// Takes an active message for delivery: an exclusive lock on its data file, then its
    /// envelope, both read from their own files. Damage is [`LockAttempt::Corrupt`], for
    /// `quarantine`; a file this process cannot use is [`QueueError::Inaccessible`], for the
    /// message to be reported and left where it is. No error here concerns more than this
    /// message. A held message is [`LockAttempt::Gone`] here: no run delivers it.
    pub fn try_lock(&self, id: QueueId) -> Result<LockAttempt<'_>, QueueError> {
        self.try_lock_in(id, Place::Active)
    }

    /// [`Queue::try_lock`] for the message whose envelope is in `place`: the administrator's
    /// changes take held messages too, under the same lock as delivery.
    pub fn try_lock_in(&self, id: QueueId, place: Place) -> Result<LockAttempt<'_>, QueueError> {
        let data_path = self.path(DATA, id.as_str());
        let env_path = self.path(place.dir(), id.as_str());
        let inaccessible = |reason| Err(QueueError::Inaccessible { reason });
        let data = match self.open_own(&self.data, id.as_str()) {
            Ok(Some((file, _))) => file,
            Ok(None) => {
                return Ok(if fs::symlink_metadata(&env_path).is_ok() {
                    LockAttempt::Corrupt("message data file is missing".to_string())
                } else {
                    LockAttempt::Gone
                });
            }
            Err(refusal) => {
                return inaccessible(self.refusal_text(refusal, &data_path, id, place));
            }
        };
        match data.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(LockAttempt::Busy),
            Err(fs::TryLockError::Error(e)) => {
                return inaccessible(format!("cannot lock {}: {e}", data_path.display()));
            }
        }
        let bytes = match self.read_envelope(id, place) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(LockAttempt::Gone),
            Err(Unusable::Damaged(reason)) => return Ok(LockAttempt::Corrupt(reason)),
            Err(Unusable::Inaccessible(reason)) => return inaccessible(reason),
        };
        match Envelope::parse(&bytes) {
            Ok(envelope) if envelope.id == id => Ok(LockAttempt::Locked(Locked {
                queue: self,
                id,
                place,
                data: Arc::new(data),
                envelope,
                reservation: None,
            })),
            Ok(envelope) => Ok(LockAttempt::Corrupt(format!(
                "envelope names id {}, file is {id}",
                envelope.id
            ))),
            Err(e) => Ok(LockAttempt::Corrupt(e.to_string())),
        }
    }
}

/// The outcome of `Queue::try_lock`.
#[derive(Debug)]
pub enum LockAttempt<'q> {
    Locked(Locked<'q>),
    /// Another process holds it.
    Busy,
    /// It left the queue meanwhile.
    Gone,
    /// Its files are damaged (see [`Unusable::Damaged`]); `quarantine` it.
    Corrupt(String),
}

/// A message held for delivery. The lock lasts as long as this value, and as long as any
/// [`MessageData`] read from it.
#[derive(Debug)]
pub struct Locked<'q> {
    pub(super) queue: &'q Queue,
    id: QueueId,
    /// Where its envelope is: a state is written back there, and it leaves from there.
    pub(super) place: Place,
    /// The open data file: its descriptor holds the lock, and the message is read through it.
    data: Arc<File>,
    envelope: Envelope,
    /// Room set aside for the next state, from [`Locked::reserve`].
    reservation: Option<Box<Reservation<'q>>>,
}

impl<'q> Locked<'q> {
    pub fn id(&self) -> QueueId {
        self.id
    }

    pub fn place(&self) -> Place {
        self.place
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn envelope_mut(&mut self) -> &mut Envelope {
        &mut self.envelope
    }

    /// The message bytes, read from the start through the file that holds the lock: the file is
    /// not opened again. The last holder of the file closes it, so a caller that wants the
    /// closing done by [`Locked::remove`] drops every reader first.
    pub fn data(&self) -> MessageData {
        MessageData {
            file: Arc::clone(&self.data),
            offset: 0,
            at_end: false,
        }
    }

    /// Sets aside `bytes` on the queue's file system for the next [`Locked::save`]: a file under
    /// `tmp/` written whole now, overwritten in place, synced and renamed over the envelope then.
    /// A file system takes the space of a write when it is made (delayed allocation reserves
    /// it), so a state written into the file needs no new space and can be recorded on a disk
    /// that filled up in between; syncing the zeros would only cost a disk flush per message.
    /// On failure nothing is left in `tmp/`.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), QueueError> {
        // A reservation left from before goes first: it has the same name.
        self.reservation = None;
        let name = format!("{}.env", self.id);
        let path = self.queue.path(TMP, &name);
        let file = nix::fcntl::openat(
            &self.queue.tmp,
            name.as_str(),
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map(File::from)
        .map_err(|e| nix_error("cannot create", path.clone())(e))?;
        let reservation = Box::new(Reservation {
            tmp: &self.queue.tmp,
            name,
            path,
            file,
            renamed: false,
        });
        reservation.fill(bytes)?;
        self.reservation = Some(reservation);
        Ok(())
    }

    /// Writes the envelope back, atomically: into the reservation when there is one. On
    /// failure the old envelope stands and nothing is left in `tmp/`.
    pub fn save(&mut self) -> Result<(), QueueError> {
        match self.reservation.take() {
            Some(mut reservation) => reservation.commit(self.queue, self.place, &self.envelope),
            None => self.queue.replace_envelope(self.place, &self.envelope),
        }
    }

    /// Takes the message out of the queue: envelope first (the instant it leaves), then data,
    /// both by name in the open queue directories; the lock is released after both.
    pub fn remove(self) -> Result<(), QueueError> {
        self.take_out()?.remove()
    }

    /// The first half of [`Locked::remove`]: moves the envelope out of `env/` (or `hold/`) to
    /// `tmp/ID.gone`,
    /// the instant the message leaves the queue, and keeps its data file locked for
    /// [`Leftover::remove`]. A rename frees no blocks: on a disk that discards freed blocks it
    /// costs a fraction of an unlink, and this instant is what delivery waits for.
    pub fn take_out(self) -> Result<Leftover<'q>, QueueError> {
        let name = self.id.as_str();
        let path = || self.queue.path(self.place.dir(), name);
        let dir = self.queue.dir_of(self.place);
        // A rename moves whatever has the name; only an envelope file may go.
        let stat = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| nix_error("cannot remove", path())(e))?;
        if nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT
            != nix::sys::stat::SFlag::S_IFREG
        {
            return Err(QueueError::Io {
                action: "cannot remove",
                path: path(),
                source: io::Error::other("not a regular file"),
            });
        }
        let gone = format!("{name}.gone");
        nix::fcntl::renameat(dir, name, &self.queue.tmp, gone.as_str())
            .map_err(|e| nix_error("cannot remove", path())(e))?;
        Ok(Leftover {
            queue: self.queue,
            id: self.id,
            data: self.data,
            gone,
            reservation: self.reservation,
        })
    }
}

/// A message that has left the queue, its data still locked. Dropped without
/// [`Leftover::remove`], its files stay for `sweep_tmp` and `sweep_orphans`.
#[derive(Debug)]
pub struct Leftover<'q> {
    queue: &'q Queue,
    id: QueueId,
    data: Arc<File>,
    /// The old envelope's name under `tmp/`.
    gone: String,
    /// Room that was set aside and not needed, removed with the rest.
    reservation: Option<Box<Reservation<'q>>>,
}

impl Leftover<'_> {
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Unlinks the old envelope and the data file, then releases the lock.
    pub fn remove(self) -> Result<(), QueueError> {
        // A sweep of another run may have taken the old envelope already: its mtime is the
        // last state change, possibly older than the grace period.
        match unlinkat(
            &self.queue.tmp,
            self.gone.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(nix_error("cannot remove", self.queue.path(TMP, &self.gone))(e)),
        }
        drop(self.reservation);
        let name = self.id.as_str();
        unlinkat(&self.queue.data, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| nix_error("cannot remove", self.queue.path(DATA, name))(e))?;
        drop(self.data);
        Ok(())
    }
}

/// A locked message's bytes, from [`Locked::data`]. Each reader keeps its own position (reads
/// are positioned), so readers of one message do not disturb each other.
#[derive(Debug)]
pub struct MessageData {
    file: Arc<File>,
    offset: u64,
    /// Data files never change after commit, so an end once seen needs no second look.
    at_end: bool,
}

impl MessageData {
    /// A reader of a data file opened without its lock (see `Queue::peek_data`).
    pub(super) fn unlocked(file: File) -> MessageData {
        MessageData {
            file: Arc::new(file),
            offset: 0,
            at_end: false,
        }
    }
}

impl Read for MessageData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at_end || buf.is_empty() {
            return Ok(0);
        }
        let read = self.file.read_at(buf, self.offset)?;
        self.offset += read as u64;
        self.at_end = read == 0;
        Ok(read)
    }
}

/// A message sent in several SMTP transactions is read once for each.
impl Seek for MessageData {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        let offset = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::Current(delta) => self.offset.checked_add_signed(delta),
            SeekFrom::End(delta) => self.file.metadata()?.len().checked_add_signed(delta),
        };
        let offset = offset
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.offset = offset;
        self.at_end = false;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::ENV;
    use crate::queue::testing::commit;

    #[test]
    fn commit_lock_save_remove() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"Subject: x\n\nhello\n");
        let data_mode = fs::metadata(queue.path(DATA, id.as_str()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(data_mode & 0o777, 0o600);
        assert_eq!(queue.ids().unwrap(), vec![(id, Place::Active)]);

        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        assert!(matches!(queue.try_lock(id).unwrap(), LockAttempt::Busy));
        assert!(
            queue
                .scan()
                .unwrap()
                .inspect(id, Place::Active)
                .unwrap()
                .locked
        );
        locked.envelope_mut().recipients[0].attempts = 3;
        locked.save().unwrap();
        let mut body = String::new();
        locked.data().read_to_string(&mut body).unwrap();
        assert_eq!(body, "Subject: x\n\nhello\n");
        locked.remove().unwrap();
        assert!(matches!(queue.try_lock(id).unwrap(), LockAttempt::Gone));
        assert!(queue.ids().unwrap().is_empty());
    }

    #[test]
    fn a_locked_message_is_read_and_removed_through_what_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        let queue = Queue::open(&root).unwrap();
        let id = commit(&queue, b"Subject: y\n\nbody\n");
        let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        // The queue moves: removal by name in the open directories still finds the message.
        let moved = dir.path().join("moved");
        fs::rename(&root, &moved).unwrap();
        let (mut first, mut second) = (locked.data(), locked.data());
        let mut head = [0u8; 10];
        first.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"Subject: y");
        let mut whole = String::new();
        second.read_to_string(&mut whole).unwrap();
        assert_eq!(
            whole, "Subject: y\n\nbody\n",
            "each reader has its own position"
        );
        locked.remove().unwrap();
        assert!(!moved.join(ENV).join(id.as_str()).exists());
        assert!(!moved.join(DATA).join(id.as_str()).exists());
        let mut rest = String::new();
        first.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "\n\nbody\n", "a reader outlives the removal");
    }

    #[test]
    fn saved_state_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let LockAttempt::Locked(mut locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked.envelope_mut().recipients[0].reason = "450 try later".into();
        locked.save().unwrap();
        drop(locked);
        let seen = queue.scan().unwrap().inspect(id, Place::Active).unwrap();
        assert!(!seen.locked);
        assert_eq!(seen.envelope.unwrap().recipients[0].reason, "450 try later");
    }

    #[test]
    fn a_message_leaves_the_queue_before_its_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        let gone = dir.path().join(TMP).join(format!("{id}.gone"));
        let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        let leftover = locked.take_out().unwrap();
        assert!(queue.ids().unwrap().is_empty(), "out of the queue");
        assert!(gone.exists() && queue.path(DATA, id.as_str()).exists());
        assert!(matches!(queue.try_lock(id).unwrap(), LockAttempt::Busy));
        leftover.remove().unwrap();
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
        assert!(!queue.path(DATA, id.as_str()).exists());

        // Only an envelope file is moved: anything else in its place stays, and so does the
        // message.
        let id = commit(&queue, b"y\n");
        let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        let env = queue.path(ENV, id.as_str());
        fs::remove_file(&env).unwrap();
        fs::create_dir(&env).unwrap();
        assert!(locked.take_out().is_err());
        assert!(env.is_dir());
        assert!(queue.path(DATA, id.as_str()).exists());
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
    }
}
