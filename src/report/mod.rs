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
//!
//! The formats are written by `sendmail`, `json` and `summary`; an unreadable message is
//! reported in each of them by `unreadable`.

mod json;
mod sendmail;
mod summary;
#[cfg(test)]
mod tests;
mod unreadable;

use std::io::{self, Write};

use crate::queue::selection::Selection;
use crate::queue::{Inspection, Queue, QueueError, Unusable};

use json::write_json_entry;
use sendmail::{ShortTimes, write_sendmail_entry, write_sendmail_header};
use summary::Summary;
pub use unreadable::Unreadable;
use unreadable::write_unreadable;

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
    let selects = |_, place| selection.selects_place(place);
    // sendmail's header line counts the entries before the first one is printed, so a filtered
    // listing in that layout selects first and prints second; the others select as they print.
    // Either way nothing is held per message but the selected ids: a listing from the index
    // reads its table as it goes.
    let mut selected = None;
    let mut select_while_printing = !selection.is_everything();
    if select_while_printing && matches!(format, Format::Sendmail { .. }) {
        let mut chosen = Vec::new();
        scan.for_each_where(&selects, |inspection| -> Result<(), ReportError> {
            if is_selected(selection, &inspection) {
                chosen.push((inspection.id, inspection.place));
            }
            Ok(())
        })?;
        selected = Some(chosen);
        select_while_printing = false;
    }
    let mut outcome = Outcome::default();
    let mut summary = Summary::default();
    let mut times = ShortTimes::default();
    if let Format::Sendmail { .. } = format {
        let count = selected.as_ref().map_or(scan.count(), Vec::len);
        write_sendmail_header(out, queue, count)?;
    }
    let print = |inspection: Inspection| -> Result<(), ReportError> {
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
    };
    match &selected {
        Some(ids) => scan.for_each(ids, print)?,
        None => scan.for_each_where(&selects, print)?,
    }
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
