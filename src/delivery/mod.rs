//! A queue run: deliver what is due (or what a run names) over SMTP, like `sendmail -q`.
//!
//! DESCRIPTION
//!     The run reads every envelope file once to plan (with -R, those the per-domain record
//!     names; a few threads read ahead; the advisory index is never consulted), without locking:
//!     which recipients are due, and where each
//!     goes (a static route, the smart host, or the MX hosts of its domain). Work is grouped by destination so one SMTP connection carries every
//!     message for it; a large group is split so that up to `-j` connections work in parallel.
//!     Each message is then locked, its envelope read again (another run may have moved on),
//!     delivered, and its new state written back before the lock is released: sent recipients
//!     are done, 4xx and connection trouble defer with the next attempt growing by the retry
//!     factor, 5xx fail and are bounced. A message with nothing left open is removed. A
//!     delivered message leaves the queue (or its new state is written) before its connection
//!     has more than one further message in flight; the slow disk work (unlinking files, writing
//!     and syncing states) is left to a few finisher threads, so that it overlaps the next
//!     message's round trip. A message stays locked until they are done, and the run ends after
//!     them. Before a message with more than one recipient to deliver is sent, the room for its
//!     next state is set aside on disk.
//!
//!     When a connection fails, the message whose transaction was under way is deferred as an
//!     attempt; the messages behind it, whose data never went out, go again at once on a new
//!     connection with no attempt counted. A message that was under way when a connection
//!     failed is sent alone, after the others, for the rest of the run. After two connections
//!     in a row fail before the server answered for any message, what is left for that
//!     destination waits for the next run.
//!
//! PROMISES
//!     No message is delivered by two runs at once (the queue lock is held across the SMTP
//!     conversation; busy messages are skipped and tried once more at the end of the run). A
//!     plain run never touches a held domain until it expires; a run names held mail with `-R`.
//!     Expired messages fail what remains, held domains included. A run adds no header. Every
//!     recipient attempt writes one log line. Bounces are queued before failures are recorded.
//!     A message whose files cannot be used is that message's trouble alone: damage is moved to
//!     `corrupt/`, a file this run may not read is logged and left in place (`skipped`), and the
//!     run goes on with the others.
//!     Asked to stop (`Stop`), a run takes no new message, ends the transactions in flight and
//!     records them: nothing is delivered twice. Killed outright, it delivers again only what was
//!     in flight (the bound is in `queue`'s known limits). A recipient some server accepted is
//!     never sent the message again because its state could not be written: the room for that
//!     state is reserved before sending, and without it nothing is sent. A bounce or a state that
//!     cannot be written (a full disk) is that message's trouble alone: logged, left queued,
//!     counted as deferred, and the pass goes on.
//!
//! SECURITY
//!     Everything from the network is bounded by the SMTP client, made printable where replies
//!     are parsed, and flattened before it is stored. Domains used for routing were validated
//!     when the message was queued.
//!
//! LIMITS
//!     Static routes match a domain exactly. Host names in bracketed routes are resolved with the
//!     system resolver (so `/etc/hosts` works for a smart host); MX targets with the DNS module.
//!     TLS encrypts but does not authenticate the server (Postfix's "may" and "encrypt" levels).
//!     Which message broke a connection is remembered for the run only: the envelope has no
//!     field for it that older readers would accept.
//!     A stop waits [`STOP_GRACE`] for what is in flight, then the process exits as if killed.
//!     Stored reasons are cut at 1 KiB.

pub mod bounce;
pub mod retry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufReader, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, SendError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::address::{Address, Domain, ReversePath};
use crate::config::{Config, TlsPolicy};
use crate::dns::{DnsError, MxList, Resolver};
use crate::maillog::MailLog;
use crate::queue::envelope::{Envelope, RecipientStatus};
use crate::queue::selection::Selection;
use crate::queue::{
    Leftover, LockAttempt, Locked, Place, Queue, QueueError, QueueId, SWEEP_GRACE, Unusable,
};
use crate::route::{RelayHost, RelayTarget, SMTP_PORT};
use crate::smtp::{
    Attempt, Capabilities, ConnectOptions, Connection, Message, Outbox, Sent, SmtpError, Timeouts,
    TlsClient, Transcript, Verdict, Verification,
};
use crate::sysexits::Status;
use bounce::FailedRecipient;

/// Messages per connection below which a destination is not split across connections.
const MIN_BATCH: usize = 50;

/// Threads that write back or remove the messages connections are done with. Removal dominates
/// on a disk: on ext4 mounted with online `discard` each freed file waits ~180 µs for the device,
/// which overlaps the waits of several threads. Flushing 10,000 4 KB messages to a local sink
/// (2 busy cores, medians of 3 to 8 runs) took 4.7 s with 1 finisher, 3.2–3.5 s with 4,
/// 2.7–3.2 s with 8, 2.6 s with 16 and with 32, against 2.4–2.5 s for `rm` alone to free the
/// same 20,000 files 16 at a time: 16 reach what the device can do, more gain nothing. On tmpfs
/// the count made no difference. An idle finisher costs only its stack.
const FINISHERS: usize = 16;

/// The largest and the smallest buffer a message is read through on its way to the server.
const MESSAGE_BUFFER: usize = 64 * 1024;
const MESSAGE_BUFFER_MIN: usize = 4 * 1024;

/// Messages waiting for a finisher. Each holds its lock and one open file, so the backlog is
/// bounded: when the disk falls behind, delivery waits instead of running out of descriptors.
/// Delivered messages are bounded much tighter, by the duplicate bound (see `Worker::finish`).
const FINISH_BACKLOG: usize = 256;

/// How long the transactions in progress may take to end once a run is asked to stop; after
/// that the process exits as if killed, and what is still in flight stays queued.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The longest reason (a server's reply, an error) stored for a recipient and logged: a reply
/// of hundreds of lines is cut, and the space a message's next state needs is known in advance.
const REASON_MAX: usize = 1024;

