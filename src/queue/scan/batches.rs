//! A pass over the queue in batches, for a queue run over the whole queue (active messages) and
//! for a listing that has no current index (held ones too): the memory either holds is one
//! batch's ids, however long the queue.
//!
//! Each batch is the oldest `size` ids after the last batch's newest, found by one reading of
//! `env/` (and `hold/`) that keeps only that many (a heap of the smallest), so that delivery stays oldest
//! first across batches and no message is taken twice: a deferred message renamed back into
//! `env/` is behind the cursor. The first reading also notes the newest id there, and later
//! batches stop at it: mail that arrives during a run waits for the next one, as it did when a run
//! listed the queue once. A queue no longer than a batch is read once, as before.
//!
//! The price is one reading of `env/` per batch, about 0.6 µs a name on tmpfs with the heap's
//! work: a million messages in the default batches of 250,000 cost four readings, 2.4 s, where
//! reading their envelopes costs 5 s and delivering them hours.

use std::collections::BinaryHeap;

use super::Scan;
use crate::queue::{ENV, HOLD, Place, Queue, QueueError, QueueId};

/// A message as a pass orders it: by id, which is by arrival.
type Key = (QueueId, Place);

impl Queue {
    /// The active messages, at most `size` a batch, oldest first throughout (see the module).
    pub fn scan_active_in_batches(&self, size: usize) -> Batches<'_> {
        Batches::new(self, size, false)
    }
}

/// The batches of a pass, from [`Queue::scan_active_in_batches`], or of a listing's (which
/// takes held messages too).
#[derive(Clone)]
pub struct Batches<'q> {
    queue: &'q Queue,
    size: usize,
    /// Whether `hold/` is read with `env/`.
    held_too: bool,
    /// The newest message of the last batch: the next begins after it.
    after: Option<Key>,
    /// The newest message the first reading found: no batch goes past it.
    newest: Option<Key>,
    /// How many messages the first reading found.
    found: usize,
    finished: bool,
}

impl<'q> Batches<'q> {
    pub(super) fn new(queue: &'q Queue, size: usize, held_too: bool) -> Batches<'q> {
        Batches {
            queue,
            size: size.max(1),
            held_too,
            after: None,
            newest: None,
            found: 0,
            finished: false,
        }
    }

    /// The next batch, as a pass of its own; `None` once every batch was taken.
    pub fn next_batch(&mut self) -> Result<Option<Scan<'q>>, QueueError> {
        Ok(self.next_ids()?.map(|ids| self.queue.scan_of(ids)))
    }

    /// The next batch's messages, oldest first; `None` once every batch was taken.
    pub(super) fn next_ids(&mut self) -> Result<Option<Vec<Key>>, QueueError> {
        if self.finished {
            return Ok(None);
        }
        let first = self.newest.is_none();
        // Kept as the pass will hold them, so that the batch is the heap, sorted in place. After
        // the first reading every batch asks for the same room, which the allocator can give
        // back each time: growing each from nothing left the heap of a listing over a million
        // 3.5 MB larger than over half a million.
        let mut oldest: BinaryHeap<Key> = if first {
            BinaryHeap::new()
        } else {
            BinaryHeap::with_capacity(self.size.min(self.found))
        };
        let (mut in_range, mut newest) = (0usize, self.newest);
        self.each_key(|key| {
            if first {
                newest = newest.max(Some(key));
            } else if Some(key) > self.newest {
                return;
            }
            if Some(key) <= self.after {
                return;
            }
            in_range += 1;
            if oldest.len() < self.size {
                oldest.push(key);
            } else if let Some(mut top) = oldest.peek_mut()
                && key < *top
            {
                *top = key;
            }
        })?;
        if first {
            self.found = in_range;
        }
        self.newest = newest;
        self.finished = in_range <= self.size;
        let ids = oldest.into_sorted_vec();
        let Some(&last) = ids.last() else {
            self.finished = true;
            return Ok(None);
        };
        self.after = Some(last);
        Ok(Some(ids))
    }

