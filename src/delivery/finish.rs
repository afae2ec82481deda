//! The finisher threads: they write a message's new state back, or remove a message that is done.
//!
//! They work while the message's connection goes on with the next one. A message stays locked until
//! its state is on disk or its files are gone. A delivered message counts among its connection's
//! unrecorded messages (`Unrecorded`) from the moment the server took it until its new state is
//! written, so that the connection can wait before it has more than the duplicate bound in flight
//! (see `Worker::finish`). A state that cannot be written (a full disk) is that message's trouble
//! alone: logged, counted as deferred, and the message waits in the queue with its old state.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::maillog::MailLog;
use crate::queue::{Leftover, Locked, QueueError, QueueId};

use super::RunSummary;

/// Writes the new state back, or removes the message when nothing is left open. `receipt` is
/// let go at the instant the new state is on disk, or when it could not be written.
fn finish_message(mut locked: Locked<'_>, receipt: Option<Receipt>) -> Result<(), QueueError> {
    if locked.envelope().open_recipients().next().is_some() {
        return locked.save();
    }
    let leftover = locked.take_out()?;
    // The message has left the queue: its connection may go on while its data is removed.
    drop(receipt);
    leftover.remove()
}

/// `finish_message`, with a failure logged and counted as a deferral: the message stays in the
/// queue with its old state, and a later run tries it again.
pub(super) fn finish_logged(
    locked: Locked<'_>,
    receipt: Option<Receipt>,
    log: &MailLog,
    summary: &mut RunSummary,
) {
    let id = locked.id();
    if let Err(e) = finish_message(locked, receipt) {
        log.warning(&format!("{id}: cannot write delivery state: {e}"));
        summary.deferred += 1;
    }
}

/// Work for the finisher threads.
pub(super) enum Finishing<'a> {
    /// A message to write back or remove, with its receipt when some recipient has it.
    Record(Locked<'a>, Option<Receipt>),
    /// The files of a delivered message that has left the queue.
    Discard(Leftover<'a>),
}

impl Finishing<'_> {
    pub(super) fn id(&self) -> QueueId {
        match self {
            Finishing::Record(locked, _) => locked.id(),
            Finishing::Discard(leftover) => leftover.id(),
        }
    }
}

/// How long a delivery thread waits for a finisher to let go of a message it needs: far more than
/// writing one state takes, so that only a stuck disk or a dead finisher runs it out.
const IN_HAND_WAIT: Duration = Duration::from_secs(30);

/// The messages handed to the finishers and not finished yet. A job that finds one of them
/// locked is looking at this run's own work, not another run's: it waits for the state to be
/// written and takes the message then, instead of putting it aside for the end of the run (where
/// it would meet the destination's connections in another order, or not at all).
#[derive(Debug, Default)]
pub(super) struct InHand {
    ids: Mutex<HashSet<QueueId>>,
    released: Condvar,
}

impl InHand {
    pub(super) fn take(&self, id: QueueId) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(id);
        }
    }

    pub(super) fn release(&self, id: QueueId) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&id);
        }
        self.released.notify_all();
    }

    /// Waits until the finishers have let go of `id`: true when they held it and let go within
    /// [`IN_HAND_WAIT`], false when they never held it or still do.
    pub(super) fn wait_for(&self, id: QueueId) -> bool {
        let Ok(ids) = self.ids.lock() else {
            return false;
        };
        if !ids.contains(&id) {
            return false;
        }
        match self
            .released
            .wait_timeout_while(ids, IN_HAND_WAIT, |ids| ids.contains(&id))
        {
            Ok((_, waited)) => !waited.timed_out(),
            Err(_) => false,
        }
    }
}

pub(super) fn finish_work(work: Finishing<'_>, log: &MailLog, summary: &mut RunSummary) {
    match work {
        Finishing::Record(locked, receipt) => finish_logged(locked, receipt, log, summary),
        Finishing::Discard(leftover) => {
            let id = leftover.id();
            // The message is out of the queue; what is left here is swept by a later run.
            if let Err(e) = leftover.remove() {
                log.warning(&format!(
                    "{id}: cannot remove a delivered message's files: {e}"
                ));
            }
        }
    }
}

