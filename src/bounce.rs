//! Delivery status notifications: telling a sender that mail failed (RFC 3464).
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

use std::io::{BufRead, BufReader, Read, Write};

use crate::address::Domain;
use crate::envelope::{Envelope, Recipient};
use crate::queue::{Queue, QueueError, QueueId};

/// One recipient to report as failed.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// The RFC 3463 status, `5.1.1`.
    pub status: String,
    /// The host that gave the final answer, when one did.
    pub remote_mta: Option<String>,
    /// The server's reply (`550 5.1.1 <u@x>: User unknown`), when there was one.
    pub diagnostic: Option<String>,
    /// Why, in words, for the human part.
    pub reason: String,
}

/// True when the sender of `envelope` is to hear about failures.
pub fn wants_bounce(envelope: &Envelope) -> bool {
    if envelope.sender.is_empty() {
        return false;
    }
    match &envelope.notify {
        None => true,
        Some(notify) => notify
            .split(',')
            .any(|word| word.trim().eq_ignore_ascii_case("failure")),
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
    let mut draft = queue.draft()?;
    let id = draft.id();
    let written = compose(&mut draft, id, here, original, failed, data, now);
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
        recipients: vec![Recipient::new(original.sender.clone())],
    };
    draft.commit(&envelope).map(Some)
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

fn compose(
    out: impl Write,
    id: QueueId,
    here: &Domain,
    original: &Envelope,
    failed: &[FailedRecipient],
    data: impl Read,
    now: chrono::DateTime<chrono::Local>,
) -> std::io::Result<u64> {
    let mut out = Counting {
        inner: out,
        count: 0,
    };
    let date = now.format("%a, %d %b %Y %H:%M:%S %z");
    let arrival = chrono::DateTime::from_timestamp(original.arrival, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%a, %d %b %Y %H:%M:%S %z")
                .to_string()
        })
        .unwrap_or_else(|| date.to_string());
    let boundary = format!("{id}/{here}");
    let full = original
        .ret
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("full"));

    write!(
        out,
        "Date: {date}\n\
         From: Mail Delivery System <MAILER-DAEMON@{here}>\n\
         To: <{sender}>\n\
         Subject: Undelivered Mail Returned to Sender\n\
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
         The mail system at {here} could not deliver your message\n\
         (queue id {original_id}) to the recipients below, and has given up.\n\
         \n",
        sender = original.sender,
        original_id = original.id,
    )?;
    for f in failed {
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
    for f in failed {
        write!(
            out,
            "\nFinal-Recipient: rfc822; {}\nAction: failed\nStatus: {}\n",
            f.address, f.status
        )?;
        if let Some(mta) = &f.remote_mta {
            writeln!(out, "Remote-MTA: dns; {mta}")?;
        }
        if let Some(diagnostic) = &f.diagnostic {
            writeln!(out, "Diagnostic-Code: smtp; {diagnostic}")?;
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

/// Copies the original's header section (or all of it), with LF line ends like the rest of the
/// report.
fn copy_original(out: &mut impl Write, data: impl Read, full: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(data);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&line);
        if text.is_empty() && !full {
            return Ok(());
        }
        out.write_all(text)?;
        out.write_all(b"\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original(sender: &str, notify: Option<&str>, ret: Option<&str>) -> Envelope {
        Envelope {
            id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
            arrival: 1_795_418_591,
            size: 40,
            sender: sender.into(),
            notify: notify.map(String::from),
            ret: ret.map(String::from),
            envid: Some("env-42".into()),
            recipients: vec![Recipient::new("nouser@customer.example".into())],
        }
    }

    fn failure() -> FailedRecipient {
        FailedRecipient {
            address: "nouser@customer.example".into(),
            status: "5.1.1".into(),
            remote_mta: Some("mx.customer.example".into()),
            diagnostic: Some("550 5.1.1 <nouser@customer.example>: User unknown".into()),
            reason: "host mx.customer.example said: 550 5.1.1 User unknown".into(),
        }
    }

    fn render(env: &Envelope) -> String {
        let mut out = Vec::new();
        let here = Domain::parse("mx2.isp.example").unwrap();
        let data = &b"Subject: hello\r\nFrom: alice@example.test\r\n\r\nsecret body\r\n"[..];
        let id = QueueId::parse("1xWNvf000000AA").unwrap();
        compose(
            &mut out,
            id,
            &here,
            env,
            &[failure()],
            data,
            chrono::Local::now(),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn report_has_the_three_parts_and_headers_only() {
        let text = render(&original("alice@example.test", None, None));
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains(
            "Final-Recipient: rfc822; nouser@customer.example\nAction: failed\nStatus: 5.1.1\n"
        ));
        assert!(text.contains("Remote-MTA: dns; mx.customer.example\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1"));
        assert!(text.contains("Original-Envelope-Id: env-42\n"));
        assert!(text.contains(
            "Content-Type: text/rfc822-headers\n\nSubject: hello\nFrom: alice@example.test\n\n--"
        ));
        assert!(!text.contains("secret body"));
        assert!(!text.contains('\r'));
        assert!(text.ends_with("--1xWNvf000000AA/mx2.isp.example--\n"));
    }

    #[test]
    fn ret_full_returns_the_body() {
        let text = render(&original("alice@example.test", None, Some("FULL")));
        assert!(text.contains("Content-Type: message/rfc822\n"));
        assert!(text.contains("secret body"));
    }

    #[test]
    fn who_gets_a_bounce() {
        assert!(wants_bounce(&original("a@x.example", None, None)));
        assert!(wants_bounce(&original(
            "a@x.example",
            Some("success,failure"),
            None
        )));
        assert!(!wants_bounce(&original("a@x.example", Some("never"), None)));
        assert!(!wants_bounce(&original("a@x.example", Some("delay"), None)));
        assert!(!wants_bounce(&original("", None, None)));
    }
}
