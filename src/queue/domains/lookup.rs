//! Looking up which messages a selection must read, from the record, when it can be believed.
//!
//! A look-up believes `.list` only when its first line names this boot of the system, reads it
//! whole only when a pattern with subdomains needs its names, and reads the files of the domains
//! asked and `.unknown`. Any doubt is an error that says why, and the caller reads every envelope
//! file instead.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::format::parse;
use super::store::{DirTrouble, lock_within, open_dir, open_file, read_ids, read_locked};
use super::{LIST, LIST_MAGIC, LOCK_WAIT, RecordError, UNKNOWN, boot_id, is_domain_name};
use crate::address::Domain;
use crate::queue::selection::DomainPattern;
use crate::queue::{Queue, QueueId};

/// `.list`, once its first line has shown it to be of this boot.
pub(super) struct List {
    pub(super) file: File,
    pub(super) boot: &'static str,
    pub(super) names: Option<Vec<String>>,
}

impl List {
    fn open(queue: &Queue, dir: &File, boot: &'static str) -> Result<List, RecordError> {
        let file = open_file(queue, dir, LIST, false)?.ok_or_else(|| RecordError::Missing {
            name: LIST.to_string(),
        })?;
        // The first line is written once, with the file; appends go after it.
        let mut head = [0u8; 128];
        let read = file
            .read_at(&mut head, 0)
            .map_err(|source| RecordError::Io {
                action: "cannot read",
                name: LIST.to_string(),
                source,
            })?;
        let first = head[..read].split(|&b| b == b'\n').next().unwrap_or(&[]);
        if first != format!("{LIST_MAGIC} {boot}").as_bytes() {
            return Err(RecordError::OtherBoot);
        }
        Ok(List {
            file,
            boot,
            names: None,
        })
    }

    /// The domain files it names, sorted; read whole and checked the first time, under its
    /// shared lock for the read alone, so that a long look-up never keeps a commit from naming
    /// a new file.
    pub(super) fn names(&mut self) -> Result<&[String], RecordError> {
        if self.names.is_none() {
            lock_within(&self.file, true, LOCK_WAIT).map_err(|e| RecordError::FileLock {
                name: LIST.to_string(),
                source: Box::new(e),
            })?;
            let read = read_locked(&self.file, LIST);
            // Closing the file would release it too; a look-up keeps the file a while.
            let _ = self.file.unlock();
            let bytes = read?;
            let names = parse(&bytes, LIST_MAGIC, self.boot)
                .filter(|names| names.iter().all(|n| is_domain_name(n)))
                .ok_or_else(|| RecordError::Damaged {
                    name: LIST.to_string(),
                })?;
            let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
            names.sort_unstable();
            self.names = Some(names);
        }
        Ok(self.names.as_deref().unwrap_or_default())
    }
}

/// What the record says a selection must read.
#[derive(Debug)]
pub(in crate::queue) struct Found {
    /// The candidates, sorted, each once.
    pub(in crate::queue) ids: Vec<QueueId>,
    /// Each file read, with its ids, for compaction.
    pub(super) files: Vec<(String, Vec<QueueId>)>,
    pub(super) dir: File,
}

/// The messages that may have an open recipient in one of `patterns`, from the record; an error
/// says why the record cannot be believed, and the caller reads every envelope instead.
pub(in crate::queue) fn lookup(
    queue: &Queue,
    patterns: &[DomainPattern],
) -> Result<Found, RecordError> {
    let boot = boot_id().ok_or(RecordError::NoBootId)?;
    let dir = open_dir(queue, false)
        .map_err(DirTrouble::reason)?
        .ok_or(RecordError::NotMade)?;
    let mut list = List::open(queue, &dir, boot)?;
    let mut names = vec![UNKNOWN.to_string()];
    for pattern in patterns {
        match pattern {
            DomainPattern::Exact(domain) => names.push(domain.to_lowercase()),
            DomainPattern::WithSubdomains(parent) => names.extend(
                list.names()?
                    .iter()
                    .filter(|n| Domain::parse(n).is_ok_and(|d| d.is_within(parent)))
                    .cloned(),
            ),
        }
    }
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::new();
    for name in names {
        match read_ids(queue, &dir, &name)? {
            Some(ids) => files.push((name, ids)),
            // Nothing queued for it since the record was made, or all of it gone.
            None if name != UNKNOWN && list.names()?.binary_search(&name).is_err() => {}
            None if name == UNKNOWN => return Err(RecordError::Missing { name }),
            None => return Err(RecordError::NamedButMissing { name }),
        }
    }
    // A file lost and made again while the look-up read is made after `.list` is removed, so a
    // `.list` still linked now vouches for every file read.
    let linked = list
        .file
        .metadata()
        .map_err(RecordError::Unexamined)?
        .nlink();
    if linked == 0 {
        return Err(RecordError::Replaced {
            name: LIST.to_string(),
        });
    }
    let mut ids: Vec<QueueId> = files.iter().flat_map(|(_, ids)| ids).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(Found { ids, files, dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;

    #[test]
    fn why_a_record_is_not_believed_is_a_kind_worded_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let patterns = [DomainPattern::parse("customer.example").unwrap()];
        let why = lookup(&queue, &patterns).unwrap_err();
        assert!(matches!(why, RecordError::NotMade), "{why:?}");
        assert_eq!(why.to_string(), "no record has been made yet");
        // A commit makes the directory and the domain's file, but only a rebuild makes `.list`.
        commit(&queue, b"x\n");
        let why = lookup(&queue, &patterns).unwrap_err();
        assert!(
            matches!(&why, RecordError::Missing { name } if name == LIST),
            "{why:?}"
        );
        assert_eq!(why.to_string(), "domains/.list is missing");
    }
}
