//! Messages past the queue lifetime, and messages dated in the future.
//!
//! A recipient whose message is older than its domain's lifetime (`queue_lifetimes`, else
//! `queue_lifetime`) fails, held domains included: the sender gets one bounce (status 4.4.7) for
//! the recipients that expired together, naming each one's last error, and the message leaves
//! the queue once nothing is left open; recipients with a longer lifetime stay. When that bounce cannot be queued, the recipients stay open with
//! the expiry in their reason, and a later run fails them with the same words. A message that
//! arrived in the future (queued under a clock set wrong) is dated from now, on disk, so that it
//! expires in its time. Trouble with either is that message's alone: logged, counted, and left
//! for a later run.

use crate::maillog::MailLog;
use crate::queue::{LockAttempt, Queue, QueueId};

use super::RunSummary;
use super::finish::finish_logged;
use super::outcome::{EXPIRED, Outcome, quarantine, record};
use super::policy::Policy;
use super::retry;

/// Fails the expired recipients of a message, bounces them, and removes the message when
/// nothing is left open. Trouble stays with this message: it is logged and counted, and the
/// message waits for a later run.
pub(super) fn expire(
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
    let indices = retry::expired_recipients(policy.config, locked.envelope(), policy.now);
    if indices.is_empty() {
        return;
    }
    let mut outcomes = Vec::new();
    for &index in &indices {
        let recipient = &locked.envelope().recipients[index];
        let lifetime = policy.config.lifetime_of(recipient.domain()).as_secs();
        let reason = expired_reason(&recipient.reason, lifetime);
        outcomes.push((
            index,
            Outcome::Failed {
                status: EXPIRED,
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
pub(super) fn date_from_now(
    queue: &Queue,
    id: QueueId,
    arrival: i64,
    policy: &Policy<'_>,
    log: &MailLog,
) {
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

/// Why an expired recipient fails, from the reason its last attempt left (`last`).
fn expired_reason(last: &str, lifetime: u64) -> String {
    let expired = format!("message expired after {} in the queue", age_words(lifetime));
    // An expiry whose bounce could not be written before is already in the reason.
    if last.is_empty() {
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
    }
}

/// A lifetime in its largest whole unit: `5d`, `36h`, `90m`, `100s`.
fn age_words(seconds: u64) -> String {
    match seconds {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_is_told_in_its_largest_whole_unit() {
        let cases = [
            (5 * 86400, "5d"),
            (86400, "1d"),
            (36 * 3600, "36h"),
            (3600, "1h"),
            (90 * 60, "90m"),
            (60, "1m"),
            (100, "100s"),
            (1, "1s"),
            (86400 + 1, "86401s"),
        ];
        for (seconds, words) in cases {
            assert_eq!(age_words(seconds), words, "{seconds}s");
        }
    }

    #[test]
    fn an_expired_recipient_keeps_its_last_error_once() {
        let lifetime = 5 * 86400;
        let expired = "message expired after 5d in the queue";
        let cases = [
            ("never attempted", "", expired.to_string()),
            (
                "a last error",
                "host mx.customer.test[192.0.2.1]:25 said: 451 4.3.0 try later",
                format!(
                    "{expired}; last error: host mx.customer.test[192.0.2.1]:25 said: 451 4.3.0 \
                     try later"
                ),
            ),
            (
                "an expiry whose bounce could not be queued",
                "message expired after 5d in the queue; last error: 451 busy; not yet reported to \
                 the sender: disk full",
                format!("{expired}; last error: 451 busy"),
            ),
            (
                "an expiry with nothing more",
                "message expired after 5d in the queue",
                expired.to_string(),
            ),
            (
                "an expiry under another lifetime is a last error",
                "message expired after 2d in the queue",
                format!("{expired}; last error: message expired after 2d in the queue"),
            ),
        ];
        for (why, last, reason) in cases {
            assert_eq!(expired_reason(last, lifetime), reason, "{why}");
        }
    }
}
