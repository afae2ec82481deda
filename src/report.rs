//! Reports on the queue for people and programs: sendmail's `mailq` layout, one JSON object per
//! message (`postqueue -j` field names), and a per-domain shape table (`qshape`).
//!
//! Listing streams: ids are read and sorted, then one envelope at a time is read, printed and
//! dropped. Only the per-domain totals of `--summary` grow with the queue, and they grow with the
//! number of domains, not messages. A listing never takes a message from a runner; it marks the
//! ones a runner holds. An envelope that cannot be read is reported and the listing goes on:
//! damage is moved to `corrupt/` when no runner holds it, an access problem is left in place (see
//! [`Unusable`]). Whatever a selection asks, an unreadable message is reported unless `-I` rules
//! out its id, since nobody can tell whom it is for; with `-R`, only the messages the per-domain
//! record names for those domains are read at all (see [`Queue::scan_domains`]), so an
//! unreadable one is reported under the domains it was queued for, or under every domain when
//! the record was made without being able to read it.
//!
//! JSON schema (one object per line, fields in this order; new fields may be added, existing ones
//! keep their meaning): `queue_name` ("active" or "hold"), `queue_id`, `arrival_time` (epoch
//! seconds), `message_size` (bytes of the stored message, headers included), `forced_expire`
//! (always false), `sender` (empty for the null sender), `locked` (a runner holds it now),
//! `recipients`: [{`address`, `delay_reason` (absent when none), `status` ("pending" or
//! "deferred"), `attempts`, `next_attempt` (epoch seconds, 0 for now)}]. An unreadable message is
//! `{"queue_name": ..., "queue_id": ..., "error": ..., "unreadable": ...}`: `queue_name` is where
//! it is now ("corrupt" once moved there, else "active" or "hold"), `error` says why and how to
//! fix it, `unreadable` is "damaged" or "inaccessible".

use std::collections::BTreeMap;
use std::io::{self, Write};

use chrono::TimeZone;
use serde::Serialize;

use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::selection::Selection;
use crate::queue::{Inspection, Place, Queue, QueueError, QueueId, Unusable};

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// sendmail's `mailq` layout; `verbose` prints deferral reasons whole.
    Sendmail { verbose: bool },
    /// One JSON object per message per line.
    Json,
    /// Per recipient domain: messages, bytes, oldest, counts by age.
    Summary,
}

/// A failure while listing: the queue could not be read, or the output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot write the listing: {0}")]
    Output(#[from] io::Error),
}

impl crate::sysexits::Sysexit for ReportError {
    fn status(&self) -> crate::sysexits::Status {
        match self {
            ReportError::Queue(e) => e.status(),
            ReportError::Output(_) => crate::sysexits::Status::IoErr,
        }
    }
}

/// An unreadable message met during a listing.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: QueueId,
    pub place: Place,
    pub problem: Unusable,
    /// Moved to `corrupt/` (false for an access problem, or when a runner held it or the move
    /// failed).
    pub moved: bool,
}

impl Unreadable {
    /// What became of it, as a listing says it.
    pub fn disposition(&self) -> &'static str {
        crate::queue::disposition(self.moved)
    }
}

/// What a listing saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub listed: usize,
    pub unreadable: Vec<Unreadable>,
}

impl Outcome {
    /// Messages that could not be listed and are still in the queue: they need a human.
    pub fn skipped(&self) -> usize {
        self.unreadable.iter().filter(|u| !u.moved).count()
    }
}

