//! One connection's side of a job: the SMTP client's `Outbox` for the lane's messages.
//!
//! It hands the connection the messages one by one and records what the server said about each.
//! What can be decided before sending is decided here: a message over the server's SIZE limit
//! fails (5.3.4), a recipient address that no longer parses fails (5.1.3), a sender that no
//! longer parses defers the message. A message is released to its finisher before its outcome
//! is reported to the connection's caller, and a message stranded by a failed connection (its
//! data never went out) returns to the lane, still locked, to go first on the next connection.

use std::collections::VecDeque;
use std::io::BufReader;

use crate::address::{Address, ReversePath};
use crate::queue::Locked;
use crate::smtp::{Attempt, Capabilities, Message, Outbox, Sent, Verdict};

use super::{Lane, Worker};
use crate::delivery::outcome::{BAD_MAILBOX_SYNTAX, Outcome, TOO_BIG, reply_outcome};
use crate::delivery::plan::Job;

/// The largest and the smallest buffer a message is read through on its way to the server.
const MESSAGE_BUFFER: usize = 64 * 1024;
const MESSAGE_BUFFER_MIN: usize = 4 * 1024;

/// A message handed to the SMTP connection and not yet answered.
pub(super) struct InFlight<'a> {
    locked: Locked<'a>,
    /// Recipient indices in the order they were sent.
    sent: Vec<usize>,
    /// Outcomes settled before sending (a bad address).
    settled: Vec<(usize, Outcome)>,
}

/// A message ready to send, and what was settled without sending.
struct Prepared {
    message: Message,
    sent: Vec<usize>,
    settled: Vec<(usize, Outcome)>,
}

/// Feeds a lane's messages to one connection and records what the server says about each.
pub(super) struct JobOutbox<'w, 'j, 'a> {
    pub(super) worker: &'w mut Worker<'a>,
    pub(super) job: &'w Job,
    pub(super) lane: &'w mut Lane<'j, 'a>,
    pub(super) in_flight: VecDeque<InFlight<'a>>,
    pub(super) relay: String,
    pub(super) remote: Option<String>,
    /// Why opportunistic TLS failed, when this connection fell back to clear text.
    pub(super) clear_text: Option<String>,
    /// Messages the server answered for on this connection.
    pub(super) answered: usize,
}