/// What a run was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `-R`, `-S`, `-I`.
    pub selection: Selection,
    /// `-f`: ignore the next-attempt time.
    pub force: bool,
    /// Only messages of at most this many bytes.
    pub max_size: Option<u64>,
    /// Only messages of at least this many bytes.
    pub min_size: Option<u64>,
    /// Parallel SMTP connections.
    pub jobs: usize,
    /// `-v`: the SMTP conversation on stderr.
    pub transcript: Transcript,
    /// SMTP time limits.
    pub timeouts: Timeouts,
    /// Set when the run is asked to stop.
    pub stop: Stop,
}

/// What a run did, recipient by recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub sent: usize,
    pub deferred: usize,
    pub failed: usize,
    /// Messages another run held throughout this one.
    pub busy: usize,
    /// Damaged messages, moved to `corrupt/` (or left there for a runner that held them).
    pub corrupt: usize,
    /// Messages whose files this run could not use (another user's file, not a regular file, a
    /// read error): left in place, reported, and tried again by a later run.
    pub skipped: usize,
    /// Messages left untouched because the run was asked to stop.
    pub left: usize,
}

impl RunSummary {
    fn add(&mut self, other: &RunSummary) {
        self.sent += other.sent;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.busy += other.busy;
        self.corrupt += other.corrupt;
        self.skipped += other.skipped;
        self.left += other.left;
    }

    /// True when something this run was asked to deliver is still owed: deferred, left
    /// untouched by a stop, or skipped because its files could not be used.
    pub fn is_incomplete(&self) -> bool {
        self.deferred > 0 || self.left > 0 || self.skipped > 0
    }
}

/// A request to stop: runs take no new message, finish the transactions in progress and record
/// every outcome. Shared by every run of a process; set once, never cleared.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    /// The signal that asked, 0 while none has.
    signal: AtomicI32,
    lock: Mutex<()>,
    asked: Condvar,
}

impl Stop {
    /// Asks every run sharing this value to stop; `signal` names the reason.
    pub fn request(&self, signal: i32) {
        let _guard = self.0.lock.lock();
        let _ = self
            .0
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.0.asked.notify_all();
    }

    /// The signal that asked for the stop, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.0.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    pub fn is_requested(&self) -> bool {
        self.signal().is_some()
    }

    /// Waits for `duration`, or until a stop is asked for; true when it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let Ok(mut guard) = self.0.lock.lock() else {
            return self.is_requested();
        };
        loop {
            if self.is_requested() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.0.asked.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(_) => return self.is_requested(),
            };
        }
    }

    /// A stop asked for by SIGTERM, SIGINT or SIGHUP (`systemctl stop`, Ctrl-C, a dropped ssh
    /// session). A second signal, or [`STOP_GRACE`] without the process ending, ends it at once
    /// with EX_TEMPFAIL: what is in flight then stays queued, as after `kill -9`. A signal the
    /// process was started with ignored (`nohup`, `&` in a script) stays ignored.
    pub fn on_signals(log: Arc<MailLog>) -> std::io::Result<Stop> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let ignored = ignored_signals();
        let wanted = [SIGTERM, SIGINT, SIGHUP]
            .into_iter()
            .filter(|&signal| !ignored.contains(&signal));
        let mut signals = signal_hook::iterator::Signals::new(wanted)?;
        let stop = Stop::default();
        let asked = stop.clone();
        std::thread::spawn(move || {
            let mut arriving = signals.forever();
            let Some(first) = arriving.next() else {
                return;
            };
            // Logged first: a run that was waiting between passes ends as soon as it is asked.
            log.info(&format!(
                "stopping on {}: no new message is taken; what is in flight ends within {}s",
                signal_name(first),
                STOP_GRACE.as_secs()
            ));
            asked.request(first);
            let watchdog = Arc::clone(&log);
            std::thread::spawn(move || {
                std::thread::sleep(STOP_GRACE);
                watchdog.warning(&format!(
                    "stop: still busy after {}s; exiting, what is in flight stays queued",
                    STOP_GRACE.as_secs()
                ));
                std::process::exit(i32::from(Status::TempFail.code()));
            });
            if let Some(second) = arriving.next() {
                log.warning(&format!(
                    "stopping at once on a second signal ({}); what is in flight stays queued",
                    signal_name(second)
                ));
                std::process::exit(i32::from(Status::TempFail.code()));
            }
        });
        Ok(stop)
    }
}

/// The signals this process ignores, from the kernel's view of it; none when that cannot be read.
fn ignored_signals() -> Vec<i32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    (1..=64)
        .filter(|signal| mask & (1u64 << (signal - 1)) != 0)
        .collect()
}

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

/// Where a recipient's mail goes next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Destination {
    /// A static route or the smart host.
    Relay(String),
    /// The MX hosts of a domain.
    Domain(String),
}

/// The rules of this run, applied the same way when planning and after locking.
struct Policy<'a> {
    config: &'a Config,
    options: &'a RunOptions,
    now: i64,
    here: Domain,
    /// Messages that were under way when a connection failed: for the rest of the run each is
    /// sent alone, on its own connection after the others, so it cannot take them down again.
    alone: Mutex<HashSet<QueueId>>,
}

