//! The record's files on disk: its directory, locks taken within a bound, reads that trust nothing,
//! and new files written under `tmp/` and renamed into place.
//!
//! A record file is a queue file: opened without following a link or waiting on a pipe, believed
//! only as a regular file of the queue's owner and read only up to [`MAX_FILE`](super::MAX_FILE).
//! A directory that holds the record's name and is not the owner's is never believed, and is moved
//! aside by whoever needs to write. A lock is waited for at most a bound: its holders keep it for
//! a few system calls, so a longer wait means a stopped process, and the record is given up.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::format::{parse_ids, render};
use super::{DIR, FILE_MAGIC, LOCK_WAIT, MAX_FILE, RecordError, is_domain_name};
use crate::queue::files::{Refusal, create_file, rename_noreplace};
use crate::queue::{Queue, QueueId, TMP};

/// Takes `file`'s lock, waiting at most `limit`.
pub(super) fn lock_within(file: &File, shared: bool, limit: Duration) -> Result<(), RecordError> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RecordError::LockHeld(limit));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(RecordError::Lock(e)),
        }
    }
}

/// The queue directory's lock, held shared by commits from before they record until their
/// envelope is renamed, and exclusively by a rebuild's first and last steps and by a sweep's
/// removals. Dropping it releases it.
#[derive(Debug)]
pub(super) struct QueueLock {
    _queue: File,
    _gate: Option<File>,
}

/// Takes the queue directory's lock, waiting at most `limit`. Every taker first passes a gate,
/// the lock of `tmp/`, which an exclusive taker keeps closed until it is done: flock grants a
/// shared lock whenever another is held, so without the gate, commits that keep overlapping would
/// starve a rebuild for as long as mail arrives.
pub(super) fn lock_queue(
    queue: &Queue,
    shared: bool,
    limit: Duration,
) -> Result<QueueLock, RecordError> {
    let deadline = Instant::now() + limit;
    let gate = open_afresh(queue, &queue.tmp)?;
    lock_within(&gate, shared, limit)?;
    let file = open_afresh(queue, &queue.top)?;
    lock_within(
        &file,
        shared,
        deadline.saturating_duration_since(Instant::now()),
    )?;
    Ok(QueueLock {
        _queue: file,
        _gate: (!shared).then_some(gate),
    })
}

/// Directory `dir` of the queue opened afresh: a lock belongs to one open file.
fn open_afresh(queue: &Queue, dir: &File) -> Result<File, RecordError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, ".", flags, Mode::empty())
        .map(File::from)
        .map_err(|errno| RecordError::OpenQueue {
            root: queue.root.clone(),
            errno,
        })
}

/// What a refusal to open record file `name` says.
fn refused(name: &str, refusal: Refusal) -> RecordError {
    let name = name.to_string();
    match refusal {
        Refusal::Link => RecordError::Link { name },
        Refusal::NotRegular(kind) => RecordError::NotRegular { name, kind },
        Refusal::Foreign(uid) => RecordError::Foreign { name, uid },
        Refusal::Io(action, source) => RecordError::Io {
            action,
            name,
            source,
        },
    }
}

/// Why the record's directory was not opened.
pub(super) enum DirTrouble {
    /// What holds its name is not the owner's directory that the owner may open: a link, a
    /// file, another user's directory, one whose mode shuts its owner out. Never believed; moved
    /// aside by whoever needs to write.
    NotOurs(RecordError),
    /// Anything else (no descriptor left, an I/O error): nothing is known about it.
    Io(RecordError),
}

impl DirTrouble {
    pub(super) fn reason(self) -> RecordError {
        match self {
            DirTrouble::NotOurs(reason) | DirTrouble::Io(reason) => reason,
        }
    }
}

/// The record's directory: `Ok(None)` when there is none. Only the owner's is believed; one of
/// this process's own (the library used by root without [`super::become_owner`]) is written
/// in too, when `mine_too`, since nobody believes it before the owner rebuilds it.
pub(super) fn open_dir(queue: &Queue, mine_too: bool) -> Result<Option<File>, DirTrouble> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match nix::fcntl::openat(&queue.top, DIR, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ELOOP | nix::Error::ENOTDIR) => {
            return Err(DirTrouble::NotOurs(RecordError::DirNotDirectory));
        }
        Err(e @ (nix::Error::EACCES | nix::Error::EPERM)) => {
            return Err(DirTrouble::NotOurs(RecordError::DirSys {
                action: "cannot open",
                errno: e,
            }));
        }
        Err(errno) => {
            return Err(DirTrouble::Io(RecordError::DirSys {
                action: "cannot open",
                errno,
            }));
        }
    };
    let meta = dir.metadata().map_err(|source| {
        DirTrouble::Io(RecordError::DirIo {
            action: "cannot examine",
            source,
        })
    })?;
    let mine = mine_too && meta.uid() == nix::unistd::geteuid().as_raw();
    if meta.uid() != queue.owner && !mine {
        return Err(DirTrouble::NotOurs(RecordError::DirForeign(meta.uid())));
    }
    Ok(Some(dir))
}

/// The record's directory, made when missing; what holds its name and is not the owner's
/// directory is moved aside first.
pub(super) fn usable_dir(queue: &Queue) -> Result<File, RecordError> {
    // A directory removed between its making and its opening is made again.
    for _ in 0..8 {
        match open_dir(queue, true) {
            Ok(Some(dir)) => return Ok(dir),
            Ok(None) => {}
            Err(DirTrouble::NotOurs(_)) => move_aside(queue)?,
            Err(DirTrouble::Io(reason)) => return Err(reason),
        }
        match nix::sys::stat::mkdirat(&queue.top, DIR, Mode::S_IRWXU) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(errno) => {
                return Err(RecordError::DirSys {
                    action: "cannot create",
                    errno,
                });
            }
        }
    }
    Err(RecordError::DirVanishing)
}

