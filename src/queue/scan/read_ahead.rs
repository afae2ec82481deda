//! Reading envelopes ahead of a pass on a few threads, handed over in queue order.
//!
//! A listing is bound by opening one small file per message, and that parallelises. At most four
//! threads read, each at most two chunks of 256 messages ahead of the caller, so memory does not
//! grow with the queue; a caller that stops early stops the readers with it.

use super::{Inspection, Scan};
use crate::queue::{Place, QueueId};

impl Scan<'_> {
    /// Reads each envelope from its own file, ahead of `visit` on a few threads.
    pub(super) fn read_each<E>(
        &self,
        ids: &[(QueueId, Place)],
        keep: &(dyn Fn(QueueId, Place) -> bool + Sync),
        visit: &mut impl FnMut(Inspection) -> Result<(), E>,
    ) -> Result<(), E> {
        const CHUNK: usize = 256;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
            .min(ids.len().div_ceil(CHUNK));
        if threads <= 1 {
            for &(id, place) in ids.iter().filter(|&&(id, place)| keep(id, place)) {
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
                            .filter(|&&(id, place)| keep(id, place))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::testing::commit;
    use crate::queue::{Queue, QueueError};

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
}