/// Lists the selected messages of `queue` on `out`. `now` is the epoch second ages count from.
pub fn list(
    queue: &Queue,
    selection: &Selection,
    format: Format,
    now: i64,
    out: &mut impl Write,
) -> Result<Outcome, ReportError> {
    // With -R, the per-domain record names the messages to read; every other listing reads the
    // whole queue, from the index when it is current.
    let scan = if selection.domains.is_empty() {
        queue.scan()?.refreshing_index()
    } else {
        queue.scan_domains(&selection.domains)?
    };
    let mut ids = scan.ids().to_vec();
    // sendmail's header line counts the entries before the first one is printed, so a filtered
    // listing in that layout selects first and prints second; the others select as they print.
    let mut select_while_printing = !selection.is_everything();
    if select_while_printing && matches!(format, Format::Sendmail { .. }) {
        let mut selected = Vec::new();
        scan.for_each(&ids, |inspection| -> Result<(), ReportError> {
            if is_selected(selection, &inspection) {
                selected.push((inspection.id, inspection.place));
            }
            Ok(())
        })?;
        ids = selected;
        select_while_printing = false;
    }
    let mut outcome = Outcome::default();
    let mut summary = Summary::default();
    let mut times = ShortTimes::default();
    if let Format::Sendmail { .. } = format {
        write_sendmail_header(out, queue, ids.len())?;
    }
    scan.for_each(&ids, |inspection| -> Result<(), ReportError> {
        if select_while_printing && !is_selected(selection, &inspection) {
            return Ok(());
        }
        let envelope = match &inspection.envelope {
            Ok(envelope) => envelope,
            Err(problem) => {
                let moved = matches!(problem, Unusable::Damaged(_))
                    && queue
                        .quarantine(inspection.id, inspection.place)
                        .unwrap_or(false);
                let unreadable = Unreadable {
                    id: inspection.id,
                    place: inspection.place,
                    problem: problem.clone(),
                    moved,
                };
                write_unreadable(out, format, &unreadable)?;
                outcome.unreadable.push(unreadable);
                return Ok(());
            }
        };
        outcome.listed += 1;
        match format {
            Format::Sendmail { verbose } => {
                write_sendmail_entry(out, &inspection, envelope, verbose, &mut times)?
            }
            Format::Json => write_json_entry(out, &inspection, envelope)?,
            Format::Summary => summary.add(envelope, selection, now),
        }
        Ok(())
    })?;
    match format {
        Format::Sendmail { .. } => writeln!(
            out,
            "\t\tTotal requests: {}",
            outcome.listed + outcome.unreadable.len()
        )?,
        Format::Json => {}
        Format::Summary => summary.write(out)?,
    }
    Ok(outcome)
}

/// A readable envelope that the selection takes, or an unreadable one whose id it does not rule
/// out.
fn is_selected(selection: &Selection, inspection: &Inspection) -> bool {
    match &inspection.envelope {
        Ok(envelope) => selection.selects(envelope),
        Err(_) => selection.selects_id(inspection.id.as_str()),
    }
}

fn write_sendmail_header(out: &mut impl Write, queue: &Queue, count: usize) -> io::Result<()> {
    let root = queue.root().display();
    if count == 0 {
        return writeln!(out, "{root} is empty");
    }
    let plural = if count == 1 { "" } else { "s" };
    writeln!(out, "\t\t{root} ({count} request{plural})")?;
    writeln!(
        out,
        "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------"
    )
}

/// The reason text sendmail fits on an 80-column line.
const REASON_WIDTH: usize = 60;

fn write_sendmail_entry(
    out: &mut impl Write,
    inspection: &Inspection,
    envelope: &Envelope,
    verbose: bool,
    times: &mut ShortTimes,
) -> io::Result<()> {
    let mark = match (inspection.locked, inspection.place) {
        (true, _) => '*',
        (false, Place::Held) => '!',
        (false, Place::Active) => ' ',
    };
    let sender = if envelope.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &envelope.sender
    };
    writeln!(
        out,
        "{}{mark}{:>8} {} {sender}",
        envelope.id,
        envelope.size,
        times.of(envelope.arrival)
    )?;
    for (reason, recipients) in by_reason(envelope) {
        if !reason.is_empty() {
            let shown: String = if verbose {
                reason.to_string()
            } else {
                reason.chars().take(REASON_WIDTH).collect()
            };
            writeln!(out, "                 ({shown})")?;
        }
        for recipient in recipients {
            writeln!(out, "\t\t\t\t\t {}", recipient.address)?;
        }
    }
    Ok(())
}