/// Renames what holds the record's name to `domains.unusable.ID` beside it: a rename within one
/// directory needs no permission on the thing renamed, so even another user's directory goes.
pub(super) fn move_aside(queue: &Queue) -> Result<(), RecordError> {
    let aside = format!("{DIR}.unusable.{}", QueueId::generate());
    match nix::fcntl::renameat(&queue.top, DIR, &queue.top, aside.as_str()) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(RecordError::MoveAside(e)),
    }
}

/// Opens record file `name` for reading or for writing; `Ok(None)` when there is none.
pub(super) fn open_file(
    queue: &Queue,
    dir: &File,
    name: &str,
    write: bool,
) -> Result<Option<File>, RecordError> {
    let access = if write {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    };
    match queue.open_own_as(dir, name, access) {
        Ok(opened) => Ok(opened.map(|(file, _)| file)),
        Err(refusal) => Err(refused(name, refusal)),
    }
}

/// A record file's bytes, read whole under its shared lock; `Ok(None)` when there is none.
fn read_file(queue: &Queue, dir: &File, name: &str) -> Result<Option<Vec<u8>>, RecordError> {
    let Some(file) = open_file(queue, dir, name, false)? else {
        return Ok(None);
    };
    lock_within(&file, true, LOCK_WAIT).map_err(|e| RecordError::FileLock {
        name: name.to_string(),
        source: Box::new(e),
    })?;
    read_locked(&file, name).map(Some)
}

/// The bytes of a record file this process holds a lock on; one over [`MAX_FILE`] is not read.
pub(super) fn read_locked(file: &File, name: &str) -> Result<Vec<u8>, RecordError> {
    let too_big = || RecordError::TooBig {
        name: name.to_string(),
    };
    let size = file
        .metadata()
        .map_err(|source| RecordError::Io {
            action: "cannot examine",
            name: name.to_string(),
            source,
        })?
        .len();
    if size > MAX_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RecordError::Io {
            action: "cannot read",
            name: name.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The ids of domain file `name`: `Ok(None)` when there is none, an error when it is not whole.
pub(super) fn read_ids(
    queue: &Queue,
    dir: &File,
    name: &str,
) -> Result<Option<Vec<QueueId>>, RecordError> {
    let Some(bytes) = read_file(queue, dir, name)? else {
        return Ok(None);
    };
    parse_ids(&bytes, name)
        .map(Some)
        .ok_or_else(|| RecordError::Damaged {
            name: name.to_string(),
        })
}

/// The names in the record's directory `dir` that can be domain files.
pub(super) fn dir_names(queue: &Queue, dir: &File) -> Result<Vec<String>, RecordError> {
    let path = queue.root.join(DIR);
    // Listed by name: what is listed must be the directory this process has open.
    let same = match (std::fs::symlink_metadata(&path), dir.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    };
    if !same {
        return Err(RecordError::DirReplaced);
    }
    let mut names = Vec::new();
    let unread = |source| RecordError::DirIo {
        action: "cannot read",
        source,
    };
    for entry in std::fs::read_dir(&path).map_err(unread)? {
        let entry = entry.map_err(unread)?;
        if let Some(name) = entry.file_name().to_str()
            && is_domain_name(name)
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A file being written under `tmp/`, removed unless it was renamed into place.
pub(super) struct Draft<'q> {
    queue: &'q Queue,
    pub(super) name: String,
}

impl<'q> Draft<'q> {
    pub(super) fn write(queue: &'q Queue, bytes: &[u8]) -> Result<Draft<'q>, RecordError> {
        let draft = Draft {
            queue,
            name: format!("{}.record", QueueId::generate()),
        };
        let path = queue.path(TMP, &draft.name);
        let mut file = create_file(&path).map_err(RecordError::TmpCreate)?;
        io::Write::write_all(&mut file, bytes).map_err(RecordError::TmpWrite)?;
        Ok(draft)
    }

    /// Renames it to `name` in `dir`, replacing what is there.
    pub(super) fn replace(self, dir: &File, name: &str) -> Result<(), RecordError> {
        nix::fcntl::renameat(&self.queue.tmp, self.name.as_str(), dir, name).map_err(|errno| {
            RecordError::Sys {
                action: "cannot replace",
                name: name.to_string(),
                errno,
            }
        })
    }
}

impl Drop for Draft<'_> {
    fn drop(&mut self) {
        // After a rename the name is gone and this fails harmlessly.
        let _ = std::fs::remove_file(self.queue.path(TMP, &self.name));
    }
}

/// Makes domain file `name` holding `ids`, unless one appeared meanwhile (`Ok(false)`).
pub(super) fn create(
    queue: &Queue,
    dir: &File,
    name: &str,
    ids: &[QueueId],
) -> Result<bool, RecordError> {
    let draft = Draft::write(
        queue,
        &render(FILE_MAGIC, name, ids.iter().map(QueueId::as_str)),
    )?;
    match rename_noreplace(&queue.tmp, &draft.name, dir, name) {
        Ok(()) => Ok(true),
        Err(nix::Error::EEXIST) => Ok(false),
        Err(errno) => Err(RecordError::Sys {
            action: "cannot create",
            name: name.to_string(),
            errno,
        }),
    }
}