impl Policy<'_> {
    fn sends_alone(&self, id: QueueId) -> bool {
        self.alone.lock().is_ok_and(|alone| alone.contains(&id))
    }

    fn send_alone(&self, id: QueueId) {
        if let Ok(mut alone) = self.alone.lock() {
            alone.insert(id);
        }
    }

    /// True when this run attempts `domain`'s recipient now.
    fn wants(&self, envelope: &Envelope, index: usize) -> bool {
        let recipient = &envelope.recipients[index];
        let selection = &self.options.selection;
        if !recipient.status.is_open()
            || !selection.selects_recipient(recipient)
            || !selection.selects_message(envelope)
        {
            return false;
        }
        let held = Domain::parse(recipient.domain()).is_ok_and(|d| self.config.is_held(&d));
        if held && self.options.selection.domains.is_empty() {
            return false;
        }
        let named = !self.options.selection.is_everything() || self.options.force;
        named || recipient.next_attempt <= self.now
    }

    fn size_selected(&self, envelope: &Envelope) -> bool {
        self.options.max_size.is_none_or(|max| envelope.size <= max)
            && self.options.min_size.is_none_or(|min| envelope.size >= min)
    }

    /// The static route for `domain`, else the smart host, else its MX hosts.
    fn destination(&self, domain: &str) -> (Destination, Option<&RelayTarget>) {
        let key = domain.to_ascii_lowercase();
        if let Some((_, target)) = self.config.routes.get(&key) {
            return (Destination::Relay(target.to_string()), Some(target));
        }
        if let Some(target) = &self.config.smarthost {
            return (Destination::Relay(target.to_string()), Some(target));
        }
        (Destination::Domain(key), None)
    }
}

/// One connection's work: messages for one destination.
struct Job {
    destination: Destination,
    relay: Option<RelayTarget>,
    ids: Vec<QueueId>,
}

/// Runs the queue once.
pub fn run(
    queue: &Queue,
    config: &Config,
    options: &RunOptions,
    log: &MailLog,
) -> Result<RunSummary, QueueError> {
    let policy = Policy {
        config,
        options,
        now: chrono::Utc::now().timestamp(),
        here: config.primary_hostname(),
        alone: Mutex::new(HashSet::new()),
    };
    queue.sweep_tmp(SWEEP_GRACE)?;
    let mut summary = RunSummary::default();
    let jobs = plan(queue, &policy, log, &mut summary)?;
    let total: usize = jobs.iter().map(|job| job.ids.len()).sum();
    let progress = progress_bar(total);
    let busy = Mutex::new(Vec::new());
    summary.add(&work(queue, &policy, log, jobs, &busy, &progress));
    let busy = busy.into_inner().unwrap_or_default();
    if options.stop.is_requested() {
        summary.busy += busy.len();
    } else {
        let still_busy = Mutex::new(Vec::new());
        summary.add(&work(
            queue,
            &policy,
            log,
            regroup(busy),
            &still_busy,
            &progress,
        ));
        summary.busy += still_busy.into_inner().map(|v| v.len()).unwrap_or(0);
    }
    progress.finish_and_clear();
    if let Some(signal) = options.stop.signal() {
        log.info(&format!(
            "stopped on {}: {} messages left for the next run",
            signal_name(signal),
            summary.left
        ));
    }
    Ok(summary)
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    if total == 0 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(total as u64)
}

/// Reads every envelope once, expires what is too old and groups what is due by destination.
fn plan(
    queue: &Queue,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) -> Result<Vec<Job>, QueueError> {
    let selection = &policy.options.selection;
    let mut groups: HashMap<Destination, Job> = HashMap::new();
    // Decisions come from the envelope files, never from the advisory index. With -R, the
    // per-domain record chooses which files: that domain's, not the whole queue's. Sweeping
    // reads all of data/, so only a pass over the whole queue does it.
    let scan = if selection.domains.is_empty() {
        queue.sweep_orphans(SWEEP_GRACE)?;
        queue.scan_files()?
    } else {
        queue.scan_domains(&selection.domains)?
    };
    let active: Vec<(QueueId, Place)> = scan
        .ids()
        .iter()
        .filter(|(_, place)| *place == Place::Active)
        .copied()
        .collect();
    // Envelopes are read ahead on a few threads; each is handled here, in queue order.
    scan.for_each(&active, |inspection| -> Result<(), QueueError> {
        let id = inspection.id;
        let envelope = match inspection.envelope {
            Ok(envelope) => envelope,
            // Whether it is wanted cannot be known; unless -I rules it out, it is reported.
            Err(_) if !selection.selects_id(id.as_str()) => return Ok(()),
            Err(Unusable::Damaged(reason)) => {
                quarantine(queue, id, &reason, log, summary);
                return Ok(());
            }
            Err(Unusable::Inaccessible(reason)) => {
                skip(id, &reason, log, summary);
                return Ok(());
            }
        };
        if !policy.size_selected(&envelope) {
            return Ok(());
        }
        if envelope.arrival > policy.now {
            date_from_now(queue, id, envelope.arrival, policy, log);
        }
        if retry::is_expired(policy.config, envelope.arrival, policy.now) {
            if selection.is_everything() || selection.selects(&envelope) {
                expire(queue, id, policy, log, summary);
            }
            return Ok(());
        }
        for index in 0..envelope.recipients.len() {
            if !policy.wants(&envelope, index) {
                continue;
            }
            let (destination, relay) = policy.destination(envelope.recipients[index].domain());
            let job = groups.entry(destination.clone()).or_insert_with(|| Job {
                destination,
                relay: relay.cloned(),
                ids: Vec::new(),
            });
            if job.ids.last() != Some(&id) {
                job.ids.push(id);
            }
        }
        Ok(())
    })?;
    match scan.record_rebuild() {
        Some((why, Some(Ok(())))) => log.info(&format!(
            "per-domain record rebuilt from every envelope ({why})"
        )),
        Some((why, Some(Err(e)))) => log.warning(&format!(
            "per-domain record not rebuilt ({why}): {e}; runs with -R read the whole queue until it is"
        )),
        _ => {}
    }
    Ok(split(
        groups.into_values().collect(),
        policy.options.jobs.max(1),
    ))
}

