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
//!     factor, 5xx fail and are bounced. A message with nothing left open is removed. Writing
//!     the state back and removing are left to a few finisher threads, so a connection goes on
//!     with the next message while the disk catches up; the message stays locked until they are
//!     done, and the run ends after them.
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
//!
//! SECURITY
//!     Everything from the network is bounded by the SMTP client and flattened before it is
//!     stored. Domains used for routing were validated when the message was queued.
//!
//! LIMITS
//!     Static routes match a domain exactly. Host names in bracketed routes are resolved with the
//!     system resolver (so `/etc/hosts` works for a smart host); MX targets with the DNS module.
//!     TLS encrypts but does not authenticate the server (Postfix's "may" and "encrypt" levels).

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, SendError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::address::{Address, Domain, ReversePath};
use crate::bounce::{self, FailedRecipient};
use crate::config::{Config, TlsPolicy};
use crate::dns::{DnsError, MxList, Resolver};
use crate::envelope::{Envelope, RecipientStatus};
use crate::maillog::MailLog;
use crate::queue::{LockAttempt, Locked, Place, Queue, QueueError, QueueId, SWEEP_GRACE, Unusable};
use crate::retry;
use crate::route::{RelayHost, RelayTarget, SMTP_PORT};
use crate::selection::Selection;
use crate::smtp::{
    Capabilities, ConnectOptions, Connection, Delivery, Message, Outbox, Reply, SmtpError,
    Timeouts, TlsClient, Transcript, Verification,
};

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
const FINISH_BACKLOG: usize = 256;

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
}

impl RunSummary {
    fn add(&mut self, other: &RunSummary) {
        self.sent += other.sent;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.busy += other.busy;
        self.corrupt += other.corrupt;
        self.skipped += other.skipped;
    }
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
}

