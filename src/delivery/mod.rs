//! A queue run: deliver what is due (or what a run names) over SMTP, like `sendmail -q`.
//!
//! A run reads every envelope file once to plan, without locking: which recipients are due, and
//! where each goes (a static route, the smart host, or the MX hosts of its domain). Work is
//! grouped by destination so that one SMTP connection carries every message for it; a large
//! group is split so that up to `-j` connections work in parallel. A run over the whole queue
//! plans and delivers it in batches of `queue_run_batch` messages, oldest first, so that its
//! memory does not grow with the queue (see `plan`). Each message is then locked,
//! its envelope read again (another run may have moved on), delivered, and its new state written
//! back before the lock is released: sent recipients are done, 4xx and connection trouble defer
//! with the next attempt growing by the retry factor, 5xx fail and are bounced. A message with
//! nothing left open is removed.
//!
//! The parts, in the order a run uses them:
//!
//! - `policy`: which recipients a run attempts now, and where each one's mail goes.
//! - `plan`: the one pass over the queue, and the jobs it makes (one per connection).
//! - `expiry`: messages past the queue lifetime, and messages dated in the future.
//! - `worker`: the delivery threads, and the connection's side of a job (`worker::outbox`).
//! - `targets`: the hosts to try for a destination (routes, MX, address literals).
//! - `connect`: the session (`smtp::establish`) on the first host that will do.
//! - `turnaround`: or the one connection an ODMR customer opened, instead of routing.
//! - `outcome`: what an attempt did, written down: bounce, new state, log line.
//! - `finish`: the finisher threads that write states and remove what is done.
//! - [`retry`] and [`bounce`]: when to try again, and telling a sender that mail failed.
//! - `warning`: telling a sender, once, that mail is late (`delay_warning`).
//! - `stop`: asking a run to stop ([`Stop`]).
//!
//! # Promises
//!
//! - No message is delivered by two runs at once: the queue lock is held across the SMTP
//!   conversation; busy messages are skipped and tried once more at the end of the batch.
//! - A plain run never touches a held domain until it expires; a run names held mail with `-R`.
//!   Expired messages fail what remains, held domains included.
//! - A run adds no header. Every recipient attempt writes one log line. Bounces are queued
//!   before failures are recorded.
//! - A message whose files cannot be used is that message's trouble alone: damage is moved to
//!   `corrupt/`, a file this run may not read is logged and left in place (`skipped`), and the
//!   run goes on with the others.
//! - Asked to stop ([`Stop`]), a run takes no new message, ends the transactions in flight and
//!   records them: nothing is delivered twice. Killed outright, it delivers again only what was
//!   in flight (the bound is in `queue`'s known limits).
//! - A recipient some server accepted is never sent the message again because its state could
//!   not be written: the room for that state is reserved before sending, and without it nothing
//!   is sent. A bounce or a state that cannot be written (a full disk) is that message's trouble
//!   alone: logged, left queued, counted as deferred, and the pass goes on.
//!
//! # Security
//!
//! Everything from the network is bounded by the SMTP client, made printable where replies are
//! parsed, and flattened before it is stored. Domains used for routing were validated when the
//! message was queued.
//!
//! # Limits
//!
//! - Static routes match a domain exactly.
//! - Host names in bracketed routes are resolved with the system resolver (so `/etc/hosts` works
//!   for a smart host); MX targets with the DNS module.
//! - TLS encrypts but does not authenticate the server (Postfix's "may" and "encrypt" levels).
//! - Which message broke a connection is remembered for the run only: the envelope has no field
//!   for it that older readers would accept.
//! - A stop waits [`STOP_GRACE`] for what is in flight, then the process exits as if killed.
//! - Stored reasons are cut at 1 KiB.

pub mod bounce;
mod connect;
mod expiry;
mod finish;
mod outcome;
mod plan;
mod policy;
pub mod retry;
mod stop;
mod targets;
#[cfg(test)]
mod testing;
mod turnaround;
mod warning;
mod worker;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::maillog::MailLog;
use crate::queue::selection::Selection;
use crate::queue::{Queue, QueueError, SWEEP_GRACE};
use crate::smtp::{Timeouts, TlsClient, Transcript, Verification};

pub use stop::{STOP_GRACE, Stop};
pub use turnaround::Turnaround;

use policy::Policy;

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
    /// Deliver everything down this connection instead of routing (ODMR, see `turnaround`).
    pub turnaround: Option<Arc<Turnaround>>,
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
    /// Messages left untouched because the run was asked to stop: those due in the batch under
    /// way, and every active message of the batches not yet read.
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
        tls: TlsClient::new(Verification::Insecure),
        alone: Mutex::new(HashSet::new()),
    };
    queue.sweep_tmp(SWEEP_GRACE)?;
    let mut summary = RunSummary::default();
    let mut passes = plan::Passes::begin(queue, &policy)?;
    let progress = indicatif::ProgressBar::hidden();
    let given_up = worker::GivenUp::default();
    while !options.stop.is_requested() {
        let Some(pass) = passes.next()? else { break };
        let jobs = plan::plan(queue, &pass, &policy, log, &mut summary)?;
        // The jobs hold what is due; the pass's list of every id goes before they are delivered.
        drop(pass);
        show_progress(&progress, jobs.iter().map(|job| job.ids.len()).sum());
        summary.add(&deliver(queue, &policy, log, jobs, &given_up, &progress));
    }
    progress.finish_and_clear();
    if options.stop.is_requested() {
        summary.left += passes.untaken()?;
    }
    if let Some(signal) = options.stop.signal() {
        log.info(&format!(
            "stopped on {}: {} messages left for the next run",
            stop::signal_name(signal),
            summary.left
        ));
    }
    Ok(summary)
}

/// Delivers one pass's jobs, then once more what another run held meanwhile.
fn deliver(
    queue: &Queue,
    policy: &Policy<'_>,
    log: &MailLog,
    jobs: Vec<plan::Job>,
    given_up: &worker::GivenUp,
    progress: &indicatif::ProgressBar,
) -> RunSummary {
    let busy = Mutex::new(Vec::new());
    let mut summary = worker::work(queue, policy, log, jobs, &busy, given_up, progress);
    let busy = busy.into_inner().unwrap_or_default();
    if policy.options.stop.is_requested() {
        summary.busy += busy.len();
        return summary;
    }
    let still_busy = Mutex::new(Vec::new());
    let jobs = plan::regroup(busy);
    summary.add(&worker::work(
        queue,
        policy,
        log,
        jobs,
        &still_busy,
        given_up,
        progress,
    ));
    summary.busy += still_busy.into_inner().map(|v| v.len()).unwrap_or(0);
    summary
}

/// Adds a pass's messages to the progress bar, which shows once there is work and stderr is a
/// terminal.
fn show_progress(progress: &indicatif::ProgressBar, more: usize) {
    if more == 0 {
        return;
    }
    if progress.is_hidden() && std::io::stderr().is_terminal() {
        progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    progress.inc_length(more as u64);
}