/// One connection's delivered messages whose new state is not on disk yet.
#[derive(Debug, Default)]
pub(super) struct Unrecorded {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Unrecorded {
    pub(super) fn receipt(self: &Arc<Self>) -> Receipt {
        if let Ok(mut count) = self.count.lock() {
            *count += 1;
        }
        Receipt(Arc::clone(self))
    }

    /// Waits until at most `most` are left.
    pub(super) fn wait_until(&self, most: usize) {
        let Ok(mut count) = self.count.lock() else {
            return;
        };
        while *count > most {
            count = match self.changed.wait(count) {
                Ok(count) => count,
                Err(_) => return,
            };
        }
    }
}

/// Counts one delivered message among its connection's unrecorded ones while it lives.
pub(super) struct Receipt(Arc<Unrecorded>);

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Ok(mut count) = self.0.count.lock() {
            *count = count.saturating_sub(1);
        }
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_in_a_finishers_hands_is_waited_for_and_no_other() {
        let in_hand = InHand::default();
        let (held, other) = (QueueId::generate(), QueueId::generate());
        assert!(!in_hand.wait_for(held), "never handed over");
        in_hand.take(held);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| in_hand.wait_for(held));
            assert!(!in_hand.wait_for(other));
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(!waiter.is_finished(), "did not wait for the finisher");
            in_hand.release(held);
            assert!(waiter.join().unwrap(), "let go, so taken");
        });
        assert!(!in_hand.wait_for(held));
    }

    #[test]
    fn a_receipt_counts_until_it_is_let_go() {
        let unrecorded: Arc<Unrecorded> = Arc::default();
        let first = unrecorded.receipt();
        let second = unrecorded.receipt();
        let waiter = {
            let unrecorded = Arc::clone(&unrecorded);
            std::thread::spawn(move || unrecorded.wait_until(0))
        };
        drop(first);
        unrecorded.wait_until(1);
        drop(second);
        waiter.join().unwrap();
        assert_eq!(*unrecorded.count.lock().unwrap(), 0);
    }

    #[test]
    fn a_message_is_written_back_while_open_and_removed_when_done() {
        use crate::delivery::testing::fixture;
        use crate::queue::LockAttempt;
        use crate::queue::envelope::RecipientStatus::{Deferred, Failed, Sent};
        let cases = [
            ("one deferred", [Sent, Deferred], true),
            ("all done", [Sent, Failed], false),
        ];
        for (why, statuses, stays) in cases {
            let f = fixture();
            let id = f.commit(&["a@customer.test", "b@customer.test"], 0);
            let LockAttempt::Locked(mut locked) = f.queue.try_lock(id).unwrap() else {
                panic!("not locked")
            };
            for (recipient, status) in locked.envelope_mut().recipients.iter_mut().zip(statuses) {
                recipient.status = status;
            }
            let unrecorded: Arc<Unrecorded> = Arc::default();
            let mut summary = RunSummary::default();
            let work = Finishing::Record(locked, Some(unrecorded.receipt()));
            finish_work(work, &f.log, &mut summary);
            assert_eq!(*unrecorded.count.lock().unwrap(), 0, "{why}: let go");
            assert_eq!(summary, RunSummary::default(), "{why}");
            match f.envelope(id) {
                Some(envelope) if stays => {
                    let now: Vec<_> = envelope.recipients.iter().map(|r| r.status).collect();
                    assert_eq!(now, statuses, "{why}: written back");
                }
                None if !stays => {
                    assert!(
                        !f.queue.root().join("data").join(id.as_str()).exists(),
                        "{why}"
                    )
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_state_that_cannot_be_written_is_logged_and_counted_as_deferred() {
        use crate::delivery::testing::fixture;
        use crate::queue::LockAttempt;
        let f = fixture();
        let id = f.commit(&["a@customer.test"], 0);
        let LockAttempt::Locked(locked) = f.queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        // No new file can be made under tmp/: the new state cannot be written.
        std::fs::rename(f.tmp(), f.queue.root().join("tmp.away")).unwrap();
        std::fs::write(f.tmp(), b"not a directory").unwrap();
        let mut summary = RunSummary::default();
        finish_logged(locked, None, &f.log, &mut summary);
        assert_eq!(summary.deferred, 1);
        assert!(
            f.log()
                .contains(&format!("{id}: cannot write delivery state")),
            "{}",
            f.log()
        );
        assert!(f.envelope(id).is_some(), "left with its old state");
    }
}
