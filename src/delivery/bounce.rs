//! Delivery status notifications: telling a sender that mail failed, or is late (RFC 3464).
//!
//! A bounce is one `multipart/report` message per failed message and run, listing every
//! recipient that failed in that run with its status code, the host that refused it and that
//! host's words, followed by the original headers (or the whole message with DSN `RET=FULL`). It
//! is queued like any other message, from the null sender `<>`, so it is itself never bounced:
//! a failure to deliver a bounce is logged and dropped, which is what stops bounce loops and
//! storms. Nothing is sent for a null sender or when the sender asked for no failure notices
//! (`NOTIFY=NEVER`, or a NOTIFY list without FAILURE).
//!
//! Bounces are queued before the failed recipients are marked failed: a crash in between may send
//! a bounce twice, never lose one.
//!
//! A delay warning ([`queue_delay_warning`]) is the same report with `Action: delayed`, the date
//! until which delivery goes on (`Will-Retry-Until`) and the original headers only; it goes to
//! senders who did not ask for no delay notices (`NOTIFY` without DELAY), never to `<>`.

use std::io::{BufRead, BufReader, Read, Write};

use crate::address::Domain;
use crate::header::rfc5322_date;
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{Queue, QueueError, QueueId};
use crate::smtp::EnhancedCode;

/// One recipient to report as failed.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// The RFC 3463 status, `5.1.1`.
    pub status: EnhancedCode,
    /// The host that gave the final answer, when one did.
    pub remote_mta: Option<String>,
    /// The server's reply (`550 5.1.1 <u@x>: User unknown`), when there was one.
    pub diagnostic: Option<String>,
    /// Why, in words, for the human part.
    pub reason: String,
}

/// True when the sender of `envelope` is to hear about failures.
pub fn wants_bounce(envelope: &Envelope) -> bool {
    notifies(envelope, "failure")
}

/// True when the sender of `envelope` is to hear that its delivery is late: not `<>`, and no
/// NOTIFY list that leaves DELAY out (without one, a warning is sent, as sendmail does).
pub fn wants_delay_warning(envelope: &Envelope) -> bool {
    notifies(envelope, "delay")
}

/// True when the sender of `envelope` hears of `event`: not `<>`, and no NOTIFY list (RFC 3461)
/// that leaves it out.
fn notifies(envelope: &Envelope, event: &str) -> bool {
    if envelope.sender.is_empty() {
        return false;
    }
    match &envelope.notify {
        None => true,
        Some(notify) => notify
            .split(',')
            .any(|word| word.trim().eq_ignore_ascii_case(event)),
    }
}

/// Queues a bounce for `failed` recipients of `original`, whose stored bytes `data` yields.
/// Returns the bounce's id, or `None` when the sender does not get one.
pub fn queue_bounce(
    queue: &Queue,
    here: &Domain,
    original: &Envelope,
    failed: &[FailedRecipient],
    data: impl Read,
    now: chrono::DateTime<chrono::Local>,
) -> Result<Option<QueueId>, QueueError> {
    if failed.is_empty() || !wants_bounce(original) {
        return Ok(None);
    }
    queue_notice(queue, Notice::Failure, here, original, failed, data, now).map(Some)
}

/// Queues a delay warning for the `delayed` recipients of `original` (their `reason` is the
/// last error, their `status` a 4.x.x code), saying delivery goes on until the epoch second
/// `until`. Returns its id, or `None` when the sender does not get one.
pub fn queue_delay_warning(
    queue: &Queue,
    here: &Domain,
    original: &Envelope,
    delayed: &[FailedRecipient],
    until: i64,
    data: impl Read,
    now: chrono::DateTime<chrono::Local>,
) -> Result<Option<QueueId>, QueueError> {
    if delayed.is_empty() || !wants_delay_warning(original) {
        return Ok(None);
    }
    let notice = Notice::Delay { until };
    queue_notice(queue, notice, here, original, delayed, data, now).map(Some)
}

/// What a report tells the sender.
#[derive(Debug, Clone, Copy)]
enum Notice {
    /// The recipients failed: delivery has ended.
    Failure,
    /// The recipients are late: delivery goes on until this epoch second.
    Delay { until: i64 },
}

