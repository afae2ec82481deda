//! The queue directory: the only code that creates, renames, links or deletes queue files.
//!
//! # Layout
//!
//! ```text
//! QUEUE/tmp/       files being written, room set aside for a state, envelopes of messages
//!                  that left the queue; nothing here is a message
//! QUEUE/data/ID    the message bytes: written once, never changed, never replaced
//! QUEUE/env/ID     the envelope of an active message (see `envelope`), replaced by rename
//! QUEUE/hold/ID    the envelope of a message on administrative hold
//! QUEUE/corrupt/   what could not be read, moved aside for a human: ID.env, ID.data
//! QUEUE/index      an advisory copy of every envelope, for listings (see `index`)
//! QUEUE/domains/   the per-domain record: for each recipient domain, the ids queued for it,
//!                  so that per-domain passes read only that domain's envelopes (see `domains`)
//! QUEUE/flush/     lock files that order the queue runs ETRN starts; never a message
//! ```
//!
//! # States of a message, by the files that exist
//!
//! | state                  | tmp/ID.data | data/ID | env/ID | hold/ID | ID in domains/ |
//! |------------------------|-------------|---------|--------|---------|----------------|
//! | being received         | yes         | -       | -      | -       | -              |
//! | data committed         | -           | yes     | -      | -       | maybe          |
//! | queued (active)        | -           | yes     | yes    | -       | yes (*)        |
//! | held                   | -           | yes     | -      | yes     | yes (*)        |
//! | being removed          | -           | yes     | -      | -       | maybe          |
//! | gone                   | -           | -       | -      | -       | maybe          |
//!
//! "data committed" and "being removed" look alike on disk: data without an envelope is never a
//! message. It is either a submission that died between its two renames or a removal that died
//! before its data was unlinked, and `sweep` deletes it once nobody holds its lock. A removal
//! moves the envelope to `tmp/ID.gone` before unlinking it; while a runner is writing a new
//! state, `tmp/ID.env` holds it (or the room reserved for it, see `Locked::reserve`).
//!
//! (*) Whenever `domains/.list` names this boot of the system: in the file of each of its
//! recipients' domains, or in `domains/.unknown` when its envelope could not be read as the
//! record was rebuilt. "maybe" is an id the record still names after its message left, or
//! before it arrived: harmless, since a pass reads the envelope it names, and dropped by the
//! next compaction.
//!
//! # Commit instants
//!
//! - A message is queued at the instant `rename(tmp/ID.env, env/ID)` reaches the disk: before it,
//!   data is fsynced, renamed into `data/`, and `data/` is fsynced, and the id is appended to the
//!   per-domain record (not synced: see `domains`); after it, `env/` is fsynced, and only then
//!   does `queue-enqueue` exit 0.
//! - Delivery state changes at the instant `rename(tmp/ID.env, env/ID)` replaces the envelope
//!   (written and fsynced first), so a reader sees the old state or the new one, never a mixture.
//!   A write that fails leaves the old state and nothing in `tmp/`.
//! - A message leaves the queue at the instant `rename(env/ID, tmp/ID.gone)` (or from `hold/`)
//!   takes its envelope away; `tmp/ID.gone` and `data/ID` are unlinked after it.
//! - A message goes on hold at the instant `rename(env/ID, hold/ID)` reaches the disk, and is
//!   released by the reverse rename; both are made under its lock and never replace a file.
//!
//! # Invariants
//!
//! - Every file is created 0600 with `O_NOFOLLOW`; directories are 0700; no symlink is followed.
//! - `data/ID` is the message's lock file: runners take an exclusive `flock` with try-lock
//!   semantics and skip what is busy. It is never replaced, so a lock always names the message.
//! - The envelope is only replaced or removed by the holder of the lock.
//! - Renames into `data/` and `env/` never overwrite (`RENAME_NOREPLACE`): an id collision fails
//!   the submission instead of replacing a message.
//! - The queue has one owner, the owner of `QUEUE`. Every queue file is the owner's: a program
//!   started by root on a queue owned by another user becomes that user (and its group, with no
//!   supplementary groups) before it opens the queue ([`become_owner`]), so what it creates is
//!   the owner's too.
//! - Queue files are opened without following a link and without waiting (`O_NOFOLLOW |
//!   O_NONBLOCK`), then examined (`fstat`): only a regular file of the owner is read, and an
//!   envelope at most [`MAX_BYTES`](crate::queue::envelope::MAX_BYTES).
//! - What a pass cannot use is that message's trouble alone ([`Unusable`]): damage (the owner's
//!   own regular file, read whole, that is not a message: torn, garbled, too big, its data
//!   missing) is moved to `corrupt/`, never deleted and never bounced; an access problem (not a
//!   regular file, a link, another user's file, permission denied, an I/O error) is left where it
//!   is and reported on every pass until a human fixes it, since a process that cannot read a
//!   file cannot tell whether it is damaged.
//! - Delivery decisions (the plan of a run, `try_lock`) come from the directories and the
//!   envelope files only; the index serves listings. The per-domain record only chooses which
//!   envelope files a per-domain pass reads (`scan_domains`), and may name extra ids but never
//!   leaves out a queued message of the domains asked: each commit records its id before its
//!   envelope's rename, under the queue directory's shared lock; a commit that cannot record
//!   makes the record unbelieved (`domains/.list` removed) before the rename; a record that is
//!   missing, damaged, another user's, not a regular file or of another boot is never believed,
//!   and the pass that meets it reads every envelope file and rebuilds it.
//! - Envelopes keep the recipients they were committed with; only their state changes. So the
//!   domains recorded at commit stay right for the message's life.
//! - Listing streams the directory; only the ids are held in memory, to sort them.
//! - `index` is only believed while `env/`, `hold/` and `data/` keep the stamps it records, and
//!   is only replaced by rename from `tmp/`; deleting it is always safe. So is deleting
//!   `domains/`: the next per-domain pass reads every envelope and makes it again.
//!
//! # Where the code lives
//!
//! - `id`: queue ids and places; `error`: a message a pass cannot use, and the helpers that
//!   make a [`QueueError`]; `owner`: whose the files are.
//! - `files`: opening queue files without trusting them, and the small-file and rename helpers.
//! - `draft`: a message entering the queue, and its commit.
//! - `lock`: taking a message for delivery, reading it, removing it; `state`: writing its next
//!   state; `hold`: administrative hold and reading a message for a person; `quarantine`:
//!   moving damage to `corrupt/`; `sweep`: what died half way.
//! - `scan`: passes over the queue, with read-ahead and the index; `proc_locks`: the kernel's lock
//!   table.
//! - `envelope`, `index`, `domains`: the three file formats; `selection`: `-R`, `-S`, `-I`.
//!
//! # Known limits
//!
//! Removal is not fsynced: after a power cut a delivered message may be delivered again (SMTP
//! promises at least once, never at most once). A process killed outright (`kill -9`, a crash)
//! delivers again at most what was in flight at that instant: at most 2 × `-j` messages of a
//! `queue-run` (`-j` when the server does not pipeline): per connection, the message whose final
//! dot the server may have acknowledged before the reply was read, and, when the one before it
//! had recipients left open, that one while its new state is being written. A delivered
//! message with nothing left open has left the queue before its connection takes another. A
//! graceful stop (SIGTERM, SIGINT, SIGHUP) delivers nothing twice. A state written into a
//! reservation needs no new blocks on file systems that overwrite in place (ext4, xfs, tmpfs);
//! on copy-on-write ones (btrfs, zfs) a full disk may still refuse it. A listing takes a shared
//! lock for an instant to learn whether a runner holds a message; a runner that tries that
//! message in the same instant skips it until its next pass.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sysexits::{Status, Sysexit};
use error::{io_error, nix_error};