/// Open recipients grouped by their last reason: those without one first, then each reason in
/// order of first appearance, so each reason line stands above exactly the recipients it explains.
fn by_reason(envelope: &Envelope) -> Vec<(&str, Vec<&Recipient>)> {
    let mut groups: Vec<(&str, Vec<&Recipient>)> = vec![("", Vec::new())];
    for recipient in envelope.open_recipients() {
        match groups.iter_mut().find(|(r, _)| *r == recipient.reason) {
            Some((_, list)) => list.push(recipient),
            None => groups.push((&recipient.reason, vec![recipient])),
        }
    }
    groups.retain(|(_, list)| !list.is_empty());
    groups
}

fn write_unreadable(out: &mut impl Write, format: Format, u: &Unreadable) -> io::Result<()> {
    match format {
        Format::Sendmail { .. } => writeln!(
            out,
            "{}X{:>8} (unreadable envelope: {}; {})",
            u.id,
            "-",
            u.problem,
            u.disposition()
        ),
        Format::Json => {
            let reason = u.problem.to_string();
            serde_json::to_writer(
                &mut *out,
                &UnreadableJson {
                    queue_name: match (u.moved, u.place) {
                        (true, _) => "corrupt",
                        (false, Place::Active) => "active",
                        (false, Place::Held) => "hold",
                    },
                    queue_id: u.id.as_str(),
                    error: &reason,
                    unreadable: match u.problem {
                        Unusable::Damaged(_) => "damaged",
                        Unusable::Inaccessible(_) => "inaccessible",
                    },
                },
            )
            .map_err(io::Error::from)?;
            writeln!(out)
        }
        Format::Summary => Ok(()),
    }
}

/// Arrival times in sendmail's layout, remembered for the last minute asked: a listing is sorted
/// by arrival, so neighbours share their minute and the time zone is consulted once per minute.
#[derive(Default)]
struct ShortTimes {
    minute: Option<i64>,
    text: String,
}

impl ShortTimes {
    fn of(&mut self, epoch: i64) -> &str {
        // Time zones have been offset from UTC by whole minutes since the early 1970s.
        let minute = epoch.div_euclid(60);
        if self.minute != Some(minute) {
            self.text = short_time(epoch);
            self.minute = Some(minute);
        }
        &self.text
    }
}

/// `Mon Nov 23 06:27`: ctime without seconds and year, in local time, as sendmail prints it.
fn short_time(epoch: i64) -> String {
    chrono::Local
        .timestamp_opt(epoch, 0)
        .single()
        .map(|t| t.format("%a %b %e %H:%M").to_string())
        .unwrap_or_else(|| "????????????????".to_string())
}

#[derive(Serialize)]
struct MessageJson<'a> {
    queue_name: &'static str,
    queue_id: &'a str,
    arrival_time: i64,
    message_size: u64,
    forced_expire: bool,
    sender: &'a str,
    locked: bool,
    recipients: Vec<RecipientJson<'a>>,
}

#[derive(Serialize)]
struct RecipientJson<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_reason: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    next_attempt: i64,
}

#[derive(Serialize)]
struct UnreadableJson<'a> {
    queue_name: &'static str,
    queue_id: &'a str,
    error: &'a str,
    unreadable: &'static str,
}

fn write_json_entry(
    out: &mut impl Write,
    inspection: &Inspection,
    envelope: &Envelope,
) -> io::Result<()> {
    let message = MessageJson {
        queue_name: match inspection.place {
            Place::Active => "active",
            Place::Held => "hold",
        },
        queue_id: envelope.id.as_str(),
        arrival_time: envelope.arrival,
        message_size: envelope.size,
        forced_expire: false,
        sender: &envelope.sender,
        locked: inspection.locked,
        recipients: envelope
            .open_recipients()
            .map(|r| RecipientJson {
                address: &r.address,
                delay_reason: Some(r.reason.as_str()).filter(|s| !s.is_empty()),
                status: r.status.as_str(),
                attempts: r.attempts,
                next_attempt: r.next_attempt,
            })
            .collect(),
    };
    // `io::Error::from` keeps the kind of a write error, so `mailq --json | head` stays a broken
    // pipe (exit 0) instead of becoming an I/O error.
    serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)?;
    writeln!(out)
}

