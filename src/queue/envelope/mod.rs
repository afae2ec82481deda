//! The mutable delivery state of one queued message, and its file format.
//!
//! The envelope holds who sent the message, who it is for, and, per recipient, where delivery
//! stands: pending (never tried), deferred (tried, will retry at `next_attempt`), sent or failed,
//! with the number of attempts and the last reply. It is small and is the only file a queue run or
//! a listing reads to decide what to do, so the message data is never opened just to schedule.
//!
//! File format: UTF-8 text, one record per line, fields separated by TAB:
//!
//! ```text
//! etrnq-envelope 1
//! id       <queue id>
//! arrival  <epoch seconds>
//! size     <bytes of the data file>
//! sender   <address, empty for the null sender>
//! notify   <never | success,failure,delay>      (optional, -N)
//! ret      <full | hdrs>                        (optional, -R)
//! envid    <text>                               (optional, -V)
//! warned   <epoch seconds>                      (optional: a delay warning was queued)
//! rcpt     <status> <attempts> <next_attempt> <address> <reason>
//! end
//! ```
//!
//! The first line names the format and its version; the last line is `end`, so a reader tells a
//! whole file from a torn or foreign one without guessing. No field may contain TAB, CR or LF:
//! values that come from the network (replies) are flattened before they are stored.
//!
//! # Limits
//!
//! An envelope file is at most [`MAX_BYTES`] (16 MiB), so that a reader can refuse a bigger file
//! as damage without reading it. A recipient's line is at most about 1,400 bytes (an address of
//! at most 64 + 1 + 255 bytes, a reason cut to [`MAX_REASON`] bytes, the widest numbers), so the
//! limit holds more than 10,000 recipients each deferred with the longest reason: more than any
//! peer accepts in one transaction (Postfix's default is 1,000) and more than queue-smtpd's. A
//! new envelope that could outgrow the limit as its recipients gather reasons is refused when it
//! is queued (see [`Envelope::largest_size`]).

use std::fmt::Write as _;

use super::id::QueueId;

const MAGIC: &str = "etrnq-envelope 1";

/// The most bytes an envelope file may hold; see the module's limits.
pub const MAX_BYTES: u64 = 16 << 20;

/// The most bytes of a recipient's last reply or error that are stored: enough for any reply a
/// person reads in a listing or a bounce; a hostile server's 500-line reply is cut here.
pub const MAX_REASON: usize = 1000;

/// What a recipient's line can grow by besides its reason: `pending` becoming `deferred`, and the
/// attempts and next-attempt fields at their widest.
const LINE_GROWTH: usize = 1 + 10 + 20;

/// Where delivery to one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Not yet attempted.
    Pending,
    /// Attempted and failed temporarily; will be retried.
    Deferred,
    /// Accepted by the next hop.
    Sent,
    /// Failed permanently (or expired); a bounce reports it.
    Failed,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Sent => "sent",
            RecipientStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<RecipientStatus> {
        match text {
            "pending" => Some(RecipientStatus::Pending),
            "deferred" => Some(RecipientStatus::Deferred),
            "sent" => Some(RecipientStatus::Sent),
            "failed" => Some(RecipientStatus::Failed),
            _ => None,
        }
    }

    /// True while delivery to this recipient is still owed.
    pub fn is_open(self) -> bool {
        matches!(self, RecipientStatus::Pending | RecipientStatus::Deferred)
    }
}

/// One envelope recipient and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as stored (`local@domain`); parsed when it was accepted.
    pub address: String,
    pub status: RecipientStatus,
    pub attempts: u32,
    /// Epoch seconds before which no plain queue run tries again; 0 for "now".
    pub next_attempt: i64,
    /// The last reply or error, empty when there was none.
    pub reason: String,
}

impl Recipient {
    pub fn new(address: String) -> Recipient {
        Recipient {
            address,
            status: RecipientStatus::Pending,
            attempts: 0,
            next_attempt: 0,
            reason: String::new(),
        }
    }

    /// The domain part, for routing and `-R` matching.
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }
}

/// The delivery state of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: QueueId,
    /// Epoch seconds when the message was committed.
    pub arrival: i64,
    /// Bytes of the message data file.
    pub size: u64,
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// DSN NOTIFY (`-N`), as given: `never` or a comma list of success, failure, delay.
    pub notify: Option<String>,
    /// DSN RET (`-R`): `full` or `hdrs`.
    pub ret: Option<String>,
    /// DSN ENVID (`-V`).
    pub envid: Option<String>,
    /// When a delay warning went to the sender, so that one message gets at most one.
    pub warned: Option<i64>,
    pub recipients: Vec<Recipient>,
}

