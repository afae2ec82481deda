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
//! - A message leaves the queue at the instant `rename(env/ID, tmp/ID.gone)` takes its envelope
//!   away; `tmp/ID.gone` and `data/ID` are unlinked after it.
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

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{
    DirBuilderExt, DirEntryExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, RenameFlags, renameat2};
use nix::unistd::{Gid, Uid, UnlinkatFlags, User, unlinkat};

use crate::sysexits::{Status, Sysexit};
use envelope::Envelope;
use index::{DirStamp, Entry, IndexWriter, Records, Stamps, Table};
use selection::DomainPattern;

mod domains;
pub mod envelope;
pub mod index;
pub mod selection;

const TMP: &str = "tmp";
const DATA: &str = "data";
const ENV: &str = "env";
const HOLD: &str = "hold";
const CORRUPT: &str = "corrupt";
const INDEX: &str = "index";
const FLUSH: &str = "flush";

/// How long a file in `tmp/`, or data without an envelope, must sit unlocked before a sweep
/// deletes it.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);

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
    Busy { path: PathBuf, reason: String },
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

/// Why one message cannot be used by this pass. Either way the pass goes on with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// The owner's own regular file, read whole, is not a message: torn, garbled, too big, its
    /// data file missing. Moved to `corrupt/` for a human.
    #[error("{0}")]
    Damaged(String),
    /// The file cannot be read as one of the queue's own: not a regular file, a symbolic link,
    /// another user's, permission denied, an I/O error. Left in place and reported on every pass
    /// until a human fixes it: a process that cannot read a file cannot call it damaged.
    #[error("{0}")]
    Inaccessible(String),
}

/// Why a queue file was not opened.
enum Refusal {
    Link,
    NotRegular(&'static str),
    Foreign(u32),
    Io(&'static str, io::Error),
}

/// The user this process was started as, when [`become_owner`] changed it.
static INVOKER: OnceLock<u32> = OnceLock::new();

/// The user who started this program, before [`become_owner`] changed it: a submission names
/// this user as its sender and in its `Received:` field.
pub fn invoking_uid() -> u32 {
    INVOKER
        .get()
        .copied()
        .unwrap_or_else(|| nix::unistd::getuid().as_raw())
}

/// Makes this process the owner of the queue at `root` before anything in it is opened, so that
/// every file it creates, and the mail log it opens afterwards, belongs to the queue's owner.
///
/// Run by the owner (or on a queue that does not exist yet, which this process will create and
/// so own) it does nothing. Run by root on another user's queue, it takes that user's id, its
/// login group (the directory's group when the user has no account entry) and no supplementary
/// groups, for good: nothing the program does later runs as root. Run by anyone else it refuses,
/// since the queue's files are the owner's alone. Call it while the program has one thread.
pub fn become_owner(root: &Path) -> Result<(), QueueError> {
    let meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot examine", root)(e)),
    };
    let owner = Uid::from_raw(meta.uid());
    let me = nix::unistd::geteuid();
    if me == owner {
        return Ok(());
    }
    let user = User::from_uid(owner).ok().flatten();
    let name = describe_user(meta.uid());
    if !me.is_root() {
        return Err(QueueError::NotOwner {
            path: root.to_path_buf(),
            owner: name,
        });
    }
    let group = user.map_or(Gid::from_raw(meta.gid()), |user| user.gid);
    let invoker = nix::unistd::getuid().as_raw();
    let switched = nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(group, group, group))
        .and_then(|()| nix::unistd::setresuid(owner, owner, owner));
    switched.map_err(|source| QueueError::CannotBecomeOwner {
        path: root.to_path_buf(),
        owner: name,
        source,
    })?;
    let _ = INVOKER.set(invoker);
    Ok(())
}

/// `etrnq (uid 999)`, or `uid 999` when the user has no account entry.
fn describe_user(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)).ok().flatten() {
        Some(user) => format!("{} (uid {uid})", user.name),
        None => format!("uid {uid}"),
    }
}

/// The name `chown` takes for `uid`.
fn chown_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}

fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> QueueError {
    let path = path.into();
    move |source| QueueError::Io {
        action,
        path,
        source,
    }
}

