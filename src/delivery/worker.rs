//! The delivery threads: each delivers one job (a destination's messages) at a time.
//!
//! A job goes over as few connections as it takes. Each message is locked just before it is handed
//! to the connection, its envelope read again (another run may have moved on), and its outcome
//! recorded before the lock is released. When a connection fails, the message whose transaction was
//! under way is deferred as an attempt; the messages behind it, whose data never went out, go again
//! at once on a new connection with no attempt counted. A message that was under way when a
//! connection failed is sent alone, after the others, for the rest of the run. After
//! `FRUITLESS_CONNECTIONS` connections in a row fail before the server answered for any message,
//! what is left for that destination waits for the next run. A destination given up is given up
//! for the whole run ([`GivenUp`]): its other shares, and its mail in later batches, are deferred
//! without a connection, as Postfix's "delivery temporarily suspended".
//!
//! The slow disk work (writing states, unlinking files) is handed to the finisher threads (see
//! `finish`), so that it overlaps the next message's round trip; a delivered message leaves
//! the queue, or its new state is written, before its connection has more than one further
//! message in flight (see `Worker::finish`). A message still in a finisher's hands is waited
//! for; one locked by another process is put aside for the end of the run; once a stop is asked
//! for, no new message is taken.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, SendError, SyncSender};
use std::sync::{Arc, Mutex};

use crate::maillog::MailLog;
use crate::queue::envelope::RecipientStatus;
use crate::queue::{LockAttempt, Locked, Queue, QueueId};
use crate::smtp::Capabilities;

use super::RunSummary;
use super::connect::connect;
use super::finish::{Finishing, InHand, Unrecorded, finish_work};
use super::outcome::{BAD_CONNECTION, Outcome, quarantine, record, skip, state_ceiling};
use super::plan::{Busy, Job};
use super::policy::{Destination, Policy};
use super::targets::{NoRoute, Router, Target};

mod outbox;

use outbox::JobOutbox;

/// Threads that write back or remove the messages connections are done with. Removal dominates
/// on a disk: on ext4 mounted with online `discard` each freed file waits ~180 µs for the device,
/// which overlaps the waits of several threads. Flushing 10,000 4 KB messages to a local sink
/// (2 busy cores, medians of 3 to 8 runs) took 4.7 s with 1 finisher, 3.2–3.5 s with 4,
/// 2.7–3.2 s with 8, 2.6 s with 16 and with 32, against 2.4–2.5 s for `rm` alone to free the
/// same 20,000 files 16 at a time: 16 reach what the device can do, more gain nothing. On tmpfs
/// the count made no difference. An idle finisher costs only its stack.
const FINISHERS: usize = 16;

/// Messages waiting for a finisher. Each holds its lock and one open file, so the backlog is
/// bounded: when the disk falls behind, delivery waits instead of running out of descriptors.
/// Delivered messages are bounded much tighter, by the duplicate bound (see `Worker::finish`).
const FINISH_BACKLOG: usize = 256;

/// Runs `jobs` on up to `policy.options.jobs` threads. Delivery threads hand each message they
/// are done with to the finisher threads, which write its state back or remove its files (see
/// `Worker::finish`); the message stays locked until they have. Once a stop is asked for, the
/// jobs not begun are left. Returns once both have finished everything.
pub(super) fn work(
    queue: &Queue,
    policy: &Policy<'_>,
    log: &MailLog,
    jobs: Vec<Job>,
    busy: &Busy,
    given_up: &GivenUp,
    progress: &indicatif::ProgressBar,
) -> RunSummary {
    if jobs.is_empty() {
        return RunSummary::default();
    }
    let threads = policy.options.jobs.max(1).min(jobs.len());
    let pending = Mutex::new(VecDeque::from(jobs));
    let total = Mutex::new(RunSummary::default());
    let (finisher, finishing) = mpsc::sync_channel::<Finishing<'_>>(FINISH_BACKLOG);
    // Only the finishers hold the receiving end: should they all die, sending fails instead of
    // blocking delivery for ever.
    let finishing = Arc::new(Mutex::new(finishing));
    let in_hand = InHand::default();
    std::thread::scope(|scope| {
        for _ in 0..FINISHERS {
            let (finishing, total, in_hand) = (Arc::clone(&finishing), &total, &in_hand);
            scope.spawn(move || {
                let mut summary = RunSummary::default();
                loop {
                    // The channel closes when every delivery thread has ended and dropped its
                    // sender, after the backlog is drained.
                    let next = finishing.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some(work) = next else { break };
                    let id = work.id();
                    finish_work(work, log, &mut summary);
                    in_hand.release(id);
                }
                if let Ok(mut total) = total.lock() {
                    total.add(&summary);
                }
            });
        }
        drop(finishing);
        for _ in 0..threads {
            let finisher = finisher.clone();
            scope.spawn(|| {
                let mut worker = Worker {
                    queue,
                    policy,
                    log,
                    busy,
                    given_up,
                    progress,
                    finisher,
                    in_hand: &in_hand,
                    unrecorded: Arc::default(),
                    pipelining: true,
                    router: Router::new(policy.config),
                    summary: RunSummary::default(),
                };
                loop {
                    let next = pending.lock().ok().and_then(|mut p| p.pop_front());
                    let Some(job) = next else { break };
                    if policy.options.stop.is_requested() {
                        worker.summary.left += job.ids.len();
                        continue;
                    }
                    worker.job(&job);
                }
                if let Ok(mut total) = total.lock() {
                    total.add(&worker.summary);
                }
            });
        }
        drop(finisher);
    });
    total.into_inner().unwrap_or_default()
}