impl<'a> JobOutbox<'_, '_, 'a> {
    /// The next message to offer: one stranded on the last connection, else the lane's next.
    fn take(&mut self) -> Option<Locked<'a>> {
        if let Some(locked) = self.lane.again.pop_front() {
            return Some(locked);
        }
        while let Some(&id) = self.lane.ids.get(self.lane.cursor) {
            self.lane.cursor += 1;
            self.worker.progress.inc(1);
            if let Some(locked) = self.worker.lock(self.job, id) {
                return Some(locked);
            }
        }
        None
    }

    /// Records this connection's outcomes for a message and hands it to the finishers.
    fn conclude(&mut self, mut locked: Locked<'a>, mut outcomes: Vec<(usize, Outcome)>) {
        if let Some(why) = &self.clear_text {
            for (_, outcome) in &mut outcomes {
                outcome.note(&format!("sent in clear text: STARTTLS failed: {why}"));
            }
        }
        self.worker.conclude(&mut locked, outcomes, &self.relay);
        self.worker.finish(locked);
    }

    /// What the server's verdict means for a recipient; `None` means the connection failed
    /// before the server decided.
    fn outcome(&self, verdict: Option<&Verdict>, failure: &dyn Fn() -> String) -> Outcome {
        match verdict {
            Some(verdict) => reply_outcome(verdict, &self.relay, self.remote.clone()),
            None => Outcome::Deferred { reason: failure() },
        }
    }

    /// Decides what can be decided before sending, and builds the message for the rest.
    fn prepare(
        &self,
        locked: &Locked<'_>,
        indices: &[usize],
        capabilities: &Capabilities,
    ) -> Result<Prepared, Vec<(usize, Outcome)>> {
        let envelope = locked.envelope();
        let every = |outcome: &dyn Fn() -> Outcome| -> Vec<(usize, Outcome)> {
            indices.iter().map(|&i| (i, outcome())).collect()
        };
        if let Some(limit) = capabilities.size_limit().filter(|&l| l > 0)
            && envelope.size > limit
        {
            let reason = format!(
                "message of {} bytes exceeds the size limit of {limit} bytes of {}",
                envelope.size, self.relay
            );
            return Err(every(&|| Outcome::Failed {
                status: TOO_BIG,
                remote: self.remote.clone(),
                diagnostic: None,
                reason: reason.clone(),
            }));
        }
        let here = &self.worker.policy.here;
        let from = ReversePath::parse(&envelope.sender, here).map_err(|e| {
            let reason = format!("bad sender address in the queue: {e}");
            every(&|| Outcome::Deferred {
                reason: reason.clone(),
            })
        })?;
        let mut settled = Vec::new();
        let mut sent = Vec::new();
        let mut recipients = Vec::new();
        for &index in indices {
            match Address::parse(&envelope.recipients[index].address, here) {
                Ok(address) => {
                    sent.push(index);
                    recipients.push(address);
                }
                Err(e) => settled.push((
                    index,
                    Outcome::Failed {
                        status: BAD_MAILBOX_SYNTAX,
                        remote: None,
                        diagnostic: None,
                        reason: format!("bad recipient address: {e}"),
                    },
                )),
            }
        }
        if sent.is_empty() {
            return Err(settled);
        }
        // A buffer the size of the message within bounds: a small message is read in one call,
        // and no more buffer is allocated and zeroed than it needs (zeroing a 64 KiB buffer per
        // message cost 3% of a flush's time). The size only bounds the buffer: the body is read
        // to its end whatever the envelope says.
        let capacity = usize::try_from(envelope.size)
            .unwrap_or(MESSAGE_BUFFER)
            .clamp(MESSAGE_BUFFER_MIN, MESSAGE_BUFFER);
        let message = Message {
            from,
            recipients,
            size: Some(envelope.size),
            eight_bit: true,
            body: Box::new(BufReader::with_capacity(capacity, locked.data())),
        };
        Ok(Prepared {
            message,
            sent,
            settled,
        })
    }
}