/// Splits big destinations so `jobs` connections can share them; biggest work first.
fn split(groups: Vec<Job>, jobs: usize) -> Vec<Job> {
    let mut out = Vec::new();
    for group in groups {
        let size = group.ids.len().div_ceil(jobs).max(MIN_BATCH);
        for chunk in group.ids.chunks(size) {
            out.push(Job {
                destination: group.destination.clone(),
                relay: group.relay.clone(),
                ids: chunk.to_vec(),
            });
        }
    }
    out.sort_by_key(|job| std::cmp::Reverse(job.ids.len()));
    out
}

fn regroup(busy: Vec<(Destination, Option<RelayTarget>, QueueId)>) -> Vec<Job> {
    let mut groups: HashMap<Destination, Job> = HashMap::new();
    for (destination, relay, id) in busy {
        groups
            .entry(destination.clone())
            .or_insert_with(|| Job {
                destination,
                relay,
                ids: Vec::new(),
            })
            .ids
            .push(id);
    }
    groups.into_values().collect()
}

type Busy = Mutex<Vec<(Destination, Option<RelayTarget>, QueueId)>>;

/// Runs `jobs` on up to `policy.options.jobs` threads. Delivery threads hand each message they
/// are done with to the finisher threads, which write its state back or remove its files (see
/// `Worker::finish`); the message stays locked until they have. Once a stop is asked for, the
/// jobs not begun are left. Returns once both have finished everything.
fn work(
    queue: &Queue,
    policy: &Policy<'_>,
    log: &MailLog,
    jobs: Vec<Job>,
    busy: &Busy,
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
    std::thread::scope(|scope| {
        for _ in 0..FINISHERS {
            let (finishing, total) = (Arc::clone(&finishing), &total);
            scope.spawn(move || {
                let mut summary = RunSummary::default();
                loop {
                    // The channel closes when every delivery thread has ended and dropped its
                    // sender, after the backlog is drained.
                    let next = finishing.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some(work) = next else { break };
                    finish_work(work, log, &mut summary);
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
                    progress,
                    finisher,
                    unrecorded: Arc::default(),
                    pipelining: true,
                    resolver: None,
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

/// Reports a message this run cannot use and leaves it where it is.
fn skip(id: QueueId, reason: &str, log: &MailLog, summary: &mut RunSummary) {
    summary.skipped += 1;
    log.warning(&format!("{id}: skipped, left in place: {reason}"));
}

fn quarantine(queue: &Queue, id: QueueId, reason: &str, log: &MailLog, summary: &mut RunSummary) {
    summary.corrupt += 1;
    let moved = queue.quarantine(id, Place::Active).unwrap_or(false);
    let disposition = if moved {
        "moved to corrupt/"
    } else {
        "left in place"
    };
    log.warning(&format!(
        "{id}: unreadable envelope ({reason}); {disposition}"
    ));
}

/// Fails what remains of an expired message, bounces it and removes it. Trouble stays with
/// this message: it is logged and counted, and the message waits for a later run.
fn expire(
    queue: &Queue,
    id: QueueId,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) {
    if policy.options.stop.is_requested() {
        summary.left += 1;
        return;
    }
    let mut locked = match queue.try_lock(id) {
        Ok(LockAttempt::Locked(locked)) => locked,
        Ok(LockAttempt::Busy) => {
            summary.busy += 1;
            return;
        }
        Ok(LockAttempt::Gone) => return,
        Ok(LockAttempt::Corrupt(reason)) => {
            quarantine(queue, id, &reason, log, summary);
            return;
        }
        Err(e) => {
            log.warning(&format!("{id}: {e}"));
            summary.deferred += 1;
            return;
        }
    };
    let lifetime = policy.config.queue_lifetime.as_secs();
    let indices: Vec<usize> = (0..locked.envelope().recipients.len())
        .filter(|&i| locked.envelope().recipients[i].status.is_open())
        .collect();
    let mut outcomes = Vec::new();
    for &index in &indices {
        let last = locked.envelope().recipients[index].reason.clone();
        let expired = format!("message expired after {} in the queue", age_words(lifetime));
        // An expiry whose bounce could not be written before is already in the reason.
        let reason = if last.is_empty() {
            expired
        } else if last.starts_with(&expired) {
            last.split("; not yet reported to the sender")
                .next()
                .unwrap_or(&expired)
                .to_string()
        } else {
            format!(
                "message expired after {} in the queue; last error: {last}",
                age_words(lifetime)
            )
        };
        outcomes.push((
            index,
            Outcome::Failed {
                status: "4.4.7".to_string(),
                remote: None,
                diagnostic: None,
                reason,
            },
        ));
    }
    record(queue, &mut locked, outcomes, "none", policy, log, summary);
    finish_logged(locked, None, log, summary);
}

/// Dates a message whose arrival lies in the future (queued under a clock set wrong) from now,
/// on disk, so that it expires in its time. A message busy or unreadable now is dated by a
/// later run.
fn date_from_now(queue: &Queue, id: QueueId, arrival: i64, policy: &Policy<'_>, log: &MailLog) {
    let Ok(LockAttempt::Locked(mut locked)) = queue.try_lock(id) else {
        return;
    };
    let envelope = locked.envelope_mut();
    envelope.arrival = retry::clamp_arrival(envelope.arrival, policy.now);
    match locked.save() {
        Ok(()) => log.warning(&format!(
            "{id}: arrival time {arrival} lies in the future; its age now counts from {}",
            policy.now
        )),
        Err(e) => log.warning(&format!(
            "{id}: arrival time {arrival} lies in the future and cannot be corrected: {e}"
        )),
    }
}

fn age_words(seconds: u64) -> String {
    match seconds {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What happened to one recipient in this attempt.
#[derive(Clone)]
enum Outcome {
    Sent {
        reply: String,
    },
    Deferred {
        reason: String,
    },
    Failed {
        status: String,
        remote: Option<String>,
        diagnostic: Option<String>,
        reason: String,
    },
}

/// Applies outcomes to the envelope: bounce first, then the new state, then one log line each.
/// When the bounce cannot be queued the failures stay open as deferrals, so they fail and are
/// reported on a later attempt; what was sent is recorded all the same.
fn record(
    queue: &Queue,
    locked: &mut Locked<'_>,
    mut outcomes: Vec<(usize, Outcome)>,
    relay: &str,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) {
    let failed: Vec<FailedRecipient> = outcomes
        .iter()
        .filter_map(|(index, outcome)| match outcome {
            Outcome::Failed {
                status,
                remote,
                diagnostic,
                reason,
            } => Some(FailedRecipient {
                address: locked.envelope().recipients[*index].address.clone(),
                status: status.clone(),
                remote_mta: remote.clone(),
                diagnostic: diagnostic.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let data = locked.data();
        match bounce::queue_bounce(
            queue,
            &policy.here,
            locked.envelope(),
            &failed,
            data,
            chrono::Local::now(),
        ) {
            Ok(Some(bounce_id)) => log.info(&format!(
                "{}: sender non-delivery notification: {bounce_id}",
                locked.id()
            )),
            Ok(None) => {}
            Err(e) => {
                log.warning(&format!(
                    "{}: cannot queue the non-delivery notification: {e}",
                    locked.id()
                ));
                for (_, outcome) in outcomes.iter_mut() {
                    if let Outcome::Failed { reason, .. } = outcome {
                        let reason = std::mem::take(reason);
                        *outcome = Outcome::Deferred {
                            reason: format!("{reason}; not yet reported to the sender: {e}"),
                        };
                    }
                }
            }
        }
    }
    let id = locked.id();
    let envelope = locked.envelope_mut();
    envelope.arrival = retry::clamp_arrival(envelope.arrival, policy.now);
    let delay = (chrono::Utc::now().timestamp() - envelope.arrival).max(0);
    for (index, mut outcome) in outcomes {
        match &mut outcome {
            Outcome::Sent { reply: text } | Outcome::Deferred { reason: text } => {
                cut(text, REASON_MAX)
            }
            Outcome::Failed { reason, .. } => cut(reason, REASON_MAX),
        }
        let recipient = &mut envelope.recipients[index];
        recipient.attempts = recipient.attempts.saturating_add(1);
        let (status, text) = match outcome {
            Outcome::Sent { reply } => {
                summary.sent += 1;
                recipient.status = RecipientStatus::Sent;
                recipient.reason = reply.clone();
                ("sent", reply)
            }
            Outcome::Deferred { reason } => {
                summary.deferred += 1;
                recipient.status = RecipientStatus::Deferred;
                recipient.next_attempt =
                    retry::next_attempt(policy.config, recipient.attempts, policy.now);
                recipient.reason = reason.clone();
                ("deferred", reason)
            }
            Outcome::Failed { reason, .. } => {
                summary.failed += 1;
                recipient.status = RecipientStatus::Failed;
                recipient.reason = reason.clone();
                ("bounced", reason)
            }
        };
        log.info(&format!(
            "{id}: to=<{}>, relay={relay}, delay={delay}, status={status} ({text})",
            recipient.address
        ));
    }
}

/// Shortens `text` to at most `max` bytes, on a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The most bytes a message's envelope can take once the recipients at `indices` have their
/// outcome: each may end deferred with the longest reason and the widest numbers.
fn state_ceiling(envelope: &Envelope, indices: &[usize]) -> u64 {
    let mut worst = envelope.clone();
    for &index in indices {
        if let Some(recipient) = worst.recipients.get_mut(index) {
            recipient.status = RecipientStatus::Deferred;
            recipient.attempts = u32::MAX;
            recipient.next_attempt = i64::MIN;
            recipient.reason = "x".repeat(REASON_MAX);
        }
    }
    worst.to_bytes().len() as u64
}

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
fn finish_logged(
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
enum Finishing<'a> {
    /// A message to write back or remove, with its receipt when some recipient has it.
    Record(Locked<'a>, Option<Receipt>),
    /// The files of a delivered message that has left the queue.
    Discard(Leftover<'a>),
}

fn finish_work(work: Finishing<'_>, log: &MailLog, summary: &mut RunSummary) {
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
struct Unrecorded {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Unrecorded {
    fn receipt(self: &Arc<Self>) -> Receipt {
        if let Ok(mut count) = self.count.lock() {
            *count += 1;
        }
        Receipt(Arc::clone(self))
    }

    /// Waits until at most `most` are left.
    fn wait_until(&self, most: usize) {
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
struct Receipt(Arc<Unrecorded>);

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Ok(mut count) = self.0.count.lock() {
            *count = count.saturating_sub(1);
        }
        self.0.changed.notify_all();
    }
}

/// One delivery thread.
struct Worker<'a> {
    queue: &'a Queue,
    policy: &'a Policy<'a>,
    log: &'a MailLog,
    busy: &'a Busy,
    progress: &'a indicatif::ProgressBar,
    /// Where messages go once their outcome is recorded.
    finisher: SyncSender<Finishing<'a>>,
    /// This thread's delivered messages whose state the finishers have not written yet.
    unrecorded: Arc<Unrecorded>,
    /// Whether the current connection pipelines: it then has two messages in flight.
    pipelining: bool,
    resolver: Option<Resolver>,
    summary: RunSummary,
}

/// A host to try, in order.
struct Target {
    name: Option<String>,
    addr: SocketAddr,
}

/// Why a destination has no host to try.
#[derive(Clone)]
struct NoRoute {
    permanent: bool,
    status: &'static str,
    reason: String,
}

/// Connections to one destination that fail in a row, each before the server answered for any
/// message, after which the destination is given up for the run (Postfix's dead destination):
/// a server that stalls or fails on every message would otherwise cost one full time limit per
/// message.
const FRUITLESS_CONNECTIONS: usize = 2;

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
        let mut fruitless = 0;
        while !lane.is_done() {
            let found = targets.get_or_insert_with(|| self.targets(job));
            let attempt = match found {
                Ok(list) => self.connect(list),
                Err(no_route) => Err(no_route.clone()),
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
                    conn.quit();
                    continue;
                }
                // A failed connection is dropped, never reused.
                Err(failure) => failure,
            };
            fruitless = if answered == 0 { fruitless + 1 } else { 0 };
            if fruitless >= FRUITLESS_CONNECTIONS && !lane.is_done() {
                let no_route = NoRoute {
                    permanent: false,
                    status: "4.4.2",
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

    /// Defers (or fails) what remains of a lane when its destination cannot be reached.
    fn abandon(&mut self, job: &Job, mut lane: Lane<'_, 'a>, no_route: &NoRoute) {
        while let Some(locked) = lane.again.pop_front() {
            self.unroutable(job, locked, no_route);
        }
        for &id in &lane.ids[lane.cursor..] {
            self.progress.inc(1);
            self.without_connection(job, id, no_route);
        }
    }

    /// The hosts to try for a destination, in order, with their addresses.
    fn targets(&mut self, job: &Job) -> Result<Vec<Target>, NoRoute> {
        match (&job.relay, &job.destination) {
            (Some(relay), _) if !relay.mx_lookup => relay_targets(relay),
            (Some(relay), _) => match &relay.host {
                RelayHost::Name(name) => self.mx_targets(name, relay.port),
                RelayHost::Ip(ip) => Ok(vec![Target {
                    name: None,
                    addr: SocketAddr::new(*ip, relay.port),
                }]),
            },
            (None, Destination::Domain(domain)) | (None, Destination::Relay(domain)) => {
                match Domain::parse(domain) {
                    Ok(d) if d.is_literal() => literal_target(&d),
                    Ok(d) => self.mx_targets(&d, SMTP_PORT),
                    Err(e) => Err(NoRoute {
                        permanent: true,
                        status: "5.1.2",
                        reason: format!("bad destination domain: {e}"),
                    }),
                }
            }
        }
    }

    fn resolver(&mut self) -> Result<&Resolver, NoRoute> {
        if self.resolver.is_none() {
            let resolver = Resolver::for_program(&[], self.policy.config, Duration::from_secs(10))
                .map_err(|e| NoRoute {
                    permanent: false,
                    status: "4.4.3",
                    reason: format!("cannot set up DNS: {e}"),
                })?;
            self.resolver = Some(resolver);
        }
        self.resolver.as_ref().ok_or_else(|| NoRoute {
            permanent: false,
            status: "4.4.3",
            reason: "no DNS resolver".to_string(),
        })
    }

    fn mx_targets(&mut self, domain: &Domain, port: u16) -> Result<Vec<Target>, NoRoute> {
        let hostnames = self.policy.config.hostnames.clone();
        let resolver = self.resolver()?;
        let mut rng = fastrand::Rng::new();
        let list = resolver
            .mail_exchangers(domain, &hostnames, &mut rng)
            .map_err(|e| dns_no_route(domain, &e))?;
        let hosts = match list {
            MxList::NullMx => {
                return Err(NoRoute {
                    permanent: true,
                    status: "5.1.10",
                    reason: format!("{domain} accepts no mail (null MX)"),
                });
            }
            MxList::ThisHostIsBest { preference } => {
                return Err(NoRoute {
                    permanent: false,
                    status: "4.4.6",
                    reason: format!(
                        "mail for {domain} loops back to myself: this host is its best MX ({preference})"
                    ),
                });
            }
            list => list.hosts().to_vec(),
        };
        let mut targets = Vec::new();
        let mut last_error = None;
        for mx in hosts {
            let name = mx.host.as_str();
            let v4 = resolver.ipv4(name);
            let v6 = resolver.ipv6(name);
            let addresses: Vec<IpAddr> = v4
                .iter()
                .flatten()
                .map(|ip| IpAddr::V4(*ip))
                .chain(v6.iter().flatten().map(|ip| IpAddr::V6(*ip)))
                .collect();
            if addresses.is_empty() {
                last_error = v4.err().or(v6.err());
            }
            targets.extend(addresses.into_iter().map(|ip| Target {
                name: Some(name.to_string()),
                addr: SocketAddr::new(ip, port),
            }));
        }
        if targets.is_empty() {
            return Err(match last_error {
                Some(e) => dns_no_route(domain, &e),
                None => NoRoute {
                    permanent: false,
                    status: "4.4.3",
                    reason: format!("no address for any MX host of {domain}"),
                },
            });
        }
        Ok(targets)
    }

    /// Connects to the first target that greets and takes EHLO/HELO (and STARTTLS as the
    /// policy wants). With the connection comes, when opportunistic TLS failed and the session
    /// went on in clear text, why it failed: every log line of the session says so. Returns the
    /// last failure when no target will do.
    fn connect(&self, targets: &[Target]) -> Result<(Connection, Option<String>), NoRoute> {
        let mut last = String::from("no host to try");
        for target in targets {
            let outcome = match self.session(target, self.policy.config.tls) {
                // Opportunistic TLS that fails is retried in clear, as the policy promises.
                Err(SessionError::TlsFailed(failure))
                    if self.policy.config.tls == TlsPolicy::Opportunistic =>
                {
                    self.session(target, TlsPolicy::Off)
                        .map(|conn| (conn, Some(failure.to_string())))
                }
                other => other.map(|conn| (conn, None)),
            };
            match outcome {
                Ok(session) => return Ok(session),
                Err(e) => last = e.to_string(),
            }
        }
        Err(NoRoute {
            permanent: false,
            status: "4.4.1",
            reason: last,
        })
    }

    fn session(&self, target: &Target, tls: TlsPolicy) -> Result<Connection, SessionError> {
        let options = ConnectOptions {
            timeouts: self.policy.options.timeouts,
            family: Default::default(),
            transcript: self.policy.options.transcript.clone(),
        };
        let mut conn = Connection::open(target.addr, target.name.clone(), &options)?;
        conn.greeting()?;
        conn.hello(&self.policy.here)?;
        let offered = conn.capabilities().starttls();
        match (tls, offered) {
            (TlsPolicy::Off, _) | (TlsPolicy::Opportunistic, false) => Ok(conn),
            (TlsPolicy::Required, false) => Err(SessionError::TlsRequired(conn.peer().to_string())),
            (_, true) => {
                let client = TlsClient::new(Verification::Insecure);
                conn.starttls(&client).map_err(SessionError::TlsFailed)?;
                conn.hello(&self.policy.here)?;
                Ok(conn)
            }
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
                        status: no_route.status.to_string(),
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
        match self.queue.try_lock(id) {
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
        // The channel only closes when every finisher has died (a panic, which the scope raises
        // when it ends); the work is then done here rather than dropped.
        if let Err(SendError(work)) = self.finisher.send(work) {
            finish_work(work, self.log, &mut self.summary);
        }
        if counted && self.pipelining {
            self.unrecorded.wait_until(1);
        }
    }
}

/// A message handed to the SMTP connection and not yet answered.
struct InFlight<'a> {
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
struct JobOutbox<'w, 'j, 'a> {
    worker: &'w mut Worker<'a>,
    job: &'w Job,
    lane: &'w mut Lane<'j, 'a>,
    in_flight: VecDeque<InFlight<'a>>,
    relay: String,
    remote: Option<String>,
    /// Why opportunistic TLS failed, when this connection fell back to clear text.
    clear_text: Option<String>,
    /// Messages the server answered for on this connection.
    answered: usize,
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
                status: "5.3.4".into(),
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
                        status: "5.1.3".into(),
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

/// Why a session could not be set up on one host.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error("{0}: TLS is required but the server does not offer STARTTLS")]
    TlsRequired(String),
    #[error(transparent)]
    TlsFailed(SmtpError),
}

/// The outcome the server's verdict means for a recipient: sent, deferred on 4xx, failed on 5xx.
fn reply_outcome(verdict: &Verdict, peer: &str, remote: Option<String>) -> Outcome {
    let (stage, reply) = match verdict {
        Verdict::Accepted(reply) => {
            return Outcome::Sent {
                reply: reply.to_string(),
            };
        }
        Verdict::Refused { stage, reply } => (stage, reply),
    };
    let reason = format!("host {peer} said: {reply} (in reply to {stage})");
    if reply.is_transient() {
        return Outcome::Deferred { reason };
    }
    let status = reply
        .enhanced
        .map(|code| code.to_string())
        .unwrap_or_else(|| "5.0.0".to_string());
    Outcome::Failed {
        status,
        remote,
        diagnostic: Some(reply.to_string()),
        reason,
    }
}

impl Outcome {
    /// Adds a remark about the attempt to the text the log line shows.
    fn note(&mut self, remark: &str) {
        let text = match self {
            Outcome::Sent { reply } => reply,
            Outcome::Deferred { reason } | Outcome::Failed { reason, .. } => reason,
        };
        text.push_str("; ");
        text.push_str(remark);
    }
}

/// A bracketed route: the host itself, no MX lookup; names through the system resolver.
fn relay_targets(relay: &RelayTarget) -> Result<Vec<Target>, NoRoute> {
    let name = match &relay.host {
        RelayHost::Name(name) => Some(name.to_string()),
        RelayHost::Ip(_) => None,
    };
    crate::smtp::resolve(&relay.host, relay.port, Default::default())
        .map(|addrs| {
            addrs
                .into_iter()
                .map(|addr| Target {
                    name: name.clone(),
                    addr,
                })
                .collect()
        })
        .map_err(|e| NoRoute {
            permanent: false,
            status: "4.4.3",
            reason: e.to_string(),
        })
}

/// `user@[192.0.2.1]`: straight to that address.
fn literal_target(domain: &Domain) -> Result<Vec<Target>, NoRoute> {
    let inner = domain
        .as_str()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner
        .parse::<IpAddr>()
        .map(|ip| {
            vec![Target {
                name: None,
                addr: SocketAddr::new(ip, SMTP_PORT),
            }]
        })
        .map_err(|_| NoRoute {
            permanent: true,
            status: "5.1.2",
            reason: format!("bad address literal {domain}"),
        })
}

/// A DNS failure as a routing verdict: a name that does not exist fails, the rest defers.
fn dns_no_route(domain: &Domain, err: &DnsError) -> NoRoute {
    if err.is_transient() {
        NoRoute {
            permanent: false,
            status: "4.4.3",
            reason: format!("DNS lookup for {domain} failed: {err}"),
        }
    } else {
        NoRoute {
            permanent: true,
            status: "5.1.2",
            reason: format!("host or domain name not found: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogTarget;
    use crate::queue::envelope::Recipient;
    use std::io::Write;
    use std::path::Path;

    struct Fixture {
        dir: tempfile::TempDir,
        queue: Queue,
        log: MailLog,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&dir.path().join("q")).unwrap();
        let log = MailLog::open(&LogTarget::File(dir.path().join("log")), "queue-run");
        Fixture { dir, queue, log }
    }

    impl Fixture {
        fn commit(&self, recipients: &[&str], arrival: i64) -> QueueId {
            let mut draft = self.queue.draft().unwrap();
            draft.write_all(b"Subject: s\n\nbody\n").unwrap();
            let envelope = Envelope {
                id: draft.id(),
                arrival,
                size: 17,
                sender: "frank@sender.test".into(),
                notify: None,
                ret: None,
                envid: None,
                recipients: recipients
                    .iter()
                    .map(|r| Recipient::new(r.to_string()))
                    .collect(),
            };
            draft.commit(&envelope).unwrap()
        }

        fn envelope(&self, id: QueueId) -> Option<Envelope> {
            match self.queue.try_lock(id).unwrap() {
                LockAttempt::Locked(locked) => Some(locked.envelope().clone()),
                _ => None,
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        }

        fn tmp(&self) -> std::path::PathBuf {
            self.queue.root().join("tmp")
        }
    }

    fn policy<'a>(config: &'a Config, options: &'a RunOptions, now: i64) -> Policy<'a> {
        Policy {
            config,
            options,
            now,
            here: Domain::parse("mx2.isp.test").unwrap(),
            alone: Mutex::default(),
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn an_arrival_in_the_future_is_dated_from_now_and_then_expires() {
        let f = fixture();
        let config = Config {
            hold_domains: vec![Domain::parse("customer.test").unwrap()],
            ..Config::default()
        };
        let options = RunOptions::default();
        let now = 1_800_000_000;
        let id = f.commit(&["u@customer.test"], now + 30 * 86400);
        let mut summary = RunSummary::default();

        let jobs = plan(
            &f.queue,
            &policy(&config, &options, now),
            &f.log,
            &mut summary,
        )
        .unwrap();
        assert!(jobs.is_empty(), "held mail is not attempted");
        assert_eq!(
            f.envelope(id).unwrap().arrival,
            now,
            "dated from now, on disk"
        );
        assert!(f.log().contains("lies in the future"), "{}", f.log());

        let later = now + config.queue_lifetime.as_secs() as i64;
        plan(
            &f.queue,
            &policy(&config, &options, later),
            &f.log,
            &mut summary,
        )
        .unwrap();
        assert!(f.envelope(id).is_none(), "expired and removed");
        assert_eq!(summary.failed, 1);
        let bounce = f.queue.ids().unwrap();
        assert_eq!(bounce.len(), 1, "one bounce queued");
        let bounce = f.envelope(bounce[0].0).unwrap();
        assert_eq!(bounce.recipients[0].address, "frank@sender.test");
    }

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
        let progress = indicatif::ProgressBar::hidden();
        let (finisher, finishing) = mpsc::sync_channel(FINISH_BACKLOG);
        let mut worker = Worker {
            queue: &f.queue,
            policy: &policy,
            log: &f.log,
            busy: &busy,
            progress: &progress,
            finisher,
            unrecorded: Arc::default(),
            pipelining: true,
            resolver: None,
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

    #[test]
    fn what_was_sent_is_recorded_in_the_reservation_when_nothing_else_can_be_written() {
        let f = fixture();
        let config = Config::default();
        let options = RunOptions::default();
        let now = chrono::Utc::now().timestamp();
        let policy = policy(&config, &options, now);
        let id = f.commit(&["a@customer.test", "b@customer.test"], now);
        let LockAttempt::Locked(mut locked) = f.queue.try_lock(id).unwrap() else {
            panic!("not locked")
        };
        locked
            .reserve(state_ceiling(locked.envelope(), &[0, 1]))
            .unwrap();
        // No new file can be made under tmp/ (as on a full disk): the bounce fails.
        let away = f.queue.root().join("tmp.away");
        std::fs::rename(f.tmp(), &away).unwrap();
        std::fs::write(f.tmp(), b"not a directory").unwrap();
        let outcomes = vec![
            (
                0,
                Outcome::Sent {
                    reply: "250 2.0.0 Ok".into(),
                },
            ),
            (
                1,
                Outcome::Failed {
                    status: "5.1.1".into(),
                    remote: None,
                    diagnostic: Some("550 5.1.1 no such user".into()),
                    reason: "host said: 550 5.1.1 no such user".into(),
                },
            ),
        ];
        let mut summary = RunSummary::default();
        record(
            &f.queue,
            &mut locked,
            outcomes,
            "sink",
            &policy,
            &f.log,
            &mut summary,
        );
        finish_logged(locked, None, &f.log, &mut summary);
        assert!(
            f.log()
                .contains("cannot queue the non-delivery notification")
        );
        assert!(
            !f.log().contains("cannot write delivery state"),
            "{}",
            f.log()
        );
        assert_eq!((summary.sent, summary.deferred, summary.failed), (1, 1, 0));

        let envelope = f.envelope(id).unwrap();
        assert_eq!(envelope.recipients[0].status, RecipientStatus::Sent);
        assert_eq!(envelope.recipients[1].status, RecipientStatus::Deferred);
        assert!(
            envelope.recipients[1]
                .reason
                .contains("not yet reported to the sender")
        );
        assert_eq!(f.queue.ids().unwrap().len(), 1, "no bounce was queued");
        assert!(
            entries(&away).is_empty(),
            "the reservation became the envelope"
        );
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let mut text = "é".repeat(REASON_MAX);
        cut(&mut text, REASON_MAX + 1);
        assert_eq!(text.len(), REASON_MAX);
        let mut short = String::from("250 ok");
        cut(&mut short, REASON_MAX);
        assert_eq!(short, "250 ok");
    }

    #[test]
    fn a_stop_wakes_a_sleeper_and_stays() {
        let stop = Stop::default();
        assert!(!stop.sleep(Duration::ZERO));
        let asker = stop.clone();
        let sleeper = std::thread::spawn(move || stop.sleep(Duration::from_secs(3600)));
        asker.request(15);
        asker.request(2);
        assert!(sleeper.join().unwrap(), "woken by the stop");
        assert_eq!(asker.signal(), Some(15), "the first signal is kept");
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
}