/// One delivery thread.
struct Worker<'a> {
    queue: &'a Queue,
    policy: &'a Policy<'a>,
    log: &'a MailLog,
    busy: &'a Busy,
    given_up: &'a GivenUp,
    progress: &'a indicatif::ProgressBar,
    /// Where messages go once their outcome is recorded.
    finisher: SyncSender<Finishing<'a>>,
    /// The messages the finishers have not let go of yet.
    in_hand: &'a InHand,
    /// This thread's delivered messages whose state the finishers have not written yet.
    unrecorded: Arc<Unrecorded>,
    /// Whether the current connection pipelines: it then has two messages in flight.
    pipelining: bool,
    /// Where each job's destination is, with the thread's DNS resolver.
    router: Router<'a>,
    summary: RunSummary,
}

/// Connections to one destination that fail in a row, each before the server answered for any
/// message, after which the destination is given up for the run (Postfix's dead destination):
/// a server that stalls or fails on every message would otherwise cost one full time limit per
/// message.
const FRUITLESS_CONNECTIONS: usize = 2;

/// The destinations a run gave up, with what their mail is deferred (or failed) with from then
/// on. A run over a long queue meets a dead destination again in each of its batches and in
/// each share of a split one: without this, each would cost its own connection time limits.
#[derive(Default)]
pub(super) struct GivenUp(Mutex<HashMap<Destination, NoRoute>>);

impl GivenUp {
    fn get(&self, destination: &Destination) -> Option<NoRoute> {
        self.0.lock().ok()?.get(destination).cloned()
    }

    fn give_up(&self, destination: &Destination, why: &NoRoute) {
        let Ok(mut given_up) = self.0.lock() else {
            return;
        };
        given_up
            .entry(destination.clone())
            .or_insert_with(|| NoRoute {
                reason: if why.permanent {
                    why.reason.clone()
                } else {
                    format!("delivery temporarily suspended: {}", why.reason)
                },
                ..why.clone()
            });
    }
}

/// What of a job one series of connections has still to send.
struct Lane<'j, 'a> {
    ids: &'j [QueueId],
    /// The next of `ids` to hand out.
    cursor: usize,
    /// Messages stranded on a failed connection, still locked, to go first on the next one.
    again: VecDeque<Locked<'a>>,
}

impl Lane<'_, '_> {
    fn is_done(&self) -> bool {
        self.cursor >= self.ids.len() && self.again.is_empty()
    }
}

impl<'a> Worker<'a> {
    /// Delivers a job: its messages together over as few connections as it takes, then each
    /// message that broke a connection earlier in the run alone, on its own connection.
    fn job(&mut self, job: &Job) {
        let mut targets: Option<Result<Vec<Target>, NoRoute>> = None;
        let (alone, together): (Vec<QueueId>, Vec<QueueId>) =
            job.ids.iter().partition(|&&id| self.policy.sends_alone(id));
        self.deliver(job, &together, &mut targets);
        for id in alone {
            self.deliver(job, &[id], &mut targets);
        }
    }