fn nix_error(action: &'static str, path: PathBuf) -> impl FnOnce(nix::Error) -> QueueError {
    move |errno| QueueError::Io {
        action,
        path,
        source: io::Error::from_raw_os_error(errno as i32),
    }
}

/// A queue id: 14 characters from `[0-9A-Za-z]`, unique across processes and hosts, and ordered
/// by arrival when compared as strings. Six characters of seconds since the epoch, four of
/// microseconds, four random.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; QueueId::LEN]);

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl QueueId {
    pub const LEN: usize = 14;

    /// A fresh id for a message arriving now.
    pub fn generate() -> QueueId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut bytes = [0u8; QueueId::LEN];
        encode(now.as_secs(), &mut bytes[0..6]);
        encode(u64::from(now.subsec_micros()), &mut bytes[6..10]);
        let noise = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            h.write_u128(now.as_nanos());
            h.finish()
        };
        encode(noise, &mut bytes[10..14]);
        QueueId(bytes)
    }

    /// Accepts exactly the shape `generate` makes; anything else is not a queue file.
    pub fn parse(text: &str) -> Option<QueueId> {
        let bytes: [u8; QueueId::LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(QueueId(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??????????????")
    }
}

/// Writes `value` in base 62, most significant digit first, into exactly `out.len()` characters.
fn encode(mut value: u64, out: &mut [u8]) {
    let modulus = 62u64.pow(out.len() as u32);
    value %= modulus;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
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
    /// `data/`: passes over the whole queue call it, per-domain ones do not.
    pub fn sweep_orphans(&self, grace: Duration) -> Result<usize, QueueError> {
        let dir = self.root.join(DATA);
        let mut removed = 0;
        let mut data_ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("cannot read", &dir))? {
            let Ok(entry) = entry else { continue };
            let Some(id) = entry.file_name().to_str().and_then(QueueId::parse) else {
                continue;
            };
            data_ids.push(id);
            let has_envelope = [ENV, HOLD]
                .iter()
                .any(|sub| fs::symlink_metadata(self.path(sub, id.as_str())).is_ok());
            if !has_envelope
                && is_stale(&entry.path(), grace)
                && unlocked_then_removed(&entry.path())
            {
                removed += 1;
            }
        }
        data_ids.sort_unstable();
        domains::sweep(self, &data_ids);
        Ok(removed)
    }

    /// The ids of active and held messages, oldest first. Only names are read here.
    pub fn ids(&self) -> Result<Vec<(QueueId, Place)>, QueueError> {
        let mut ids = Vec::new();
        for (sub, place) in [(ENV, Place::Active), (HOLD, Place::Held)] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(io_error("cannot read", &dir))? {
                let entry = entry.map_err(io_error("cannot read", &dir))?;
                if let Some(id) = entry.file_name().to_str().and_then(QueueId::parse) {
                    ids.push((id, place));
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

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

    /// The stamps of the directories whose every change moves them (see `index`).
    fn stamps(&self) -> io::Result<Stamps> {
        Ok(Stamps {
            active: DirStamp::of(&self.env.metadata()?),
            held: DirStamp::of(&self.hold.metadata()?),
            data: DirStamp::of(&self.data.metadata()?),
        })
    }

    /// The index and its table, when it was made for the queue as `stamps` describe it.
    fn current_index(&self, stamps: &Stamps) -> Option<(File, Table)> {
        let (file, _) = self.open_own(&self.top, INDEX).ok()??;
        let table =
            index::read_table(&mut io::BufReader::with_capacity(256 * 1024, &file), stamps)?;
        Some((file, table))
    }

    /// Opens one queue file for reading: no link followed, no wait on a pipe or a device, and
    /// only a regular file of the queue's owner. `Ok(None)` when there is no such file.
    fn open_own(&self, dir: &File, name: &str) -> Result<Option<(File, fs::Metadata)>, Refusal> {
        self.open_own_as(dir, name, OFlag::O_RDONLY)
    }

    /// [`Queue::open_own`] with the access `O_RDONLY` or `O_RDWR`.
    fn open_own_as(
        &self,
        dir: &File,
        name: &str,
        access: OFlag,
    ) -> Result<Option<(File, fs::Metadata)>, Refusal> {
        let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = match nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(nix::Error::ELOOP) => return Err(Refusal::Link),
            // Another user's file is refused before it can be examined: ask its owner.
            Err(errno @ (nix::Error::EACCES | nix::Error::EPERM)) => {
                let stat =
                    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
                return Err(match stat {
                    Ok(stat) if stat.st_uid != self.owner => Refusal::Foreign(stat.st_uid),
                    _ => Refusal::Io("cannot open", io::Error::from_raw_os_error(errno as i32)),
                });
            }
            Err(errno) => {
                return Err(Refusal::Io(
                    "cannot open",
                    io::Error::from_raw_os_error(errno as i32),
                ));
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| Refusal::Io("cannot examine", e))?;
        let kind = meta.file_type();
        if !kind.is_file() {
            return Err(Refusal::NotRegular(if kind.is_fifo() {
                "a named pipe"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "a device"
            }));
        }
        if meta.uid() != self.owner {
            return Err(Refusal::Foreign(meta.uid()));
        }
        Ok(Some((file, meta)))
    }

    /// What a refusal to open `path`, one of message `id`'s files, tells a human, with the fix.
    fn refusal_text(&self, refusal: Refusal, path: &Path, id: QueueId, place: Place) -> String {
        let path = path.display();
        match refusal {
            Refusal::Link => format!("{path} is a symbolic link; the queue follows none"),
            Refusal::NotRegular(kind) => format!("{path} is {kind}, not a regular file"),
            Refusal::Io(action, e) => format!("{action} {path}: {e}"),
            Refusal::Foreign(uid) => format!(
                "{path} is owned by {}, not by the queue's owner {}; give the message back with: \
                 chown {}: {} {}",
                describe_user(uid),
                describe_user(self.owner),
                chown_name(self.owner),
                self.path(DATA, id.as_str()).display(),
                self.path(place.dir(), id.as_str()).display(),
            ),
        }
    }

    /// Reads a message's envelope file: at most [`envelope::MAX_BYTES`], and no read past its
    /// end record. `Ok(None)` when it is gone.
    fn read_envelope(&self, id: QueueId, place: Place) -> Result<Option<Vec<u8>>, Unusable> {
        let dir = match place {
            Place::Active => &self.env,
            Place::Held => &self.hold,
        };
        let path = || self.path(place.dir(), id.as_str());
        let (mut file, meta) = match self.open_own(dir, id.as_str()) {
            Ok(Some(opened)) => opened,
            Ok(None) => return Ok(None),
            Err(refusal) => {
                return Err(Unusable::Inaccessible(self.refusal_text(
                    refusal,
                    &path(),
                    id,
                    place,
                )));
            }
        };
        let too_big = |size: u64| {
            Unusable::Damaged(format!(
                "envelope of {size} bytes; an envelope holds at most {}",
                envelope::MAX_BYTES
            ))
        };
        if meta.len() > envelope::MAX_BYTES {
            return Err(too_big(meta.len()));
        }
        // One byte more than the file has, so that a whole small envelope is one read.
        let mut bytes = vec![0u8; meta.len() as usize + 1];
        let mut len = 0;
        loop {
            if len == bytes.len() {
                if len as u64 > envelope::MAX_BYTES {
                    return Err(too_big(len as u64));
                }
                bytes.resize((len * 2).min(envelope::MAX_BYTES as usize + 1), 0);
            }
            match file.read(&mut bytes[len..]) {
                Ok(0) => break,
                // An envelope's last record says it is whole: no read is needed to find the end.
                Ok(n) if bytes[..len + n].ends_with(b"\nend\n") => {
                    len += n;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Unusable::Inaccessible(format!(
                        "cannot read {}: {e}",
                        path().display()
                    )));
                }
            }
        }
        bytes.truncate(len);
        Ok(Some(bytes))
    }

    /// Whether a runner holds `id` right now, asked with a shared try-lock held for an instant.
    /// A data file this process cannot open is taken as not held: nobody delivers it.
    fn probe_lock(&self, id: QueueId) -> bool {
        match self.open_own(&self.data, id.as_str()) {
            Ok(Some((file, _))) => {
                matches!(file.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
            }
            _ => false,
        }
    }

    /// Takes a message for delivery: an exclusive lock on its data file, then its envelope,
    /// both read from their own files. Damage is [`LockAttempt::Corrupt`], for `quarantine`; a
    /// file this process cannot use is [`QueueError::Inaccessible`], for the message to be
    /// reported and left where it is. No error here concerns more than this message.
    pub fn try_lock(&self, id: QueueId) -> Result<LockAttempt<'_>, QueueError> {
        let data_path = self.path(DATA, id.as_str());
        let env_path = self.path(ENV, id.as_str());
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
                return inaccessible(self.refusal_text(refusal, &data_path, id, Place::Active));
            }
        };
        match data.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(LockAttempt::Busy),
            Err(fs::TryLockError::Error(e)) => {
                return inaccessible(format!("cannot lock {}: {e}", data_path.display()));
            }
        }
        let bytes = match self.read_envelope(id, Place::Active) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(LockAttempt::Gone),
            Err(Unusable::Damaged(reason)) => return Ok(LockAttempt::Corrupt(reason)),
            Err(Unusable::Inaccessible(reason)) => return inaccessible(reason),
        };
        match Envelope::parse(&bytes) {
            Ok(envelope) if envelope.id == id => Ok(LockAttempt::Locked(Locked {
                queue: self,
                id,
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

    /// Moves a damaged message to `corrupt/`, unless a runner holds it right now or its data
    /// file is not one this process may lock. Returns whether it was moved. Only damage comes
    /// here ([`Unusable::Damaged`], [`LockAttempt::Corrupt`]), never an access problem.
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

    /// Writes `envelope` under `tmp/` and renames it over the active one. On failure nothing is
    /// left in `tmp/` and the old envelope stands.
    fn replace_envelope(&self, envelope: &Envelope) -> Result<(), QueueError> {
        let id = envelope.id;
        let tmp_name = format!("{id}.env");
        let tmp_path = self.path(TMP, &tmp_name);
        write_synced(&tmp_path, &envelope.to_bytes(), true)?;
        if let Err(e) = fs::rename(&tmp_path, self.path(ENV, id.as_str())) {
            let _ = fs::remove_file(&tmp_path);
            return Err(io_error("cannot rename", tmp_path)(e));
        }
        self.env
            .sync_all()
            .map_err(io_error("cannot sync", self.root.join(ENV)))
    }
}

/// Where a message's envelope lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Active,
    Held,
}

impl Place {
    fn dir(self) -> &'static str {
        match self {
            Place::Active => ENV,
            Place::Held => HOLD,
        }
    }
}

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
    reason: String,
    /// What the rebuild came to, once it ran.
    outcome: std::sync::Mutex<Option<Result<(), String>>>,
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
    pub fn record_rebuild(&self) -> Option<(&str, Option<Result<(), String>>)> {
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
        let outcome = domains::rebuild(self.queue, census, &self.ids);
        if let Ok(mut slot) = rebuild.outcome.lock() {
            *slot = Some(outcome);
        }
    }

    /// Makes a pass over every message write a fresh index when it is due (see `for_each`).
    pub fn refreshing_index(mut self) -> Self {
        self.refresh_index = true;
        self
    }

    /// Reads each envelope from its own file, ahead of `visit` on a few threads.
    fn read_each<E>(
        &self,
        ids: &[(QueueId, Place)],
        visit: &mut impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        const CHUNK: usize = 256;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
            .min(ids.len().div_ceil(CHUNK));
        if threads <= 1 {
            for &(id, place) in ids {
                if let Some(inspection) = self.inspect(id, place) {
                    visit(inspection)?;
                }
            }
            return Ok(());
        }
        let chunks: Vec<&[(QueueId, Place)]> = ids.chunks(CHUNK).collect();
        std::thread::scope(|scope| {
            let mut receivers = Vec::with_capacity(threads);
            for worker in 0..threads {
                let (sender, receiver) = std::sync::mpsc::sync_channel(2);
                receivers.push(receiver);
                let chunks = &chunks;
                scope.spawn(move || {
                    // Worker w reads chunks w, w + threads, ...; the reader takes them round-robin,
                    // which restores the order.
                    for chunk in chunks.iter().skip(worker).step_by(threads) {
                        let read: Vec<Inspection> = chunk
                            .iter()
                            .filter_map(|&(id, place)| self.inspect(id, place))
                            .collect();
                        if sender.send(read).is_err() {
                            return;
                        }
                    }
                });
            }
            for index in 0..chunks.len() {
                let Ok(read) = receivers[index % threads].recv() else {
                    break;
                };
                for inspection in read {
                    visit(inspection)?;
                }
            }
            Ok(())
        })
    }

    /// Visits `ids` with the envelopes the index holds, in one sequential read; one it lacks or
    /// holds damaged is read from its file.
    fn for_each_indexed<E>(
        &self,
        (file, records_at): &(File, u64),
        ids: &[(QueueId, Place)],
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
        for &(id, place) in ids {
            while record
                .as_ref()
                .is_some_and(|r| (r.id, r.place) < (id, place))
            {
                record = records.as_mut().and_then(Iterator::next);
            }
            let indexed = match &mut record {
                Some(r) if (r.id, r.place) == (id, place) => {
                    let bytes = std::mem::take(&mut r.envelope);
                    let inspection = self.inspection(id, place, bytes);
                    record = records.as_mut().and_then(Iterator::next);
                    // Only the envelope's own file may condemn a message to corrupt/.
                    inspection.envelope.is_ok().then_some(inspection)
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
    fn index_recorder(&self, ids: &[(QueueId, Place)]) -> Option<IndexRecorder> {
        let stamps = self.stamps?;
        if !self.refresh_index || ids.len() != self.ids.len() || !stamps.is_settled(self.began) {
            return None;
        }
        let table = ids
            .iter()
            .map(|&(id, place)| {
                let at = self.data.binary_search_by_key(&id, |&(id, _)| id).ok()?;
                Some(Entry {
                    id,
                    place,
                    data_inode: self.data[at].1,
                })
            })
            .collect::<Option<Vec<Entry>>>()?;
        let path = self
            .queue
            .path(TMP, &format!("{INDEX}.{}", QueueId::generate()));
        let file = create_file(&path).ok()?;
        let out = io::BufWriter::with_capacity(256 * 1024, file);
        Some(IndexRecorder {
            writer: IndexWriter::new(out, &stamps, &table).ok(),
            path,
        })
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

/// A fresh index being written under `tmp/` during a pass; renamed into place only if the pass
/// saw every envelope whole and the queue did not change meanwhile, removed otherwise.
struct IndexRecorder {
    /// `None` once anything went wrong: the index is then abandoned, never half written.
    writer: Option<IndexWriter<io::BufWriter<File>>>,
    path: PathBuf,
}

impl IndexRecorder {
    fn add(&mut self, inspection: &Inspection) {
        let written = match (self.writer.as_mut(), &inspection.envelope) {
            (Some(writer), Ok(_)) => writer
                .add(inspection.place, inspection.id, &inspection.bytes)
                .is_ok(),
            _ => false,
        };
        if !written {
            self.writer = None;
        }
    }

    fn commit(mut self, scan: &Scan<'_>) {
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
    queue: &'q Queue,
    id: QueueId,
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
            Some(mut reservation) => reservation.commit(self.queue, &self.envelope),
            None => self.queue.replace_envelope(&self.envelope),
        }
    }

    /// Takes the message out of the queue: envelope first (the instant it leaves), then data,
    /// both by name in the open queue directories; the lock is released after both.
    pub fn remove(self) -> Result<(), QueueError> {
        self.take_out()?.remove()
    }

    /// The first half of [`Locked::remove`]: moves the envelope out of `env/` to `tmp/ID.gone`,
    /// the instant the message leaves the queue, and keeps its data file locked for
    /// [`Leftover::remove`]. A rename frees no blocks: on a disk that discards freed blocks it
    /// costs a fraction of an unlink, and this instant is what delivery waits for.
    pub fn take_out(self) -> Result<Leftover<'q>, QueueError> {
        let name = self.id.as_str();
        let path = || self.queue.path(ENV, name);
        // A rename moves whatever has the name; only an envelope file may go.
        let stat = nix::sys::stat::fstatat(
            &self.queue.env,
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
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
        nix::fcntl::renameat(&self.queue.env, name, &self.queue.tmp, gone.as_str())
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

/// Space set aside under `tmp/` for a message's next state. Only the holder of the message's
/// lock writes this name; the file is also locked itself, so a sweep never takes it however
/// long the delivery lasts. Dropped unused, it is removed.
#[derive(Debug)]
struct Reservation<'q> {
    tmp: &'q File,
    name: String,
    path: PathBuf,
    file: File,
    /// Set once the file became the envelope.
    renamed: bool,
}

impl Reservation<'_> {
    fn fill(&self, bytes: u64) -> Result<(), QueueError> {
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
    /// renames it over the active envelope. A state longer than the reservation still works
    /// while there is room.
    fn commit(&mut self, queue: &Queue, envelope: &Envelope) -> Result<(), QueueError> {
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
        nix::fcntl::renameat(self.tmp, self.name.as_str(), &queue.env, id)
            .map_err(|e| nix_error("cannot rename", self.path.clone())(e))?;
        self.renamed = true;
        queue
            .env
            .sync_all()
            .map_err(io_error("cannot sync", queue.root.join(ENV)))
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = unlinkat(self.tmp, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
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

/// A message being written. Dropped without `commit`, it leaves nothing behind.
pub struct Draft<'q> {
    queue: &'q Queue,
    id: QueueId,
    tmp_name: String,
    tmp_path: PathBuf,
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

/// `rename(2)` that fails with EEXIST instead of replacing; where the file system lacks
/// RENAME_NOREPLACE, `link(2)` + `unlink(2)` gives the same guarantee.
fn rename_noreplace(from_dir: &File, from: &str, to_dir: &File, to: &str) -> nix::Result<()> {
    match renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_NOREPLACE) {
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOSYS) => {
            nix::unistd::linkat(from_dir, from, to_dir, to, nix::fcntl::AtFlags::empty())?;
            nix::unistd::unlinkat(from_dir, from, nix::unistd::UnlinkatFlags::NoRemoveDir)
        }
        other => other,
    }
}

fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// The inodes on the queue's file system that someone holds a `flock` on, from one read of
/// `/proc/locks`; `None` when that table cannot be read (no /proc, another kernel).
fn locked_inodes(dir: &Path) -> Option<std::collections::HashSet<u64>> {
    let table = fs::read_to_string("/proc/locks").ok()?;
    let dev = fs::metadata(dir).ok()?.dev();
    let device = format!(
        "{:02x}:{:02x}:",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    Some(flocked_inodes(&table, &device))
}

/// The inodes of `device` (`08:01:`) with a granted `flock` in a `/proc/locks` table.
fn flocked_inodes(table: &str, device: &str) -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    for line in table.lines() {
        let mut fields = line.split_whitespace().skip(1);
        // Waiters are listed with "->" and hold nothing yet.
        if fields.next() != Some("FLOCK") {
            continue;
        }
        let Some(file) = fields.nth(3) else { continue };
        if let Some(inode) = file.strip_prefix(device).and_then(|i| i.parse().ok()) {
            inodes.insert(inode);
        }
    }
    inodes
}

/// Writes a whole small file and fsyncs it, or removes it again on failure. `replace` allows a
/// stale file of the same name (left by a runner that died) to be overwritten; only the lock
/// holder writes these names.
fn write_synced(path: &Path, bytes: &[u8], replace: bool) -> Result<(), QueueError> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .map_err(io_error("cannot create", path))?;
    let written = file
        .write_all(bytes)
        .map_err(io_error("cannot write", path))
        .and_then(|()| file.sync_all().map_err(io_error("cannot sync", path)));
    if written.is_err() {
        // Whatever part reached the disk is no state of anything.
        let _ = fs::remove_file(path);
    }
    written
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

impl Queue {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Recipient;

    fn envelope(id: QueueId, size: u64) -> Envelope {
        Envelope {
            id,
            arrival: 1_795_418_591,
            size,
            sender: "alice@example.test".into(),
            notify: None,
            ret: None,
            envid: None,
            recipients: vec![Recipient::new("user@customer.example".into())],
        }
    }

    fn commit(queue: &Queue, body: &[u8]) -> QueueId {
        let mut draft = queue.draft().unwrap();
        draft.write_all(body).unwrap();
        let id = draft.id();
        draft.commit(&envelope(id, body.len() as u64)).unwrap()
    }

    #[test]
    fn ids_are_unique_sorted_and_safe() {
        let mut ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        for id in &ids {
            assert_eq!(QueueId::parse(id.as_str()), Some(*id));
        }
        let before = ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
        let first = before[0].as_str()[..6].to_string();
        let last = before[9_999].as_str()[..6].to_string();
        assert!(first <= last);
        assert!(QueueId::parse("../../etc/pwd!").is_none());
        assert!(QueueId::parse("short").is_none());
    }

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
    fn lock_table_lines() {
        let table = "\
1: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4243 fd:01:1312 0 EOF
2: POSIX  ADVISORY  WRITE 99 fd:01:1313 0 EOF
3: FLOCK  ADVISORY  READ 77 08:02:1314 0 EOF
4: FLOCK  ADVISORY  READ 78 fd:01:1315 0 EOF
";
        let inodes = flocked_inodes(table, "fd:01:");
        assert_eq!(inodes, [1311, 1315].into_iter().collect());
    }

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

    #[test]
    fn reading_ahead_keeps_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let ids: Vec<QueueId> = (0..700).map(|_| commit(&queue, b"z\n")).collect();
        let scan = queue.scan().unwrap();
        let mut seen = Vec::new();
        scan.for_each(scan.ids(), |inspection| -> Result<(), QueueError> {
            seen.push(inspection.id);
            Ok(())
        })
        .unwrap();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
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

    /// A message whose envelope is replaced by what `make` leaves at its path.
    fn odd_envelope(queue: &Queue, make: impl FnOnce(&Path)) -> QueueId {
        let id = commit(queue, b"x\n");
        let path = queue.path(ENV, id.as_str());
        fs::remove_file(&path).unwrap();
        make(&path);
        id
    }

    #[test]
    fn what_is_not_the_owners_regular_file_is_inaccessible_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let good = commit(&queue, b"good\n");
        let fifo = odd_envelope(&queue, |path| {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap()
        });
        let target = queue.path(ENV, good.as_str());
        let link = odd_envelope(&queue, |path| {
            std::os::unix::fs::symlink(&target, path).unwrap()
        });
        let directory = odd_envelope(&queue, |path| fs::create_dir(path).unwrap());
        let scan = queue.scan_files().unwrap();
        for (id, words) in [
            (fifo, "is a named pipe"),
            (link, "is a symbolic link"),
            (directory, "is a directory"),
        ] {
            let seen = scan.inspect(id, Place::Active).unwrap();
            match seen.envelope {
                Err(Unusable::Inaccessible(reason)) => assert!(reason.contains(words), "{reason}"),
                other => panic!("{id}: {other:?}"),
            }
            match queue.try_lock(id) {
                Err(QueueError::Inaccessible { reason }) => {
                    assert!(reason.contains(words), "{reason}")
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(scan.inspect(good, Place::Active).unwrap().envelope.is_ok());
        assert_eq!(queue.ids().unwrap().len(), 4, "nothing was moved");
        assert!(
            fs::read_dir(dir.path().join(CORRUPT))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn an_envelope_over_the_limit_is_damage_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = odd_envelope(&queue, |path| {
            // Sparse: a file far past the limit that costs no disk.
            File::create(path)
                .unwrap()
                .set_len(64 * envelope::MAX_BYTES)
                .unwrap()
        });
        let seen = queue
            .scan_files()
            .unwrap()
            .inspect(id, Place::Active)
            .unwrap();
        assert!(
            matches!(&seen.envelope, Err(Unusable::Damaged(r)) if r.contains("at most")),
            "{:?}",
            seen.envelope
        );
        assert!(matches!(queue.try_lock(id), Ok(LockAttempt::Corrupt(_))));
        assert!(queue.quarantine(id, Place::Active).unwrap());
    }

    #[test]
    fn another_users_files_are_inaccessible_with_the_fix_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, b"x\n");
        // As if the files were another user's: the queue expects an owner they do not have.
        queue.owner += 1;
        let seen = queue
            .scan_files()
            .unwrap()
            .inspect(id, Place::Active)
            .unwrap();
        let Err(Unusable::Inaccessible(reason)) = seen.envelope else {
            panic!("{:?}", seen.envelope)
        };
        assert!(reason.contains("not by the queue's owner"), "{reason}");
        assert!(reason.contains("chown "), "{reason}");
        assert!(reason.contains(&format!("data/{id}")), "{reason}");
        assert!(matches!(
            queue.try_lock(id),
            Err(QueueError::Inaccessible { .. })
        ));
        assert!(!queue.quarantine(id, Place::Active).unwrap());
        assert_eq!(queue.ids().unwrap().len(), 1);
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