mod domains;
mod draft;
pub mod envelope;
mod error;
mod files;
mod hold;
mod id;
pub mod index;
mod lock;
mod owner;
mod proc_locks;
mod quarantine;
mod scan;
pub mod selection;
mod state;
mod sweep;

/// A directory entry's status, without following a link.
fn entry_of(dir: &File, id: QueueId) -> nix::Result<nix::sys::stat::FileStat> {
    nix::sys::stat::fstatat(dir, id.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// True when `dir` has no entry named `id`; any other answer, an error included, counts as one
/// being there, so that nothing is taken for gone that might not be.
fn is_absent(dir: &File, id: QueueId) -> bool {
    matches!(entry_of(dir, id), Err(nix::Error::ENOENT))
}

#[cfg(test)]
mod testing;

pub use domains::RecordError;
pub use draft::Draft;
pub use error::Unusable;
pub use id::{Place, QueueId};
pub use lock::{Leftover, LockAttempt, Locked, MessageData};
pub use owner::{become_owner, describe_user, invoking_uid};
pub use quarantine::disposition;
pub use scan::{Batches, Inspection, RebuildOutcome, Scan};
pub use sweep::SWEEP_GRACE;

const TMP: &str = "tmp";
const DATA: &str = "data";
const ENV: &str = "env";
const HOLD: &str = "hold";
const CORRUPT: &str = "corrupt";
const INDEX: &str = "index";
const FLUSH: &str = "flush";

/// A queue failure, with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: is a symbolic link; the queue follows none", path.display())]
    Symlink { path: PathBuf },
    #[error("queue id {id} is already taken; submit again")]
    IdCollision { id: QueueId },
    /// One message's file that this process cannot use: left in place, tried again later.
    #[error("{reason}")]
    Inaccessible { reason: String },
    #[error(
        "{recipients} recipients are more than one message may carry: its envelope could grow \
         to {largest} bytes, and the most an envelope may hold is {} bytes; send it in parts",
        envelope::MAX_BYTES
    )]
    TooManyRecipients { recipients: usize, largest: u64 },
    #[error("{} belongs to {owner}; run this as that user or as root", path.display())]
    NotOwner { path: PathBuf, owner: String },
    #[error("cannot become {owner}, the owner of {}: {source}", path.display())]
    CannotBecomeOwner {
        path: PathBuf,
        owner: String,
        source: nix::Error,
    },
    /// The per-domain record could not be kept (see `domains`); try again later.
    #[error("{}: {reason}; try again later", path.display())]
    Busy { path: PathBuf, reason: RecordError },
}