impl Outbox for JobOutbox<'_, '_, '_> {
    fn next(&mut self, capabilities: &Capabilities) -> Option<Message> {
        while let Some(locked) = self.take() {
            let indices = self.worker.indices(&locked, self.job);
            if indices.is_empty() {
                continue;
            }
            let Some(locked) = self
                .worker
                .ready(locked, &indices, capabilities, &self.relay)
            else {
                continue;
            };
            match self.prepare(&locked, &indices, capabilities) {
                Ok(Prepared {
                    message,
                    sent,
                    settled,
                }) => {
                    self.in_flight.push_back(InFlight {
                        locked,
                        sent,
                        settled,
                    });
                    return Some(message);
                }
                Err(outcomes) => self.conclude(locked, outcomes),
            }
        }
        None
    }

    fn done(&mut self, attempt: Attempt<'_>) {
        let Some(flight) = self.in_flight.pop_front() else {
            return;
        };
        let InFlight {
            locked,
            sent,
            settled: mut outcomes,
        } = flight;
        let (delivery, failure) = match attempt {
            Attempt::Answered(delivery) => {
                self.answered += 1;
                (delivery, None)
            }
            Attempt::Broken {
                delivery,
                sent: went_out,
                error,
            } => {
                self.worker.policy.send_alone(locked.id());
                let reason = match went_out {
                    Sent::EndOfData => format!("{error} (the message may arrive twice)"),
                    Sent::Envelope | Sent::SomeData => error.to_string(),
                };
                (delivery, Some(reason))
            }
            // Its data never went out: it goes again on the next connection, no attempt spent.
            Attempt::Stranded { .. } => {
                self.lane.again.push_back(locked);
                return;
            }
        };
        let unanswered = || {
            failure
                .clone()
                .unwrap_or_else(|| format!("{}: no reply for this recipient", self.relay))
        };
        for (position, &index) in sent.iter().enumerate() {
            let verdict = delivery.verdicts.get(position).and_then(Option::as_ref);
            outcomes.push((index, self.outcome(verdict, &unanswered)));
        }
        self.conclude(locked, outcomes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::delivery::finish::{Finishing, InHand, finish_logged};
    use crate::delivery::outcome::{REASON_MAX, state_ceiling};
    use crate::delivery::policy::Destination;
    use crate::delivery::targets::Router;
    use crate::delivery::testing::{entries, fixture, policy};
    use crate::delivery::worker::{FINISH_BACKLOG, GivenUp};
    use crate::delivery::{RunOptions, RunSummary};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_message_without_room_for_its_state_is_deferred_unsent() {
        let f = fixture();
        let config = Config::default();
        let options = RunOptions::default();
        let now = chrono::Utc::now().timestamp();
        let policy = policy(&config, &options, now);
        let id = f.commit(&["a@customer.test", "b@customer.test"], now);
        // The reservation's file cannot be created: a directory stands in its place.
        let obstacle = f.tmp().join(format!("{id}.env"));
        std::fs::create_dir(&obstacle).unwrap();

        let busy = Mutex::new(Vec::new());
        let given_up = GivenUp::default();
        let progress = indicatif::ProgressBar::hidden();
        let in_hand = InHand::default();
        let (finisher, finishing) = mpsc::sync_channel(FINISH_BACKLOG);
        let mut worker = Worker {
            queue: &f.queue,
            policy: &policy,
            log: &f.log,
            busy: &busy,
            given_up: &given_up,
            progress: &progress,
            finisher,
            in_hand: &in_hand,
            unrecorded: Arc::default(),
            pipelining: true,
            router: Router::new(&config),
            summary: RunSummary::default(),
        };
        let job = Job {
            destination: Destination::Domain("customer.test".into()),
            relay: None,
            ids: vec![id],
        };
        let capabilities = Capabilities::default();
        let mut lane = Lane {
            ids: &job.ids,
            cursor: 0,
            again: VecDeque::new(),
        };
        let mut outbox = JobOutbox {
            worker: &mut worker,
            job: &job,
            lane: &mut lane,
            in_flight: VecDeque::new(),
            relay: "sink.test[127.0.0.1]:25".into(),
            remote: None,
            clear_text: None,
            answered: 0,
        };
        assert!(outbox.next(&capabilities).is_none(), "nothing was sent");
        assert!(outbox.in_flight.is_empty());
        let Finishing::Record(locked, receipt) = finishing.try_recv().unwrap() else {
            panic!("a message to record")
        };
        assert!(receipt.is_none(), "nobody has it");
        finish_logged(locked, receipt, &f.log, &mut worker.summary);
        assert_eq!(worker.summary.sent, 0);
        // Both recipients, and the state that could not be written either.
        assert_eq!(worker.summary.deferred, 3, "{:?}", worker.summary);
        assert!(f.log().contains("cannot write delivery state"));
        assert!(
            f.log()
                .contains("status=deferred (not sent: no room to record"),
            "{}",
            f.log()
        );
        let envelope = f.envelope(id).unwrap();
        assert!(envelope.open_recipients().count() == 2);

        // With the room there, the same message goes out with its reservation made.
        std::fs::remove_dir(&obstacle).unwrap();
        let mut lane = Lane {
            ids: &job.ids,
            cursor: 0,
            again: VecDeque::new(),
        };
        let mut outbox = JobOutbox {
            worker: &mut worker,
            job: &job,
            lane: &mut lane,
            in_flight: VecDeque::new(),
            relay: "sink.test[127.0.0.1]:25".into(),
            remote: None,
            clear_text: None,
            answered: 0,
        };
        assert!(outbox.next(&capabilities).is_some());
        let reserved = std::fs::metadata(&obstacle).unwrap().len();
        assert_eq!(reserved, state_ceiling(&envelope, &[0, 1]));
        assert!(reserved > envelope.to_bytes().len() as u64 + 2 * REASON_MAX as u64);
        drop(outbox);
        assert!(
            entries(&f.tmp()).is_empty(),
            "an unused reservation is removed"
        );
    }
}