    /// Whether every batch was taken.
    pub(super) fn is_finished(&self) -> bool {
        self.finished
    }

    /// How many messages the first reading found.
    pub(super) fn found(&self) -> usize {
        self.found
    }

    /// These batches from the first again, up to the same newest message.
    pub(super) fn again_from_the_first(&self) -> Batches<'q> {
        Batches {
            after: None,
            finished: false,
            ..self.clone()
        }
    }

    /// Whether a message is one the batches cover: not newer than the first reading's newest.
    pub(super) fn covers(&self, key: Key) -> bool {
        self.newest.is_none_or(|newest| key <= newest)
    }

    /// How many messages the batches not yet taken would cover, for a run that stops before
    /// them.
    pub fn untaken(&self) -> Result<usize, QueueError> {
        if self.finished {
            return Ok(0);
        }
        let mut count = 0;
        self.each_key(|key| {
            if self.covers(key) && Some(key) > self.after {
                count += 1;
            }
        })?;
        Ok(count)
    }

    fn each_key(&self, mut each: impl FnMut(Key)) -> Result<(), QueueError> {
        let queue = self.queue;
        queue.each_id(&queue.env, ENV, |id| each((id, Place::Active)))?;
        if self.held_too {
            queue.each_id(&queue.hold, HOLD, |id| each((id, Place::Held)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;

    fn batches_of(queue: &Queue, size: usize) -> Vec<Vec<QueueId>> {
        let mut batches = queue.scan_active_in_batches(size);
        let mut out = Vec::new();
        while let Some(scan) = batches.next_batch().unwrap() {
            out.push(scan.ids().iter().map(|&(id, _)| id).collect());
        }
        out
    }

    #[test]
    fn batches_cover_the_active_messages_once_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let mut ids: Vec<QueueId> = (0..23).map(|_| commit(&queue, b"x\n")).collect();
        ids.sort();
        for size in [1, 4, 5, 22, 23, 24, 1000] {
            let batches = batches_of(&queue, size);
            assert_eq!(batches.concat(), ids, "size {size}");
            assert!(batches.iter().all(|b| b.len() <= size), "size {size}");
            assert_eq!(batches.len(), ids.len().div_ceil(size), "size {size}");
        }
        assert!(
            batches_of(
                &Queue::open(tempfile::tempdir().unwrap().path()).unwrap(),
                3
            )
            .is_empty()
        );
    }

    #[test]
    fn held_messages_are_not_in_any_batch() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let active = commit(&queue, b"a\n");
        let held = commit(&queue, b"h\n");
        std::fs::rename(
            queue.path(ENV, held.as_str()),
            queue.path(crate::queue::HOLD, held.as_str()),
        )
        .unwrap();
        assert_eq!(batches_of(&queue, 1), vec![vec![active]]);
    }

    #[test]
    fn a_message_written_back_or_arriving_during_the_pass_is_not_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let mut ids: Vec<QueueId> = (0..6).map(|_| commit(&queue, b"x\n")).collect();
        ids.sort();
        let mut batches = queue.scan_active_in_batches(2);
        let first = batches.next_batch().unwrap().unwrap();
        assert_eq!(
            first.ids(),
            [(ids[0], Place::Active), (ids[1], Place::Active)]
        );
        // A deferred message's envelope goes back into env/ under its own name, as a new entry.
        let path = queue.path(ENV, ids[0].as_str());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let late = commit(&queue, b"late\n");
        assert!(late > ids[5]);
        assert_eq!(batches.untaken().unwrap(), 4);
        let mut rest = Vec::new();
        while let Some(scan) = batches.next_batch().unwrap() {
            rest.extend(scan.ids().iter().map(|&(id, _)| id));
        }
        assert_eq!(rest, ids[2..]);
        assert_eq!(batches.untaken().unwrap(), 0);
    }
}