impl Policy<'_> {
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
    };
    queue.sweep_tmp(SWEEP_GRACE)?;
    let mut summary = RunSummary::default();
    let jobs = plan(queue, &policy, log, &mut summary)?;
    let total: usize = jobs.iter().map(|job| job.ids.len()).sum();
    let progress = progress_bar(total);
    let busy = Mutex::new(Vec::new());
    summary.add(&work(queue, &policy, log, jobs, &busy, &progress));
    let retry_later: Vec<Job> = regroup(busy.into_inner().unwrap_or_default());
    let still_busy = Mutex::new(Vec::new());
    summary.add(&work(
        queue,
        &policy,
        log,
        retry_later,
        &still_busy,
        &progress,
    ));
    summary.busy += still_busy.into_inner().map(|v| v.len()).unwrap_or(0);
    progress.finish_and_clear();
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
        if retry::is_expired(policy.config, envelope.arrival, policy.now) {
            if (selection.is_everything() || selection.selects(&envelope))
                && let Err(e) = expire(queue, id, policy, log, summary)
            {
                skip(id, &e.to_string(), log, summary);
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
/// are done with to the finisher threads, which write its state back or remove it; the message
/// stays locked until they have. Returns once both have finished everything.
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
    let (finisher, finishing) = mpsc::sync_channel::<Locked<'_>>(FINISH_BACKLOG);
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
                    let Some(locked) = next else { break };
                    finish_logged(locked, log, &mut summary);
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
                    resolver: None,
                    summary: RunSummary::default(),
                };
                loop {
                    let next = pending.lock().ok().and_then(|mut p| p.pop_front());
                    let Some(job) = next else { break };
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

/// Fails what remains of an expired message, bounces it and removes it.
fn expire(
    queue: &Queue,
    id: QueueId,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) -> Result<(), QueueError> {
    let mut locked = match queue.try_lock(id)? {
        LockAttempt::Locked(locked) => locked,
        LockAttempt::Busy => {
            summary.busy += 1;
            return Ok(());
        }
        LockAttempt::Gone => return Ok(()),
        LockAttempt::Corrupt(reason) => {
            quarantine(queue, id, &reason, log, summary);
            return Ok(());
        }
    };
    let lifetime = policy.config.queue_lifetime.as_secs();
    let indices: Vec<usize> = (0..locked.envelope().recipients.len())
        .filter(|&i| locked.envelope().recipients[i].status.is_open())
        .collect();
    let mut outcomes = Vec::new();
    for &index in &indices {
        let last = locked.envelope().recipients[index].reason.clone();
        let reason = if last.is_empty() {
            format!("message expired after {} in the queue", age_words(lifetime))
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
    record(queue, &mut locked, outcomes, "none", policy, log, summary)?;
    finish_message(locked)
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
fn record(
    queue: &Queue,
    locked: &mut Locked<'_>,
    outcomes: Vec<(usize, Outcome)>,
    relay: &str,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) -> Result<(), QueueError> {
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
            Err(e) => return Err(e),
        }
    }
    let id = locked.id();
    let arrival = locked.envelope().arrival;
    let delay = (chrono::Utc::now().timestamp() - arrival).max(0);
    for (index, outcome) in outcomes {
        let recipient = &mut locked.envelope_mut().recipients[index];
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
    Ok(())
}

/// Writes the new state back, or removes the message when nothing is left open.
fn finish_message(locked: Locked<'_>) -> Result<(), QueueError> {
    if locked.envelope().open_recipients().next().is_none() {
        locked.remove()
    } else {
        locked.save()
    }
}

/// `finish_message`, with a failure logged and counted as a deferral: the message stays in the
/// queue with its old state, and a later run tries it again.
fn finish_logged(locked: Locked<'_>, log: &MailLog, summary: &mut RunSummary) {
    let id = locked.id();
    if let Err(e) = finish_message(locked) {
        log.warning(&format!("{id}: cannot write delivery state: {e}"));
        summary.deferred += 1;
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
    finisher: SyncSender<Locked<'a>>,
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

impl<'a> Worker<'a> {
    fn job(&mut self, job: &Job) {
        let mut targets: Option<Result<Vec<Target>, NoRoute>> = None;
        let mut cursor = 0;
        while cursor < job.ids.len() {
            let found = targets.get_or_insert_with(|| self.targets(job));
            let attempt = match found {
                Ok(list) => self.connect(list),
                Err(no_route) => Err(no_route.clone()),
            };
            let mut conn = match attempt {
                Ok(conn) => conn,
                Err(no_route) => {
                    for &id in &job.ids[cursor..] {
                        self.progress.inc(1);
                        self.without_connection(job, id, &no_route);
                    }
                    return;
                }
            };
            let peer = conn.peer().clone();
            let mut outbox = JobOutbox {
                relay: peer.to_string(),
                remote: peer
                    .name
                    .clone()
                    .or_else(|| Some(peer.addr.ip().to_string())),
                worker: self,
                job,
                cursor,
                in_flight: VecDeque::new(),
            };
            let delivered = conn.deliver_all(&mut outbox);
            cursor = outbox.cursor;
            // A broken connection is dropped; the rest of the job gets a fresh one.
            if delivered.is_ok() {
                conn.quit();
            }
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
    /// policy wants). Returns the last failure when none does.
    fn connect(&self, targets: &[Target]) -> Result<Connection, NoRoute> {
        let mut last = String::from("no host to try");
        for target in targets {
            let outcome = match self.session(target, self.policy.config.tls) {
                // Opportunistic TLS that fails is retried in clear, as the policy promises.
                Err(SessionError::TlsFailed(_))
                    if self.policy.config.tls == TlsPolicy::Opportunistic =>
                {
                    self.session(target, TlsPolicy::Off)
                }
                other => other,
            };
            match outcome {
                Ok(conn) => return Ok(conn),
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
        let Some(mut locked) = self.lock(job, id) else {
            return;
        };
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

    /// Locks a message of this job; a busy one is put aside for the end of the run.
    fn lock(&mut self, job: &Job, id: QueueId) -> Option<Locked<'a>> {
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
        if let Err(e) = record(
            self.queue,
            locked,
            outcomes,
            relay,
            self.policy,
            self.log,
            &mut self.summary,
        ) {
            self.log
                .warning(&format!("{}: state not recorded: {e}", locked.id()));
        }
    }

    /// Hands a message whose outcome is recorded to the finishers, so the connection does not
    /// wait for the disk.
    fn finish(&mut self, locked: Locked<'a>) {
        // The channel only closes when every finisher has died (a panic, which the scope raises
        // when it ends); the message is then finished here rather than released unsaved.
        if let Err(SendError(locked)) = self.finisher.send(locked) {
            finish_logged(locked, self.log, &mut self.summary);
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

/// Feeds one job's messages to a connection and records what the server says about each.
struct JobOutbox<'w, 'a> {
    worker: &'w mut Worker<'a>,
    job: &'w Job,
    /// The next message of the job to hand out.
    cursor: usize,
    in_flight: VecDeque<InFlight<'a>>,
    relay: String,
    remote: Option<String>,
}

impl JobOutbox<'_, '_> {
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

impl Outbox for JobOutbox<'_, '_> {
    fn next(&mut self, capabilities: &Capabilities) -> Option<Message> {
        while let Some(&id) = self.job.ids.get(self.cursor) {
            self.cursor += 1;
            self.worker.progress.inc(1);
            let Some(mut locked) = self.worker.lock(self.job, id) else {
                continue;
            };
            let indices = self.worker.indices(&locked, self.job);
            if indices.is_empty() {
                continue;
            }
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
                Err(outcomes) => {
                    self.worker.conclude(&mut locked, outcomes, &self.relay);
                    self.worker.finish(locked);
                }
            }
        }
        None
    }

    fn done(&mut self, outcome: Result<Delivery, &SmtpError>) {
        let Some(mut flight) = self.in_flight.pop_front() else {
            return;
        };
        let mut outcomes = std::mem::take(&mut flight.settled);
        for (position, &index) in flight.sent.iter().enumerate() {
            let result = match &outcome {
                Ok(delivery) => match delivery.outcome(position) {
                    Some(reply) => {
                        reply_outcome(reply, &self.relay, self.remote.clone(), delivery, position)
                    }
                    None => Outcome::Deferred {
                        reason: format!("{}: no reply for this recipient", self.relay),
                    },
                },
                Err(e) => Outcome::Deferred {
                    reason: e.to_string(),
                },
            };
            outcomes.push((index, result));
        }
        self.worker
            .conclude(&mut flight.locked, outcomes, &self.relay);
        self.worker.finish(flight.locked);
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

/// The outcome one reply means for a recipient.
fn reply_outcome(
    reply: &Reply,
    peer: &str,
    remote: Option<String>,
    delivery: &Delivery,
    position: usize,
) -> Outcome {
    let stage = if !delivery.mail.is_positive() {
        "MAIL FROM"
    } else if delivery
        .recipients
        .get(position)
        .is_some_and(|r| !r.is_positive())
    {
        "RCPT TO"
    } else {
        "end of DATA"
    };
    if reply.is_positive() {
        return Outcome::Sent {
            reply: reply.to_string(),
        };
    }
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