    /// Delivers `ids`, a new connection after each failed one. Messages stranded on a failed
    /// connection (their data never went out) go first on the next one, with no attempt
    /// counted against them; the message that was under way is deferred as an attempt.
    fn deliver(
        &mut self,
        job: &Job,
        ids: &[QueueId],
        targets: &mut Option<Result<Vec<Target>, NoRoute>>,
    ) {
        let mut lane = Lane {
            ids,
            cursor: 0,
            again: VecDeque::new(),
        };
        if let Some(no_route) = self.given_up.get(&job.destination) {
            self.abandon(job, lane, &no_route);
            return;
        }
        let mut fruitless = 0;
        while !lane.is_done() {
            let attempt = match &self.policy.options.turnaround {
                Some(turnaround) => turnaround.take(),
                None => match targets.get_or_insert_with(|| self.router.targets(job)) {
                    Ok(list) => connect(self.policy, list),
                    Err(no_route) => Err(no_route.clone()),
                },
            };
            let (mut conn, clear_text) = match attempt {
                Ok(session) => session,
                Err(no_route) => {
                    self.abandon(job, lane, &no_route);
                    return;
                }
            };
            conn.limit_recipients(self.policy.config.recipients_per_transaction);
            let peer = conn.peer().clone();
            let mut outbox = JobOutbox {
                relay: peer.to_string(),
                remote: peer
                    .name
                    .clone()
                    .or_else(|| Some(peer.addr.ip().to_string())),
                clear_text,
                worker: self,
                job,
                lane: &mut lane,
                in_flight: VecDeque::new(),
                answered: 0,
            };
            let delivered = conn.deliver_all(&mut outbox);
            let answered = outbox.answered;
            let failure = match delivered {
                Ok(()) => {
                    match &self.policy.options.turnaround {
                        Some(turnaround) => turnaround.give_back(conn),
                        None => conn.quit(),
                    }
                    continue;
                }
                // A failed connection is dropped, never reused.
                Err(failure) => failure,
            };
            fruitless = if answered == 0 { fruitless + 1 } else { 0 };
            if fruitless >= FRUITLESS_CONNECTIONS && !lane.is_done() {
                let no_route = NoRoute {
                    permanent: false,
                    status: BAD_CONNECTION,
                    reason: format!(
                        "{failure}; {fruitless} connections in a row failed, so this \
                         destination waits for the next run"
                    ),
                };
                self.abandon(job, lane, &no_route);
                return;
            }
        }
    }

    /// Defers (or fails) what remains of a lane when its destination cannot be reached, and
    /// gives the destination up for the rest of the run.
    fn abandon(&mut self, job: &Job, mut lane: Lane<'_, 'a>, no_route: &NoRoute) {
        self.given_up.give_up(&job.destination, no_route);
        while let Some(locked) = lane.again.pop_front() {
            self.unroutable(job, locked, no_route);
        }
        for &id in &lane.ids[lane.cursor..] {
            self.progress.inc(1);
            self.without_connection(job, id, no_route);
        }
    }

    /// Defers (or fails, for a permanent routing error) this destination's recipients of `id`.
    fn without_connection(&mut self, job: &Job, id: QueueId, no_route: &NoRoute) {
        if let Some(locked) = self.lock(job, id) {
            self.unroutable(job, locked, no_route);
        }
    }

    /// `without_connection` for a message locked already.
    fn unroutable(&mut self, job: &Job, mut locked: Locked<'a>, no_route: &NoRoute) {
        let indices = self.indices(&locked, job);
        let outcomes = indices
            .into_iter()
            .map(|index| {
                let outcome = if no_route.permanent {
                    Outcome::Failed {
                        status: no_route.status,
                        remote: None,
                        diagnostic: None,
                        reason: no_route.reason.clone(),
                    }
                } else {
                    Outcome::Deferred {
                        reason: no_route.reason.clone(),
                    }
                };
                (index, outcome)
            })
            .collect();
        self.conclude(&mut locked, outcomes, "none");
        self.finish(locked);
    }

