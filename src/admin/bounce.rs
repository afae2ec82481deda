//! `bounce`: give up on a message now, as Exim's `-Mg` does. Its open recipients (with `-R`,
//! those in the domains named) fail with one delivery status notification to the sender, queued
//! before they are marked failed, so a crash in between may send it twice but never loses it.
//! A message with nothing left open leaves the queue; with `-R`, its other recipients stay.
//! No notification goes to the null sender or to a sender who asked for none (`NOTIFY`).

use crate::delivery::bounce::{FailedRecipient, queue_bounce};
use crate::maillog::MailLog;
use crate::queue::envelope::RecipientStatus;
use crate::queue::{Locked, Queue, QueueError};
use crate::smtp::EnhancedCode;

use super::Request;
use super::act::Done;

/// 5.0.0: no status says "cancelled by the administrator" better (Exim uses it too).
const CANCELLED: EnhancedCode = EnhancedCode {
    class: 5,
    subject: 0,
    detail: 0,
};

pub(super) fn bounce(
    queue: &Queue,
    config: &crate::config::Config,
    request: &Request,
    mut locked: Locked<'_>,
    log: &MailLog,
) -> Result<Done, QueueError> {
    let selection = &request.choice.selection;
    let indices: Vec<usize> = (0..locked.envelope().recipients.len())
        .filter(|&i| {
            let recipient = &locked.envelope().recipients[i];
            recipient.status.is_open() && selection.selects_recipient(recipient)
        })
        .collect();
    // The sender reads this: it names no one.
    let reason = |last: &str| {
        let cancelled = "delivery cancelled by the administrator";
        if last.is_empty() {
            cancelled.to_string()
        } else {
            format!("{cancelled}; last error: {last}")
        }
    };
    let failed: Vec<FailedRecipient> = indices
        .iter()
        .map(|&i| {
            let recipient = &locked.envelope().recipients[i];
            FailedRecipient {
                address: recipient.address.clone(),
                status: CANCELLED,
                remote_mta: None,
                diagnostic: None,
                reason: reason(&recipient.reason),
            }
        })
        .collect();
    let id = locked.id();
    let notice = queue_bounce(
        queue,
        &config.primary_hostname(),
        locked.envelope(),
        &failed,
        locked.data(),
        chrono::Local::now(),
    )?;
    let notice_words = match notice {
        Some(bounce_id) => {
            log.info(&format!(
                "{id}: sender non-delivery notification: {bounce_id}"
            ));
            format!("notice {bounce_id} to the sender")
        }
        None => "no notice (null sender, or none asked for)".to_string(),
    };
    let envelope = locked.envelope_mut();
    let delay = request.now.saturating_sub(envelope.arrival).max(0);
    for (&index, failure) in indices.iter().zip(&failed) {
        let recipient = &mut envelope.recipients[index];
        recipient.status = RecipientStatus::Failed;
        recipient.reason = failure.reason.clone();
        log.info(&format!(
            "{id}: to=<{}>, relay=none, delay={delay}, status=bounced ({})",
            recipient.address, failure.reason
        ));
    }
    let left = envelope.open_recipients().count();
    if left == 0 {
        locked.remove()?;
    } else {
        locked.save()?;
    }
    let count = super::recipients(indices.len());
    let rest = if left > 0 {
        format!("; {} stay queued", super::recipients(left))
    } else {
        String::new()
    };
    Ok(Done::Changed {
        line: format!("bounced ({count}, {notice_words}){rest}"),
        log: format!("bounced ({count})"),
    })
}
