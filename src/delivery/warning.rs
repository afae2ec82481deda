//! Delay warnings: telling a sender, once, that a message is late (RFC 3464 `Action: delayed`),
//! like sendmail's `Timeout.queuewarn` and Postfix's `delay_warning_time`.
//!
//! Off unless `delay_warning` is set. A message gets at most one warning, from the first run
//! that finds it older than `delay_warning` with a recipient still open, not expired, and not in
//! `hold_domains`: a site that collects its mail by ETRN is late by design, so its recipients
//! are never the reason for a warning, nor listed in one. Nothing goes to `<>` or to a sender
//! whose NOTIFY leaves out DELAY. A message on administrative hold is read by no run, so it is
//! never warned about while held.
//!
//! The warning is queued before the envelope records it (`warned`), as bounces are: a crash in
//! between may warn twice, never not at all. A message a runner holds is warned about by a
//! later run; a warning that cannot be queued is logged and tried again by the next run.

use crate::address::Domain;
use crate::maillog::MailLog;
use crate::queue::envelope::Envelope;
use crate::queue::{LockAttempt, Queue, QueueId};
use crate::smtp::EnhancedCode;

use super::bounce::{FailedRecipient, queue_delay_warning, wants_delay_warning};
use super::policy::Policy;
use super::retry;

/// 4.0.0: the envelope keeps no enhanced code of the last deferral; the words carry it.
const LATE: EnhancedCode = EnhancedCode {
    class: 4,
    subject: 0,
    detail: 0,
};

/// The recipients of `envelope` a warning is about at `now`, when one is due.
fn late_recipients(envelope: &Envelope, policy: &Policy<'_>) -> Vec<usize> {
    let Some(after) = policy.config.delay_warning else {
        return Vec::new();
    };
    if envelope.warned.is_some()
        || !wants_delay_warning(envelope)
        || !retry::is_expired(after, envelope.arrival, policy.now)
    {
        return Vec::new();
    }
    (0..envelope.recipients.len())
        .filter(|&i| {
            let recipient = &envelope.recipients[i];
            let lifetime = policy.config.lifetime_of(recipient.domain());
            recipient.status.is_open()
                && !retry::is_expired(lifetime, envelope.arrival, policy.now)
                && !Domain::parse(recipient.domain()).is_ok_and(|d| policy.config.is_held(&d))
        })
        .collect()
}

/// Warns the sender of message `id` when a warning is due; `envelope` is what the plan read.
pub(super) fn warn_if_due(
    queue: &Queue,
    id: QueueId,
    envelope: &Envelope,
    policy: &Policy<'_>,
    log: &MailLog,
) {
    if late_recipients(envelope, policy).is_empty() || policy.options.stop.is_requested() {
        return;
    }
    let Ok(LockAttempt::Locked(mut locked)) = queue.try_lock(id) else {
        return;
    };
    let late = late_recipients(locked.envelope(), policy);
    if late.is_empty() {
        return;
    }
    let envelope = locked.envelope();
    let delayed: Vec<FailedRecipient> = late
        .iter()
        .map(|&i| {
            let recipient = &envelope.recipients[i];
            FailedRecipient {
                address: recipient.address.clone(),
                status: LATE,
                remote_mta: None,
                diagnostic: None,
                reason: if recipient.reason.is_empty() {
                    "not yet delivered".to_string()
                } else {
                    recipient.reason.clone()
                },
            }
        })
        .collect();
    // The earliest expiry among them: until then every one of them is still being tried.
    let until = late
        .iter()
        .map(|&i| {
            let lifetime = policy.config.lifetime_of(envelope.recipients[i].domain());
            envelope
                .arrival
                .saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX))
        })
        .min()
        .unwrap_or(envelope.arrival);
    let queued = queue_delay_warning(
        queue,
        &policy.here,
        envelope,
        &delayed,
        until,
        locked.data(),
        chrono::Local::now(),
    );
    match queued {
        Ok(Some(warning)) => {
            log.info(&format!("{id}: sender delay notification: {warning}"));
            locked.envelope_mut().warned = Some(policy.now);
            if let Err(e) = locked.save() {
                log.warning(&format!("{id}: cannot record its delay notification: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => log.warning(&format!("{id}: cannot queue the delay notification: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::delivery::RunOptions;
    use crate::delivery::testing::{envelope, policy};
    use crate::queue::envelope::{Recipient, RecipientStatus};
    use std::time::Duration;

    const NOW: i64 = 1_000_000;

    /// (why, config, sender, notify, warned, arrival, recipients, late)
    type Case<'a> = (
        &'a str,
        &'a Config,
        &'a str,
        Option<&'a str>,
        Option<i64>,
        i64,
        Vec<Recipient>,
        Vec<usize>,
    );

    #[test]
    fn a_warning_is_due_once_after_the_delay_and_never_for_held_or_null() {
        let config = Config {
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            hold_domains: vec![Domain::parse("held.test").unwrap()].into(),
            ..Config::default()
        };
        let off = Config {
            delay_warning: None,
            ..config.clone()
        };
        let options = RunOptions::default();
        let open = |address: &str| Recipient::new(address.into());
        let sent = |address: &str| Recipient {
            status: RecipientStatus::Sent,
            ..Recipient::new(address.into())
        };
        let hours = |h: i64| NOW - h * 3600;
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("late", &config, "a@x.test", None, None, hours(5), vec![open("u@other.test")], vec![0]),
            ("exactly at the delay", &config, "a@x.test", None, None, hours(4), vec![open("u@other.test")], vec![0]),
            ("not late yet", &config, "a@x.test", None, None, hours(3), vec![open("u@other.test")], vec![]),
            ("off by default", &off, "a@x.test", None, None, hours(50), vec![open("u@other.test")], vec![]),
            ("warned already", &config, "a@x.test", None, Some(hours(1)), hours(5), vec![open("u@other.test")], vec![]),
            ("null sender", &config, "", None, None, hours(5), vec![open("u@other.test")], vec![]),
            ("NOTIFY without DELAY", &config, "a@x.test", Some("failure"), None, hours(5), vec![open("u@other.test")], vec![]),
            ("NOTIFY with DELAY", &config, "a@x.test", Some("FAILURE,DELAY"), None, hours(5), vec![open("u@other.test")], vec![0]),
            ("held domain only", &config, "a@x.test", None, None, hours(5), vec![open("u@held.test"), open("v@sub.held.test")], vec![]),
            ("held and not", &config, "a@x.test", None, None, hours(5), vec![open("u@held.test"), open("v@other.test")], vec![1]),
            ("sent is not late", &config, "a@x.test", None, None, hours(5), vec![sent("u@other.test"), open("v@other.test")], vec![1]),
            ("expired is not late", &config, "a@x.test", None, None, NOW - 6 * 86400, vec![open("u@other.test")], vec![]),
        ];
        for (why, config, sender, notify, warned, arrival, recipients, late) in cases {
            let mut e = envelope(sender, recipients);
            e.notify = notify.map(str::to_string);
            e.warned = warned;
            e.arrival = arrival;
            assert_eq!(
                late_recipients(&e, &policy(config, &options, NOW)),
                late,
                "{why}"
            );
        }
    }
}
