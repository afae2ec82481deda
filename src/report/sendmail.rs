//! sendmail's `mailq` layout: a header line with the count, then per message its id, size,
//! arrival time and sender, each deferral reason above the recipients it explains.

use std::io::{self, Write};

use chrono::TimeZone;

use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{Inspection, Place, Queue};

pub(super) fn write_sendmail_header(
    out: &mut impl Write,
    queue: &Queue,
    count: usize,
) -> io::Result<()> {
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

pub(super) fn write_sendmail_entry(
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
pub(super) fn by_reason(envelope: &Envelope) -> Vec<(&str, Vec<&Recipient>)> {
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

/// Arrival times in sendmail's layout, remembered for the last minute asked: a listing is sorted
/// by arrival, so neighbours share their minute and the time zone is consulted once per minute.
#[derive(Default)]
pub(super) struct ShortTimes {
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
