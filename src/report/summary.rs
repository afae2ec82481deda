//! The per-domain shape table, as `qshape` draws it: messages, bytes, the oldest, and counts by
//! age; only this grows with the queue, and with its number of domains, not messages.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::queue::envelope::Envelope;
use crate::queue::selection::Selection;

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
pub(super) struct Summary {
    total: Row,
    domains: BTreeMap<String, Row>,
}

impl Summary {
    pub(super) fn add(&mut self, envelope: &Envelope, selection: &Selection, now: i64) {
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

    pub(super) fn write(&self, out: &mut impl Write) -> io::Result<()> {
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
pub(super) fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