fn queue_notice(
    queue: &Queue,
    notice: Notice,
    here: &Domain,
    original: &Envelope,
    recipients: &[FailedRecipient],
    data: impl Read,
    now: chrono::DateTime<chrono::Local>,
) -> Result<QueueId, QueueError> {
    let mut draft = queue.draft()?;
    let id = draft.id();
    let written = write_report(
        &mut draft, notice, id, here, original, recipients, data, now,
    );
    let size = written.map_err(|source| QueueError::Io {
        action: "cannot write bounce",
        path: queue.root().join("tmp"),
        source,
    })?;
    let envelope = Envelope {
        id,
        arrival: now.timestamp(),
        size,
        sender: String::new(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients: vec![Recipient::new(original.sender.clone())],
    };
    draft.commit(&envelope)
}

/// Counts what passes through, to learn the message size while streaming it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    out: impl Write,
    notice: Notice,
    id: QueueId,
    here: &Domain,
    original: &Envelope,
    recipients: &[FailedRecipient],
    data: impl Read,
    now: chrono::DateTime<chrono::Local>,
) -> std::io::Result<u64> {
    let mut out = Counting {
        inner: out,
        count: 0,
    };
    let date = rfc5322_date(&now);
    let local = |epoch: i64| {
        chrono::DateTime::from_timestamp(epoch, 0)
            .map(|t| rfc5322_date(&t.with_timezone(&chrono::Local)))
            .unwrap_or_else(|| date.clone())
    };
    let arrival = local(original.arrival);
    let boundary = format!("{id}/{here}");
    // The whole message goes back with a failure only: a warning says the message is still
    // on its way.
    let full = matches!(notice, Notice::Failure)
        && original
            .ret
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case("full"));
    let (subject, summary) = match notice {
        Notice::Failure => (
            "Undelivered Mail Returned to Sender".to_string(),
            "to the recipients below, and has given up.".to_string(),
        ),
        Notice::Delay { until } => (
            "Delayed Mail (still being retried)".to_string(),
            format!(
                "to the recipients below yet. This is a warning only: it keeps\n\
                 trying until {}, and you need not send the message again.",
                local(until)
            ),
        ),
    };
    let not = match notice {
        Notice::Failure => "could not deliver",
        Notice::Delay { .. } => "has not been able to deliver",
    };

    write!(
        out,
        "Date: {date}\n\
         From: Mail Delivery System <MAILER-DAEMON@{here}>\n\
         To: <{sender}>\n\
         Subject: {subject}\n\
         Message-ID: <{id}@{here}>\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\n\
         \n\
         This is a delivery status notification in MIME format.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         The mail system at {here} {not} your message\n\
         (queue id {original_id}) {summary}\n\
         \n",
        sender = original.sender,
        original_id = original.id,
    )?;
    for f in recipients {
        writeln!(out, "<{}>: {}", f.address, f.reason)?;
    }
    write!(
        out,
        "\n--{boundary}\n\
         Content-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; {here}\n"
    )?;
    if let Some(envid) = &original.envid {
        writeln!(out, "Original-Envelope-Id: {envid}")?;
    }
    writeln!(out, "Arrival-Date: {arrival}")?;
    let action = match notice {
        Notice::Failure => "failed",
        Notice::Delay { .. } => "delayed",
    };
    for f in recipients {
        write!(
            out,
            "\nFinal-Recipient: rfc822; {}\nAction: {action}\nStatus: {}\n",
            f.address, f.status
        )?;
        if let Some(mta) = &f.remote_mta {
            writeln!(out, "Remote-MTA: dns; {mta}")?;
        }
        if let Some(diagnostic) = &f.diagnostic {
            writeln!(out, "Diagnostic-Code: smtp; {diagnostic}")?;
        }
        if let Notice::Delay { until } = notice {
            writeln!(out, "Will-Retry-Until: {}", local(until))?;
        }
    }
    let (description, content_type) = if full {
        ("Undelivered Message", "message/rfc822")
    } else {
        ("Undelivered Message Headers", "text/rfc822-headers")
    };
    write!(
        out,
        "\n--{boundary}\n\
         Content-Description: {description}\n\
         Content-Type: {content_type}\n\
         \n"
    )?;
    copy_original(&mut out, data, full)?;
    write!(out, "\n--{boundary}--\n")?;
    out.flush()?;
    Ok(out.count)
}

/// The most of one line held at once while copying the original: a longer line is copied in
/// pieces, so a message of one endless line costs no more memory than a short one.
const PIECE: u64 = 8 * 1024;

/// Copies the original's header section (or all of it), with LF line ends like the rest of the
/// report.
fn copy_original(out: &mut impl Write, data: impl Read, full: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(data);
    let mut line = Vec::with_capacity(1024);
    // The next piece starts a line: only a whole line can be the empty one that ends the
    // header section.
    let mut at_line_start = true;
    loop {
        if (&mut reader).take(PIECE).read_until(b'\n', &mut line)? == 0 {
            // The data ends inside a line (perhaps after a CR held back below): that line
            // still gets its line end.
            if !at_line_start || !line.is_empty() {
                out.write_all(&line)?;
                out.write_all(b"\n")?;
            }
            return Ok(());
        }
        let Some(text) = line.strip_suffix(b"\n") else {
            // A piece of a long line. A CR at its end may be the first half of the CRLF that
            // ends the line: it waits for the next piece.
            let held = line.last() == Some(&b'\r');
            out.write_all(&line[..line.len() - usize::from(held)])?;
            line.clear();
            if held {
                line.push(b'\r');
            }
            at_line_start = false;
            continue;
        };
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() && at_line_start && !full {
            return Ok(());
        }
        out.write_all(text)?;
        out.write_all(b"\n")?;
        line.clear();
        at_line_start = true;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
