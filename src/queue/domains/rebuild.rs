//! Rebuilding the record from a pass that read every envelope file.
//!
//! The pass notes each message under the domains of its open recipients (a [`Census`]); the
//! rebuild merges that into the files while commits go on, then again with commits kept waiting,
//! records the envelopes that appeared since the pass listed the queue, and only then writes
//! `.list` for this boot. Until `.list` is written, nothing of the record is believed.

use std::collections::HashMap;
use std::fs::File;

use super::format::render;
use super::record::distrust;
use super::rewrite::{Rewrite, rewrite};
use super::store::{Draft, dir_names, lock_queue, read_ids, usable_dir};
use super::{LIST, LIST_MAGIC, PUBLISH_WAIT, RecordError, UNKNOWN, boot_id, names_of};
use crate::queue::envelope::Envelope;
use crate::queue::{Place, Queue, QueueId};

/// What a pass over every envelope file learnt for the record.
#[derive(Debug, Default)]
pub(in crate::queue) struct Census {
    domains: HashMap<String, Vec<QueueId>>,
    unknown: Vec<QueueId>,
}

impl Census {
    /// Notes one message: under the domains of its open recipients, or as unknown when its
    /// envelope could not be read.
    pub(in crate::queue) fn add(&mut self, id: QueueId, envelope: Option<&Envelope>) {
        match envelope {
            Some(envelope) => self.note(id, names_of(envelope.open_recipients())),
            None => self.unknown.push(id),
        }
    }

    fn note(&mut self, id: QueueId, names: Vec<String>) {
        for name in names {
            self.domains.entry(name).or_default().push(id);
        }
    }
}

/// Rebuilds the record from `census`, made by a pass over every envelope file of the queue as
/// `listed` (sorted) showed it: the files are merged, then, with every commit kept waiting, the
/// envelopes that appeared since are read and recorded, and `.list` is written for this boot.
/// An error says why the record is still not to be believed; it is tried again by the next
/// pass that needs it.
pub(in crate::queue) fn rebuild(
    queue: &Queue,
    census: Census,
    listed: &[(QueueId, Place)],
) -> Result<(), RecordError> {
    let boot = boot_id().ok_or(RecordError::NoBootId)?;
    let dir = usable_dir(queue)?;
    // Whatever made the record unbelievable, no pass believes a part of it mended before the
    // envelopes that appeared meanwhile are in it too. A sweep rewrites `.list` with commits
    // kept waiting: so is this removal made, lest a sweep put back what it removes.
    {
        let _lock = lock_queue(queue, false, PUBLISH_WAIT)?;
        distrust(queue, &dir).map_err(|e| RecordError::Queue(Box::new(e)))?;
    }
    // Most of the work is done while commits go on; with them kept waiting, it is done again
    // with the envelopes that appeared since, in one merge of every domain's whole set, so that
    // a file deleted meanwhile is made again whole, never with the newcomers alone.
    merge(queue, &dir, &census)?;
    let _lock = lock_queue(queue, false, PUBLISH_WAIT)?;
    let mut census = census;
    let ids = queue.ids().map_err(|e| RecordError::Queue(Box::new(e)))?;
    for &(id, place) in &ids {
        if listed.binary_search_by_key(&id, |&(id, _)| id).is_ok() {
            continue;
        }
        let envelope = match queue.read_envelope(id, place) {
            Ok(None) => continue,
            Ok(Some(bytes)) => Envelope::parse(&bytes).ok().filter(|e| e.id == id),
            Err(_) => None,
        };
        match &envelope {
            Some(envelope) => census.note(id, names_of(envelope.recipients.iter())),
            None => census.unknown.push(id),
        }
    }
    merge(queue, &dir, &census)?;
    // The census's domains are named even if their files went meanwhile, so that the loss is
    // seen.
    let mut names: Vec<String> = census.domains.keys().cloned().collect();
    names.extend(dir_names(queue, &dir)?);
    names.sort_unstable();
    names.dedup();
    let bytes = render(LIST_MAGIC, boot, names.iter().map(String::as_str));
    Draft::write(queue, &bytes)?.replace(&dir, LIST)
}

/// Puts `census` into the files of `dir`, `.unknown` included, and mends every other domain
/// file there that is not whole, lest the record send every pass back to a rebuild.
fn merge(queue: &Queue, dir: &File, census: &Census) -> Result<(), RecordError> {
    for (name, ids) in &census.domains {
        rewrite(queue, dir, name, ids, &[], Rewrite::Rebuild)?;
    }
    rewrite(queue, dir, UNKNOWN, &census.unknown, &[], Rewrite::Rebuild)?;
    for name in dir_names(queue, dir)? {
        if !census.domains.contains_key(&name) && read_ids(queue, dir, &name).is_err() {
            rewrite(queue, dir, &name, &[], &[], Rewrite::Rebuild)?;
        }
    }
    Ok(())
}
