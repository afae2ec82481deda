//! Opening and writing queue files without trusting them: no link followed, no wait on a pipe or
//! a device, only the owner's regular files, and reads bounded by size.
//!
//! A queue file is opened with `O_NOFOLLOW | O_NONBLOCK` and examined (`fstat`) before anything is
//! read: what is not a regular file of the queue's owner is refused, and the refusal becomes a
//! line that tells a human what to fix, with the `chown` that gives a message back to the queue
//! when its files are another user's. An envelope is read up to
//! [`MAX_BYTES`](super::envelope::MAX_BYTES) and no further than its end record.
//!
//! New files are created 0600 without following a link; a small file is written whole and synced,
//! or removed again when that fails; a rename into `data/` or `env/` never replaces what is
//! there, so an id collision fails instead of replacing a message.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{OFlag, RenameFlags, renameat2};

use super::error::io_error;
use super::owner::{chown_name, describe_user};
use super::{DATA, Place, Queue, QueueError, QueueId, Unusable, envelope};

/// Why a queue file was not opened.
pub(super) enum Refusal {
    Link,
    NotRegular(&'static str),
    Foreign(u32),
    Io(&'static str, io::Error),
}

impl Queue {
    /// Opens one queue file for reading: no link followed, no wait on a pipe or a device, and
    /// only a regular file of the queue's owner. `Ok(None)` when there is no such file.
    pub(super) fn open_own(
        &self,
        dir: &File,
        name: &str,
    ) -> Result<Option<(File, fs::Metadata)>, Refusal> {
        self.open_own_as(dir, name, OFlag::O_RDONLY)
    }

    /// [`Queue::open_own`] with the access `O_RDONLY` or `O_RDWR`.
    pub(super) fn open_own_as(
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
    pub(super) fn refusal_text(
        &self,
        refusal: Refusal,
        path: &Path,
        id: QueueId,
        place: Place,
    ) -> String {
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
    pub(super) fn read_envelope(
        &self,
        id: QueueId,
        place: Place,
    ) -> Result<Option<Vec<u8>>, Unusable> {
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
}

pub(super) fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Writes a whole small file and fsyncs it, or removes it again on failure. `replace` allows a
/// stale file of the same name (left by a runner that died) to be overwritten; only the lock
/// holder writes these names.
pub(super) fn write_synced(path: &Path, bytes: &[u8], replace: bool) -> Result<(), QueueError> {
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

/// `rename(2)` that fails with EEXIST instead of replacing; where the file system lacks
/// RENAME_NOREPLACE, `link(2)` + `unlink(2)` gives the same guarantee.
pub(super) fn rename_noreplace(
    from_dir: &File,
    from: &str,
    to_dir: &File,
    to: &str,
) -> nix::Result<()> {
    match renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_NOREPLACE) {
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOSYS) => {
            nix::unistd::linkat(from_dir, from, to_dir, to, nix::fcntl::AtFlags::empty())?;
            nix::unistd::unlinkat(from_dir, from, nix::unistd::UnlinkatFlags::NoRemoveDir)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;
    use crate::queue::{CORRUPT, ENV, LockAttempt};

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
}
