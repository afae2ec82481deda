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
            status: EnhancedCode::parse("5.1.1").unwrap(),
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

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{bytes, config, mutated, peak};
    use proptest::prelude::*;

    /// The original as the report must show it: each line with LF alone, and with headers
    /// only, up to the empty line.
    fn expected(data: &[u8], full: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let text = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if text.is_empty() && !full {
                break;
            }
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        out
    }

    /// Reads at most the given numbers of octets at a time, in turn.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.sizes[self.turn % self.sizes.len()]
                .min(buf.len())
                .min(self.data.len());
            self.turn += 1;
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        "(Subject: [ -~]{0,20}\r?\n){0,3}\r?\n([ -~]{0,30}\r?\n){0,4}".prop_map(String::into_bytes)
    }

    /// Lines around the size of a piece, with CRs near their ends: a CRLF may straddle two
    /// pieces.
    fn long_lines() -> impl Strategy<Value = Vec<u8>> {
        let piece = PIECE as usize;
        proptest::collection::vec((piece - 3..piece + 3, any::<bool>(), any::<bool>()), 1..4)
            .prop_map(|lines| {
                let mut data = Vec::new();
                for (len, cr, lf) in lines {
                    data.resize(data.len() + len, b'x');
                    if cr {
                        data.push(b'\r');
                    }
                    if lf {
                        data.push(b'\n');
                    }
                }
                data
            })
    }

    proptest! {
        #![proptest_config(config(8000))]

        #[test]
        fn the_original_is_copied_line_by_line_with_lf(
            data in prop_oneof![bytes(2000), mutated(message()), long_lines()],
            full in any::<bool>(),
            sizes in proptest::collection::vec(1..20usize, 1..5),
        ) {
            let mut out = Vec::new();
            let source = Trickle { data: &data, sizes, turn: 0 };
            copy_original(&mut out, source, full).unwrap();
            prop_assert_eq!(out, expected(&data, full));
        }
    }

    #[test]
    fn a_ten_megabyte_line_is_copied_without_being_held() {
        let mut data = b"Subject: ".to_vec();
        data.resize(10 << 20, b'x');
        data.extend_from_slice(b"\r\n\r\nbody\r\n");
        for full in [false, true] {
            let (result, most) = peak(|| copy_original(&mut std::io::sink(), &data[..], full));
            result.unwrap();
            assert!(most <= 64 * 1024, "{most} bytes held");
        }
    }
}
