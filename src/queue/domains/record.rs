//! A commit's part in the record: its id appended to the file of each of its recipients' domains,
//! or, when that cannot be done, the record made unbelieved before the envelope is renamed.
//!
//! An append is one write of the new line and the new seal over the old seal, under the file's
//! exclusive lock; a file replaced while the appender waited for its lock is opened again. A commit
//! holds the queue directory's lock shared from before it records until its envelope is renamed,
//! which is what a rebuild waits for.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::unistd::UnlinkatFlags;

use super::format::{Seal, parse};
use super::store::{
    QueueLock, create, lock_queue, lock_within, move_aside, open_file, read_locked, usable_dir,
};
use super::{COMMIT_WAIT, DIR, LIST, LIST_MAGIC, LOCK_WAIT, RecordError, boot_id, names_of};
use crate::queue::envelope::Envelope;
use crate::queue::{Queue, QueueError, QueueId};

/// Holds the queue directory's shared lock while a commit records its id and renames its
/// envelope into place; dropping it releases the lock.
#[derive(Debug)]
pub(in crate::queue) struct Recording {
    _lock: QueueLock,
}

/// Records `envelope`'s id under each of its recipients' domains, before the envelope is
/// renamed into `env/`. Keep the returned value until that rename is done.
///
/// An id that cannot be appended makes the record unbelieved (its `.list` removed) instead of
/// failing the commit. The commit fails (try again later) only when the record's directory can
/// neither be used nor made, when the record cannot even be made unbelieved, or when a rebuild
/// holds the queue for longer than [`COMMIT_WAIT`].
pub(in crate::queue) fn record(
    queue: &Queue,
    envelope: &Envelope,
) -> Result<Recording, QueueError> {
    let lock = lock_queue(queue, true, COMMIT_WAIT).map_err(|reason| QueueError::Busy {
        path: queue.root.clone(),
        reason,
    })?;
    let recording = Recording { _lock: lock };
    let dir = usable_dir(queue).map_err(|reason| QueueError::Busy {
        path: queue.root.join(DIR),
        reason,
    })?;
    for name in names_of(envelope.recipients.iter()) {
        if add(queue, &dir, &name, envelope.id).is_err() {
            distrust(queue, &dir)?;
        }
    }
    Ok(recording)
}

/// Appends `id` to domain file `name`, making the file (and naming it in `.list`) when there is
/// none.
pub(super) fn add(queue: &Queue, dir: &File, name: &str, id: QueueId) -> Result<(), RecordError> {
    // A file replaced while this process waited for its lock is opened again.
    for _ in 0..8 {
        let Some(file) = open_file(queue, dir, name, true)? else {
            let list = match list_without(queue, dir, name)? {
                Naming::Absent => None,
                Naming::Unnamed(list) => Some(list),
                Naming::MadeMeanwhile => continue,
            };
            if create(queue, dir, name, &[id])? {
                return match list {
                    Some(list) => {
                        let len = list.metadata().map_err(RecordError::Unexamined)?.len();
                        append(&list, len, name)
                    }
                    None => Ok(()),
                };
            }
            continue;
        };
        lock_within(&file, false, LOCK_WAIT)?;
        let meta = file.metadata().map_err(RecordError::Unexamined)?;
        if meta.nlink() > 0 {
            return append(&file, meta.len(), id.as_str());
        }
    }
    Err(RecordError::KeepsBeingReplaced {
        name: name.to_string(),
    })
}

/// What `.list` says of a domain file about to be made.
enum Naming {
    /// There is no `.list`: the record is not believed anyway.
    Absent,
    /// `.list`, locked, does not name it: make the file, then name it.
    Unnamed(File),
    /// Another commit made and named it since this one looked: append to it.
    MadeMeanwhile,
}

/// `.list`, locked, before domain file `name` is made. A file `.list` names is there, made by a
/// commit that raced this one to it, or was lost (deleted by hand): the ids it held would not be
/// in a new one, so `.list` is removed before the new file can exist, lest a look-up believe
/// the new file between the two, and this fails.
fn list_without(queue: &Queue, dir: &File, name: &str) -> Result<Naming, RecordError> {
    let Some(list) = open_file(queue, dir, LIST, true)? else {
        return Ok(Naming::Absent);
    };
    lock_within(&list, false, LOCK_WAIT)?;
    let meta = list.metadata().map_err(RecordError::Unexamined)?;
    if meta.nlink() == 0 {
        return Err(RecordError::Replaced {
            name: LIST.to_string(),
        });
    }
    let boot = boot_id().ok_or(RecordError::NoBootId)?;
    let bytes = read_locked(&list, LIST)?;
    let names = parse(&bytes, LIST_MAGIC, boot).ok_or(RecordError::DamagedOrOtherBoot)?;
    if names.contains(&name) {
        // A commit names a file after making it, under this lock: one named and present is
        // that commit's.
        return match open_file(queue, dir, name, false)? {
            Some(_) => Ok(Naming::MadeMeanwhile),
            None => Err(RecordError::Lost {
                name: name.to_string(),
            }),
        };
    }
    Ok(Naming::Unnamed(list))
}

/// Adds `item` to a record file this process holds the exclusive lock on: the item's line and
/// the new last line are written over the old last line in one write.
pub(super) fn append(file: &File, len: u64, item: &str) -> Result<(), RecordError> {
    // The last line is at most 42 bytes; the newline before it is read too.
    let start = len.saturating_sub(64);
    let mut tail = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut tail, start)
        .map_err(RecordError::AppendRead)?;
    let last = std::str::from_utf8(&tail)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|t| t.rsplit_once('\n'))
        .map(|(_, last)| last)
        .ok_or(RecordError::LastLine)?;
    let seal = Seal::parse(last).ok_or(RecordError::LastLine)?;
    let at = len - last.len() as u64 - 1;
    let bytes = format!("{item}\n{}", seal.add(item).line());
    file.write_all_at(bytes.as_bytes(), at)
        .map_err(RecordError::AppendWrite)
}

/// Makes `.list` absent, so that the record is not believed until a rebuild; when even that
/// cannot be done, the whole directory is moved aside.
pub(super) fn distrust(queue: &Queue, dir: &File) -> Result<(), QueueError> {
    match nix::unistd::unlinkat(dir, LIST, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(_) => move_aside(queue).map_err(|reason| QueueError::Busy {
            path: queue.root.join(DIR),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::domains::FILE_MAGIC;
    use crate::queue::domains::format::render;

    #[test]
    fn appends_keep_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, render(FILE_MAGIC, "a.test", ["1xWNa000000001"])).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        for id in ["1xWNa000000002", "1xWNa000000003"] {
            append(&file, file.metadata().unwrap().len(), id).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "a.test"),
            Some(vec!["1xWNa000000001", "1xWNa000000002", "1xWNa000000003"])
        );
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        assert!(append(&file, file.metadata().unwrap().len(), "1xWNa000000004").is_err());
    }
}
