//! What an attempt did, written down: the bounce, the new state, one log line per recipient.
//!
//! An attempt ends each recipient it tried in one of three ways (`Outcome`): sent; deferred (a
//! 4xx, trouble on the way, a destination that cannot be reached now); or failed (a 5xx, a
//! permanent routing error, an expired message). `record` applies them in the order that loses
//! nothing: the bounce for the failures is queued first, then the new state is set in the
//! envelope, then each recipient's log line is written. When the bounce cannot be queued, the
//! failures stay open as deferrals and fail on a later attempt; what was sent is recorded all
//! the same. A deferral sets the next attempt by the retry schedule (see `retry`).
//!
//! A message whose files cannot be used is that message's trouble alone and is recorded here
//! too: damage is moved to `corrupt/` (`quarantine`), a file this run may not read is left in
//! place (`skip`).
//!
//! Statuses are typed (`EnhancedCode`) from the reply or the routing decision to the bounce:
//! the server's own code when its refusal carried one, else one of the codes named below. They
//! are written as they always were (`5.1.1`).
//!
//! Replies and errors come from the network: the SMTP client made them printable, and they are
//! cut at `REASON_MAX` bytes before they are stored or logged, which also bounds the room a
//! message's next state needs (`state_ceiling`).

use crate::maillog::MailLog;
use crate::queue::envelope::{Envelope, RecipientStatus};
use crate::queue::{Locked, Place, Queue, QueueId};
use crate::smtp::{EnhancedCode, Verdict};

use super::RunSummary;
use super::bounce::{self, FailedRecipient};
use super::policy::Policy;
use super::retry;

/// The longest reason (a server's reply, an error) stored for a recipient and logged: a reply
/// of hundreds of lines is cut, and the space a message's next state needs is known in advance.
pub(super) const REASON_MAX: usize = 1024;

/// The enhanced status codes (RFC 3463) delivery gives itself, for the bounce's `Status:` field:
/// a refusal carries the server's own code when it gave one.
const fn code(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode {
        class,
        subject,
        detail,
    }
}

/// 4.4.1: no host of the destination answered, or none would do.
pub(super) const NO_ANSWER: EnhancedCode = code(4, 4, 1);
/// 4.4.2: connections to the destination kept failing.
pub(super) const BAD_CONNECTION: EnhancedCode = code(4, 4, 2);
/// 4.4.3: DNS, or the system resolver, could not answer now.
pub(super) const DIRECTORY_FAILURE: EnhancedCode = code(4, 4, 3);
/// 4.4.6: the mail would loop back to this host.
pub(super) const ROUTING_LOOP: EnhancedCode = code(4, 4, 6);
/// 4.4.7: the message outlived the queue lifetime.
pub(super) const EXPIRED: EnhancedCode = code(4, 4, 7);
/// 5.0.0: a permanent refusal whose reply carried no enhanced code of its class.
pub(super) const OTHER_PERMANENT: EnhancedCode = code(5, 0, 0);
/// 5.1.2: the destination domain does not exist, or is no valid destination.
pub(super) const BAD_DESTINATION: EnhancedCode = code(5, 1, 2);
/// 5.1.3: a recipient address in the queue that does not parse.
pub(super) const BAD_MAILBOX_SYNTAX: EnhancedCode = code(5, 1, 3);
/// 5.1.10: the domain accepts no mail (a null MX, RFC 7505).
pub(super) const NULL_MX: EnhancedCode = code(5, 1, 10);
/// 5.3.4: the message is bigger than the server takes.
pub(super) const TOO_BIG: EnhancedCode = code(5, 3, 4);

/// What happened to one recipient in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Sent {
        reply: String,
    },
    Deferred {
        reason: String,
    },
    Failed {
        status: EnhancedCode,
        remote: Option<String>,
        diagnostic: Option<String>,
        reason: String,
    },
}

/// The outcome the server's verdict means for a recipient: sent, deferred on 4xx, failed on 5xx.
pub(super) fn reply_outcome(verdict: &Verdict, peer: &str, remote: Option<String>) -> Outcome {
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
    let status = reply.enhanced.unwrap_or(OTHER_PERMANENT);
    Outcome::Failed {
        status,
        remote,
        diagnostic: Some(reply.to_string()),
        reason,
    }
}

impl Outcome {
    /// Adds a remark about the attempt to the text the log line shows.
    pub(super) fn note(&mut self, remark: &str) {
        let text = match self {
            Outcome::Sent { reply } => reply,
            Outcome::Deferred { reason } | Outcome::Failed { reason, .. } => reason,
        };
        text.push_str("; ");
        text.push_str(remark);
    }
}

/// Applies outcomes to the envelope: bounce first, then the new state, then one log line each.
/// When the bounce cannot be queued the failures stay open as deferrals, so they fail and are
/// reported on a later attempt; what was sent is recorded all the same.
pub(super) fn record(
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
                status: *status,
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
pub(super) fn state_ceiling(envelope: &Envelope, indices: &[usize]) -> u64 {
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

/// Reports a message this run cannot use and leaves it where it is.
pub(super) fn skip(id: QueueId, reason: &str, log: &MailLog, summary: &mut RunSummary) {
    summary.skipped += 1;
    log.warning(&format!("{id}: skipped, left in place: {reason}"));
}

pub(super) fn quarantine(
    queue: &Queue,
    id: QueueId,
    reason: &str,
    log: &MailLog,
    summary: &mut RunSummary,
) {
    summary.corrupt += 1;
    let moved = queue.quarantine(id, Place::Active).unwrap_or(false);
    log.warning(&format!(
        "{id}: unreadable envelope ({reason}); {}",
        crate::queue::disposition(moved)
    ));
}

#[cfg(test)]
mod tests;