/// Why an envelope file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct EnvelopeError {
    pub line: usize,
    pub reason: String,
}

impl Envelope {
    /// Recipients still owed a delivery.
    pub fn open_recipients(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| r.status.is_open())
    }

    /// The serialised form, ready to be written and renamed into place.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256 + 96 * self.recipients.len());
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "id\t{}", self.id);
        let _ = writeln!(out, "arrival\t{}", self.arrival);
        let _ = writeln!(out, "size\t{}", self.size);
        let _ = writeln!(out, "sender\t{}", flatten(&self.sender));
        for (key, value) in [
            ("notify", &self.notify),
            ("ret", &self.ret),
            ("envid", &self.envid),
        ] {
            if let Some(value) = value {
                let _ = writeln!(out, "{key}\t{}", flatten(value));
            }
        }
        if let Some(warned) = self.warned {
            let _ = writeln!(out, "warned\t{warned}");
        }
        for r in &self.recipients {
            let _ = writeln!(
                out,
                "rcpt\t{}\t{}\t{}\t{}\t{}",
                r.status.as_str(),
                r.attempts,
                r.next_attempt,
                flatten(&r.address),
                flatten(cut(&r.reason, MAX_REASON))
            );
        }
        out.push_str("end\n");
        out.into_bytes()
    }

    /// The most bytes this envelope's file can reach as delivery goes on: every recipient with a
    /// reason of [`MAX_REASON`] bytes and the widest numbers.
    pub fn largest_size(&self) -> u64 {
        let growth = self.recipients.len() * (MAX_REASON + LINE_GROWTH);
        (self.to_bytes().len() + growth) as u64
    }

    /// Parses an envelope file; anything but a whole, well-formed file is an error.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| EnvelopeError {
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            reason: "not UTF-8".to_string(),
        })?;
        let body = text.strip_suffix("\nend\n").ok_or(EnvelopeError {
            line: text.lines().count(),
            reason: "no end record: the file is truncated".to_string(),
        })?;
        let mut lines = body.lines().enumerate().map(|(n, l)| (n + 1, l));
        match lines.next() {
            Some((_, MAGIC)) => {}
            _ => return Err(bad(1, format!("first line is not {MAGIC:?}"))),
        }
        let mut builder = Builder::default();
        for (n, line) in lines {
            builder.record(n, line)?;
        }
        builder.finish()
    }
}

fn bad(line: usize, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError {
        line,
        reason: reason.into(),
    }
}

/// Replaces TAB, CR, LF and other control characters so a value stays within its field.
fn flatten(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(char::is_control) {
        value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        value.into()
    }
}

/// `text` cut to at most `limit` bytes, at a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[derive(Default)]
struct Builder {
    id: Option<QueueId>,
    arrival: Option<i64>,
    size: Option<u64>,
    sender: Option<String>,
    notify: Option<String>,
    ret: Option<String>,
    envid: Option<String>,
    warned: Option<i64>,
    recipients: Vec<Recipient>,
}

impl Builder {
    fn record(&mut self, n: usize, line: &str) -> Result<(), EnvelopeError> {
        let (key, value) = line
            .split_once('\t')
            .ok_or_else(|| bad(n, "record without a TAB"))?;
        let number = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| bad(n, format!("{key}: not a number")))
        };
        match key {
            "id" => {
                self.id = Some(
                    QueueId::parse(value)
                        .ok_or_else(|| bad(n, format!("bad queue id {value:?}")))?,
                )
            }
            "arrival" => self.arrival = Some(number(value)?),
            "size" => {
                self.size = Some(value.parse::<u64>().map_err(|_| match number(value) {
                    Ok(_) => bad(n, "size: negative"),
                    Err(e) => e,
                })?)
            }
            "sender" => self.sender = Some(value.to_string()),
            "notify" => self.notify = Some(value.to_string()),
            "ret" => self.ret = Some(value.to_string()),
            "envid" => self.envid = Some(value.to_string()),
            "warned" => self.warned = Some(number(value)?),
            "rcpt" => self.recipients.push(parse_recipient(n, value)?),
            _ => return Err(bad(n, format!("unknown record {key:?}"))),
        }
        Ok(())
    }

    fn finish(self) -> Result<Envelope, EnvelopeError> {
        let missing = |what: &str| bad(0, format!("no {what} record"));
        if self.recipients.is_empty() {
            return Err(missing("rcpt"));
        }
        Ok(Envelope {
            id: self.id.ok_or_else(|| missing("id"))?,
            arrival: self.arrival.ok_or_else(|| missing("arrival"))?,
            size: self.size.ok_or_else(|| missing("size"))?,
            sender: self.sender.ok_or_else(|| missing("sender"))?,
            notify: self.notify,
            ret: self.ret,
            envid: self.envid,
            warned: self.warned,
            recipients: self.recipients,
        })
    }
}