impl Sysexit for QueueError {
    fn status(&self) -> Status {
        match self {
            QueueError::Io { source, .. } => Status::of_io(source),
            QueueError::Symlink { .. } => Status::CantCreat,
            QueueError::IdCollision { .. } => Status::TempFail,
            QueueError::Inaccessible { .. } => Status::TempFail,
            QueueError::TooManyRecipients { .. } => Status::DataErr,
            QueueError::NotOwner { .. } | QueueError::CannotBecomeOwner { .. } => Status::NoPerm,
            QueueError::Busy { .. } => Status::TempFail,
        }
    }
}

/// An open queue directory.
#[derive(Debug)]
pub struct Queue {
    root: PathBuf,
    /// The uid every queue file must have: the owner of `root`.
    owner: u32,
    top: File,
    tmp: File,
    data: File,
    env: File,
    hold: File,
}

impl Queue {
    /// Opens the queue at `root`, creating the layout (mode 0700) where it is missing.
    pub fn open(root: &Path) -> Result<Queue, QueueError> {
        for sub in ["", TMP, DATA, ENV, HOLD, CORRUPT] {
            let path = root.join(sub);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(QueueError::Symlink { path });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)
                    .map_err(io_error("cannot create queue directory", &path))?,
                Err(e) => return Err(io_error("cannot examine", path)(e)),
            }
        }
        let open_dir = |sub: &str| {
            let path = root.join(sub);
            OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_error("cannot open queue directory", path))
        };
        let top = open_dir("")?;
        let owner = top
            .metadata()
            .map_err(io_error("cannot examine", root))?
            .uid();
        Ok(Queue {
            root: root.to_path_buf(),
            owner,
            top,
            tmp: open_dir(TMP)?,
            data: open_dir(DATA)?,
            env: open_dir(ENV)?,
            hold: open_dir(HOLD)?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, sub: &str, name: &str) -> PathBuf {
        self.root.join(sub).join(name)
    }

    /// The ids of active and held messages, oldest first. Only names are read here.
    pub fn ids(&self) -> Result<Vec<(QueueId, Place)>, QueueError> {
        let mut ids = Vec::new();
        for (dir, sub, place) in [
            (&self.env, ENV, Place::Active),
            (&self.hold, HOLD, Place::Held),
        ] {
            self.each_id(dir, sub, |id| ids.push((id, place)))?;
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Calls `each` with every queue id named in the directory `sub` (open as `dir`), in
    /// directory order, keeping none: a pass over a million names holds nothing per name.
    fn each_id(
        &self,
        dir: &File,
        sub: &str,
        mut each: impl FnMut(QueueId),
    ) -> Result<(), QueueError> {
        use nix::fcntl::OFlag;
        let path = self.root.join(sub);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut names = nix::dir::Dir::openat(dir, ".", flags, nix::sys::stat::Mode::empty())
            .map_err(nix_error("cannot read", path.clone()))?;
        for entry in names.iter() {
            let entry = entry.map_err(nix_error("cannot read", path.clone()))?;
            if let Some(id) = entry.file_name().to_str().ok().and_then(QueueId::parse) {
                each(id);
            }
        }
        Ok(())
    }

    /// The bytes free on the queue's file system for an unprivileged writer: what new mail may
    /// use before delivery state and bounces have no room (see `queue_min_free`). A file system
    /// that counts inodes and has none left reports 0, since no file can be created there.
    pub fn free_space(&self) -> Result<u64, QueueError> {
        let stats = nix::sys::statvfs::fstatvfs(&self.tmp).map_err(nix_error(
            "cannot measure the free space of",
            self.root.join(TMP),
        ))?;
        if stats.files() > 0 && stats.files_available() == 0 {
            return Ok(0);
        }
        // Both are narrower than 64 bits on some targets: widened before they are multiplied.
        let (blocks, size) = (
            stats.blocks_available() as u64,
            stats.fragment_size() as u64,
        );
        Ok(blocks.saturating_mul(size))
    }

    /// A lock file under `flush/` that orders the queue runs ETRN starts (see `smtpd::flush`),
    /// created empty on first use and never removed, so a lock on it always means the same
    /// thing. `name` is a node and a role, `customer.example.run`; a name that could leave the
    /// directory is refused.
    pub fn flush_lock(&self, name: &str) -> Result<File, QueueError> {
        let dir = self.root.join(FLUSH);
        let path = dir.join(name);
        if name.starts_with('.') || name.contains('/') || name.is_empty() {
            return Err(io_error("not a lock file name:", path)(io::Error::from(
                io::ErrorKind::InvalidInput,
            )));
        }
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("cannot create queue directory", dir)(e)),
        }
        if fs::symlink_metadata(&dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(QueueError::Symlink { path: dir });
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_error("cannot open", path))
    }
}

impl Queue {
    /// The open directory of the envelopes in `place`.
    fn dir_of(&self, place: Place) -> &File {
        match place {
            Place::Active => &self.env,
            Place::Held => &self.hold,
        }
    }
}

/// Kept with the layout, so that `id` depends on nothing else in the queue.
impl Place {
    /// The directory of the envelopes of messages in this place.
    fn dir(self) -> &'static str {
        match self {
            Place::Active => ENV,
            Place::Held => HOLD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        Queue::open(&root).unwrap();
        for sub in ["", "tmp", "data", "env", "hold", "corrupt"] {
            let mode = fs::metadata(root.join(sub)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
    }

    #[test]
    fn symlinked_subdirectory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("q");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/tmp", root.join("env")).unwrap();
        assert!(matches!(
            Queue::open(&root),
            Err(QueueError::Symlink { .. })
        ));
    }
}