    /// Locks a message of this job; a busy one is put aside for the end of the run. Once the
    /// run is asked to stop, none is taken.
    fn lock(&mut self, job: &Job, id: QueueId) -> Option<Locked<'a>> {
        if self.policy.options.stop.is_requested() {
            self.summary.left += 1;
            return None;
        }
        let mut attempt = self.queue.try_lock(id);
        if matches!(attempt, Ok(LockAttempt::Busy)) && self.in_hand.wait_for(id) {
            attempt = self.queue.try_lock(id);
        }
        match attempt {
            Ok(LockAttempt::Locked(locked)) => Some(locked),
            Ok(LockAttempt::Busy) => {
                if let Ok(mut busy) = self.busy.lock() {
                    busy.push((job.destination.clone(), job.relay.clone(), id));
                }
                None
            }
            Ok(LockAttempt::Gone) => None,
            Ok(LockAttempt::Corrupt(reason)) => {
                quarantine(self.queue, id, &reason, self.log, &mut self.summary);
                None
            }
            // Every error of `try_lock` is this message's alone.
            Err(e) => {
                skip(id, &e.to_string(), self.log, &mut self.summary);
                None
            }
        }
    }

    /// The recipients of a locked message that this job delivers now.
    fn indices(&self, locked: &Locked<'_>, job: &Job) -> Vec<usize> {
        let envelope = locked.envelope();
        (0..envelope.recipients.len())
            .filter(|&i| self.policy.wants(envelope, i))
            .filter(|&i| {
                self.policy.destination(envelope.recipients[i].domain()).0 == job.destination
            })
            .collect()
    }

    fn conclude(&mut self, locked: &mut Locked<'a>, outcomes: Vec<(usize, Outcome)>, relay: &str) {
        record(
            self.queue,
            locked,
            outcomes,
            relay,
            self.policy,
            self.log,
            &mut self.summary,
        );
    }

    /// Readies a locked message for the connection, just before it is handed out: waits until
    /// the duplicate bound allows one more message in flight, and sets aside the room its next
    /// state needs when it has more than one recipient to deliver (one that some recipients got
    /// must never be sent to them again because its state could not be written; a message with
    /// one recipient is removed or left whole). Without that room it is deferred unsent.
    fn ready(
        &mut self,
        mut locked: Locked<'a>,
        indices: &[usize],
        capabilities: &Capabilities,
        relay: &str,
    ) -> Option<Locked<'a>> {
        self.pipelining = capabilities.pipelining();
        if !self.pipelining {
            self.unrecorded.wait_until(0);
        }
        if locked.envelope().open_recipients().nth(1).is_none() {
            return Some(locked);
        }
        let ceiling = state_ceiling(locked.envelope(), indices);
        let Err(e) = locked.reserve(ceiling) else {
            return Some(locked);
        };
        let reason = format!("not sent: no room to record its delivery state: {e}");
        let outcomes = indices
            .iter()
            .map(|&index| {
                let reason = reason.clone();
                (index, Outcome::Deferred { reason })
            })
            .collect();
        self.conclude(&mut locked, outcomes, relay);
        self.finish(locked);
        None
    }

    /// Records a message whose outcome is known, within the duplicate bound, leaving the slow
    /// disk work to the finishers so that the connection goes on:
    ///
    /// - A delivered message with nothing left open leaves the queue here, before the
    ///   connection goes on (its envelope is renamed out of `env/`, which is cheap); the
    ///   finishers unlink its files.
    /// - A message some recipient has and whose new state must be written counts as unrecorded
    ///   until the finishers have written it; the connection goes on once every such message of
    ///   this thread but the latest is recorded (all of them without pipelining, see `ready`),
    ///   so the latest's write overlaps the next message's round trip.
    /// - Anything else (deferrals, failures) is the finishers' alone.
    ///
    /// A `kill -9` then finds at most two delivered but unrecorded messages per connection (a
    /// state being written, and the message in flight whose dot the server may have
    /// acknowledged), one without pipelining or when every message ends whole.
    fn finish(&mut self, locked: Locked<'a>) {
        let delivered = locked
            .envelope()
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Sent);
        let work = if delivered && locked.envelope().open_recipients().next().is_none() {
            let id = locked.id();
            match locked.take_out() {
                Ok(leftover) => Finishing::Discard(leftover),
                Err(e) => {
                    self.log
                        .warning(&format!("{id}: cannot write delivery state: {e}"));
                    self.summary.deferred += 1;
                    return;
                }
            }
        } else {
            Finishing::Record(locked, delivered.then(|| self.unrecorded.receipt()))
        };
        let counted = matches!(work, Finishing::Record(_, Some(_)));
        let id = work.id();
        self.in_hand.take(id);
        // The channel only closes when every finisher has died (a panic, which the scope raises
        // when it ends); the work is then done here rather than dropped.
        if let Err(SendError(work)) = self.finisher.send(work) {
            finish_work(work, self.log, &mut self.summary);
            self.in_hand.release(id);
        }
        if counted && self.pipelining {
            self.unrecorded.wait_until(1);
        }
    }
}