/// Age buckets in minutes, as qshape draws them; the last column is everything older.
const BUCKETS: [i64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

#[derive(Default, Clone)]
struct Row {
    messages: u64,
    bytes: u64,
    oldest: i64,
    ages: [u64; BUCKETS.len() + 1],
}

impl Row {
    fn add(&mut self, envelope: &Envelope, age: i64) {
        self.messages += 1;
        self.bytes += envelope.size;
        self.oldest = self.oldest.max(age);
        let minutes = age / 60;
        let slot = BUCKETS
            .iter()
            .position(|&limit| minutes < limit)
            .unwrap_or(BUCKETS.len());
        self.ages[slot] += 1;
    }
}

#[derive(Default)]
struct Summary {
    total: Row,
    domains: BTreeMap<String, Row>,
}

impl Summary {
    fn add(&mut self, envelope: &Envelope, selection: &Selection, now: i64) {
        let age = (now - envelope.arrival).max(0);
        self.total.add(envelope, age);
        let mut counted: Vec<String> = Vec::new();
        for recipient in envelope
            .open_recipients()
            .filter(|r| selection.selects_recipient(r))
        {
            let domain = recipient.domain().to_ascii_lowercase();
            if !counted.contains(&domain) {
                self.domains
                    .entry(domain.clone())
                    .or_default()
                    .add(envelope, age);
                counted.push(domain);
            }
        }
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut rows: Vec<(&str, &Row)> =
            self.domains.iter().map(|(d, r)| (d.as_str(), r)).collect();
        rows.sort_by(|a, b| b.1.messages.cmp(&a.1.messages).then(a.0.cmp(b.0)));
        let width = rows.iter().map(|(d, _)| d.len()).max().unwrap_or(0).max(6);
        write!(
            out,
            "{:<width$} {:>6} {:>10} {:>7}",
            "domain", "msgs", "bytes", "oldest"
        )?;
        for limit in BUCKETS {
            write!(out, " {:>6}", format!("<{limit}m"))?;
        }
        writeln!(out, " {:>6}", format!("{}m+", BUCKETS[BUCKETS.len() - 1]))?;
        for (name, row) in std::iter::once(("TOTAL", &self.total)).chain(rows) {
            write!(
                out,
                "{name:<width$} {:>6} {:>10} {:>7}",
                row.messages,
                row.bytes,
                if row.messages == 0 {
                    "-".to_string()
                } else {
                    age_text(row.oldest)
                }
            )?;
            for count in &row.ages[..BUCKETS.len()] {
                write!(out, " {count:>6}")?;
            }
            writeln!(out, " {:>6}", row.ages[BUCKETS.len()])?;
        }
        Ok(())
    }
}

/// An age the way a mail administrator says it: `45s`, `28m`, `3h12m`, `4d6h`.
fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age_text(45), "45s");
        assert_eq!(age_text(28 * 60 + 5), "28m");
        assert_eq!(age_text(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(age_text(4 * 86400 + 6 * 3600), "4d6h");
    }

    #[test]
    fn reasons_group_their_recipients() {
        let mut e = Envelope {
            id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
            arrival: 0,
            size: 0,
            sender: String::new(),
            notify: None,
            ret: None,
            envid: None,
            recipients: ["a@x.test", "b@x.test", "c@y.test", "d@y.test"]
                .iter()
                .map(|a| Recipient::new(a.to_string()))
                .collect(),
        };
        e.recipients[0].reason = "refused".into();
        e.recipients[2].reason = "refused".into();
        let groups = by_reason(&e);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "");
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(groups[1].1[1].address, "c@y.test");
    }
}
