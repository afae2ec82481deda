//! Rewriting record files: merging ids in for a rebuild, dropping ids of messages that left, and
//! removing the files left with none.
//!
//! A file is rewritten under `tmp/` and renamed over the old version while that version is still
//! locked, so an appender waiting for the lock finds it unlinked and opens the new one: no append
//! is lost to a rewrite. Compaction only touches a whole file, since rewriting a damaged one would
//! make it look whole; a removal takes the file's name out of `.list` first, with commits kept
//! waiting, so that no reader takes a removed file for a lost one.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use nix::unistd::UnlinkatFlags;

use super::format::{parse_ids, render, salvage_ids};
use super::lookup::{Found, List};
use super::store::{
    Draft, create, dir_names, lock_queue, lock_within, open_dir, open_file, read_ids, read_locked,
};
use super::{COMPACT_MIN, FILE_MAGIC, LIST, LIST_MAGIC, LOCK_WAIT, RecordError, UNKNOWN, boot_id};
use crate::queue::{Queue, QueueId, is_absent};

/// How [`rewrite`] treats a file it cannot take as whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rewrite {
    /// A rebuild, which has every queued id at hand: a damaged file keeps each line that is an
    /// id, a missing one is made, and what is not the owner's regular file is replaced.
    Rebuild,
    /// Dropping ids that left: only a whole file is touched, since rewriting a damaged one
    /// would make it look whole.
    Compact,
}

/// Rewrites domain file `name` with `add` and without `drop` (sorted), under the old version's
/// exclusive lock.
pub(super) fn rewrite(
    queue: &Queue,
    dir: &File,
    name: &str,
    add: &[QueueId],
    drop: &[QueueId],
    how: Rewrite,
) -> Result<(), RecordError> {
    for _ in 0..8 {
        let file = match open_file(queue, dir, name, true) {
            Ok(Some(file)) => file,
            Ok(None) if how == Rewrite::Compact => return Ok(()),
            Ok(None) => {
                if create(queue, dir, name, &sorted(add.to_vec()))? {
                    return Ok(());
                }
                continue;
            }
            Err(reason) if how == Rewrite::Compact => return Err(reason),
            Err(_) => {
                let bytes = render(
                    FILE_MAGIC,
                    name,
                    sorted(add.to_vec()).iter().map(QueueId::as_str),
                );
                return Draft::write(queue, &bytes)?.replace(dir, name);
            }
        };
        lock_within(&file, false, LOCK_WAIT)?;
        if file.metadata().map_err(RecordError::Unexamined)?.nlink() == 0 {
            continue;
        }
        let bytes = match read_locked(&file, name) {
            Ok(bytes) => bytes,
            Err(reason) if how == Rewrite::Compact => return Err(reason),
            // Too big to read: nothing of it is kept.
            Err(_) => Vec::new(),
        };
        let (whole, mut ids) = match (parse_ids(&bytes, name), how) {
            (Some(ids), _) => (true, ids),
            (None, Rewrite::Rebuild) => (false, salvage_ids(&bytes)),
            (None, Rewrite::Compact) => {
                return Err(RecordError::Damaged {
                    name: name.to_string(),
                });
            }
        };
        let before = ids.len();
        ids.retain(|id| drop.binary_search(id).is_err());
        let known = sorted(ids.clone());
        let missing: Vec<QueueId> = sorted(
            add.iter()
                .filter(|id| known.binary_search(id).is_err())
                .copied()
                .collect(),
        );
        if whole && ids.len() == before && missing.is_empty() {
            return Ok(());
        }
        ids.extend(missing);
        let bytes = render(FILE_MAGIC, name, ids.iter().map(QueueId::as_str));
        // The old version stays locked until the new one has its name, so an appender waiting
        // for it finds it unlinked and opens the new one.
        return Draft::write(queue, &bytes)?.replace(dir, name);
    }
    Err(RecordError::KeepsBeingReplaced {
        name: name.to_string(),
    })
}

pub(super) fn sorted(mut ids: Vec<QueueId>) -> Vec<QueueId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Rewrites, without the ids that left the queue, each file `found` read in which they are many.
pub(in crate::queue) fn compact(queue: &Queue, found: &Found, gone: &[QueueId]) {
    for (name, ids) in &found.files {
        let left = ids
            .iter()
            .filter(|id| gone.binary_search(id).is_ok())
            .count();
        if left >= COMPACT_MIN && left * 2 >= ids.len() {
            // Advisory: a file left long is only read longer.
            let _ = rewrite(queue, &found.dir, name, &[], gone, Rewrite::Compact);
        }
    }
}

/// A plain run's care of the record: each file loses the ids of messages that left (their data
/// file is gone: one look each, so that nothing is held for the whole queue), and a domain file
/// left with none is removed, after `.list` stops naming it.
pub(in crate::queue) fn sweep(queue: &Queue) {
    let Ok(Some(dir)) = open_dir(queue, false) else {
        return;
    };
    let Ok(names) = dir_names(queue, &dir) else {
        return;
    };
    let gone = |id: &QueueId| is_absent(&queue.data, *id);
    let mut empty = Vec::new();
    for name in names.iter().map(String::as_str).chain([UNKNOWN]) {
        let Ok(Some(ids)) = read_ids(queue, &dir, name) else {
            continue;
        };
        let mut left: Vec<QueueId> = ids.iter().filter(|id| gone(id)).copied().collect();
        left.sort_unstable();
        if left.len() == ids.len() && name != UNKNOWN {
            empty.push(name);
        } else if left.len() >= COMPACT_MIN && left.len() * 2 >= ids.len() {
            let _ = rewrite(queue, &dir, name, &[], &left, Rewrite::Compact);
        }
    }
    if !empty.is_empty() {
        let _ = remove_empty(queue, &dir, &empty, gone);
    }
}

/// Removes domain files whose every id `gone` says left, with commits kept waiting: `.list`
/// first stops naming them, so that no reader takes a removed file for a lost one.
fn remove_empty(
    queue: &Queue,
    dir: &File,
    names: &[&str],
    gone: impl Fn(&QueueId) -> bool,
) -> Result<(), RecordError> {
    let _lock = lock_queue(queue, false, LOCK_WAIT)?;
    let mut held = Vec::new();
    for &name in names {
        let Ok(Some(file)) = open_file(queue, dir, name, true) else {
            continue;
        };
        if lock_within(&file, false, LOCK_WAIT).is_err()
            || file.metadata().map_or(true, |m| m.nlink() == 0)
        {
            continue;
        }
        let still_empty = read_locked(&file, name)
            .ok()
            .and_then(|bytes| parse_ids(&bytes, name))
            .is_some_and(|ids| ids.iter().all(&gone));
        if still_empty {
            held.push((name, file));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    let boot = boot_id().unwrap_or_default();
    if let Ok(Some(list)) = open_file(queue, dir, LIST, false) {
        let mut list = List {
            file: list,
            boot,
            names: None,
        };
        if let Ok(names) = list.names() {
            let kept = names
                .iter()
                .filter(|n| !held.iter().any(|(name, _)| name == n))
                .map(String::as_str);
            let bytes = render(LIST_MAGIC, boot, kept);
            Draft::write(queue, &bytes)?.replace(dir, LIST)?;
        }
    }
    for (name, _file) in &held {
        let _ = nix::unistd::unlinkat(dir, *name, UnlinkatFlags::NoRemoveDir);
    }
    Ok(())
}