fn parse_recipient(n: usize, value: &str) -> Result<Recipient, EnvelopeError> {
    // Taken one by one rather than collected: a damaged record of millions of TABs must cost
    // no more than its own bytes.
    let mut fields = value.split('\t');
    let (Some(status), Some(attempts), Some(next_attempt), Some(address), Some(reason), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(bad(n, "rcpt: expected 5 fields"));
    };
    if address.is_empty() {
        return Err(bad(n, "rcpt: empty address"));
    }
    Ok(Recipient {
        address: address.to_string(),
        status: RecipientStatus::parse(status)
            .ok_or_else(|| bad(n, format!("rcpt: unknown status {status:?}")))?,
        attempts: attempts
            .parse()
            .map_err(|_| bad(n, "rcpt: attempts is not a number"))?,
        next_attempt: next_attempt
            .parse()
            .map_err(|_| bad(n, "rcpt: next attempt is not a number"))?,
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut deferred = Recipient::new("b@customer.example".into());
        deferred.status = RecipientStatus::Deferred;
        deferred.attempts = 2;
        deferred.next_attempt = 1_795_422_191;
        deferred.reason = "connect to [127.0.0.1]:2525: Connection refused".into();
        Envelope {
            id: QueueId::parse("1mZx3k0a9B2cQz").unwrap(),
            arrival: 1_795_418_591,
            size: 296,
            sender: "alice@example.test".into(),
            notify: Some("failure,delay".into()),
            ret: None,
            envid: None,
            warned: Some(1_795_433_391),
            recipients: vec![Recipient::new("a@customer.example".into()), deferred],
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(Envelope::parse(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn control_characters_in_replies_cannot_break_records() {
        let mut e = sample();
        e.recipients[1].reason = "450 busy\r\nrcpt\tsent\t0\t0\tx@y\t".into();
        let parsed = Envelope::parse(&e.to_bytes()).unwrap();
        assert_eq!(parsed.recipients.len(), 2);
        assert_eq!(parsed.recipients[1].status, RecipientStatus::Deferred);
    }

    #[test]
    fn long_reasons_are_cut_and_growth_is_bounded() {
        let mut e = sample();
        e.recipients[1].reason = "é".repeat(MAX_REASON);
        let parsed = Envelope::parse(&e.to_bytes()).unwrap();
        let stored = &parsed.recipients[1].reason;
        assert!(stored.len() <= MAX_REASON && stored.len() >= MAX_REASON - 1);
        assert!(stored.chars().all(|c| c == 'é'));

        let mut fresh = sample();
        fresh.recipients = (0..3)
            .map(|n| Recipient::new(format!("{}@{}.example", "u".repeat(64), n)))
            .collect();
        let largest = fresh.largest_size();
        for r in &mut fresh.recipients {
            r.status = RecipientStatus::Deferred;
            r.attempts = u32::MAX;
            r.next_attempt = i64::MIN;
            r.reason = "x".repeat(5 * MAX_REASON);
        }
        assert!(fresh.to_bytes().len() as u64 <= largest);
    }

    #[test]
    fn every_size_the_writer_writes_reads_back() {
        let mut e = sample();
        for size in [0, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            e.size = size;
            assert_eq!(Envelope::parse(&e.to_bytes()).unwrap(), e);
        }
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let negative = text.replace("size\t296", "size\t-296");
        assert_eq!(
            Envelope::parse(negative.as_bytes()).unwrap_err().reason,
            "size: negative"
        );
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Envelope::parse(&bytes[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn foreign_and_damaged_files_are_refused() {
        assert!(Envelope::parse(b"hello\nend\n").is_err());
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let damaged = text.replace("rcpt\tpending", "rcpt\tmaybe");
        assert!(Envelope::parse(damaged.as_bytes()).is_err());
        let no_rcpt: String = text
            .lines()
            .filter(|l| !l.starts_with("rcpt"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(Envelope::parse(no_rcpt.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod properties;
