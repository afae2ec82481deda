//! Which messages a request is about: `-R`, `-S`, `-I` as `mailq` and `queue-run` read them,
//! queue ids (from arguments or standard input), `--held`, `--older-than` and `--all`.
//!
//! Every criterion given narrows the choice (all must hold); several values of `-R`, `-S`, `-I`
//! or several ids widen it (any of them), as with the other programs. `--all` alone takes every
//! message. A choice is made twice: from the envelopes read in one pass, and again once each
//! message is locked, so that what a runner changed in between is judged afresh.

use std::io::{BufRead, Write};
use std::time::Duration;

use crate::maillog::MailLog;
use crate::queue::envelope::Envelope;
use crate::queue::selection::Selection;
use crate::queue::{Place, Queue, QueueId, Unusable};

use super::{AdminError, Request, Summary, line};

/// The messages a request is about.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// `-R`, `-S`, `-I`, `--held`.
    pub selection: Selection,
    /// Queue ids named as arguments or read from standard input.
    pub ids: Vec<QueueId>,
    /// Set once ids were named, even when none came (an empty `-`): then only they are taken,
    /// so an empty pipe selects nothing rather than everything.
    pub named_ids: bool,
    /// Words given as ids that are no queue id at all.
    pub not_ids: Vec<String>,
    /// `--all`.
    pub all: bool,
    /// `--older-than`: messages that arrived at least this long ago.
    pub older_than: Option<Duration>,
}

impl Choice {
    /// True when nothing was named: such a request is refused, never taken as "everything".
    pub fn is_empty(&self) -> bool {
        self.selection.is_everything() && !self.named_ids && !self.all && self.older_than.is_none()
    }

    /// Adds the words of an argument list or of standard input as ids: each word a queue id,
    /// with the `*` or `!` a listing puts after it taken off.
    pub fn add_ids<'a>(&mut self, words: impl IntoIterator<Item = &'a str>) {
        self.named_ids = true;
        for word in words {
            let bare = word.trim_end_matches(['*', '!']);
            match QueueId::parse(bare) {
                Some(id) => self.ids.push(id),
                None => self.not_ids.push(word.to_string()),
            }
        }
    }

    /// True when the message in `place` with `envelope` is chosen at `now`.
    pub fn takes(&self, envelope: &Envelope, place: Place, now: i64) -> bool {
        (!self.named_ids || self.ids.contains(&envelope.id))
            && self.selection.selects_place(place)
            && self
                .older_than
                .is_none_or(|age| now.saturating_sub(envelope.arrival) >= age.as_secs() as i64)
            && self.selection.selects(envelope)
    }

    /// Before an envelope is read: whether the message could be chosen at all.
    fn may_take(&self, id: QueueId, place: Place) -> bool {
        (!self.named_ids || self.ids.contains(&id))
            && self.selection.selects_place(place)
            && self.selection.selects_id(id.as_str())
    }
}

/// The words of `input`, for `-` (`mailq --json | jq -r .queue_id | queue-admin delete -`).
pub fn read_ids(input: impl BufRead) -> std::io::Result<Vec<String>> {
    let mut words = Vec::new();
    for line in input.lines() {
        words.extend(line?.split_whitespace().map(str::to_string));
    }
    Ok(words)
}

/// The chosen messages, oldest first, with their place and whether a runner held each when it
/// was read. Ids that are not in the queue, and messages that cannot be read, are reported on
/// `out` and counted here.
pub(super) fn resolve(
    queue: &Queue,
    request: &Request,
    log: &MailLog,
    out: &mut impl Write,
    summary: &mut Summary,
) -> Result<Vec<(QueueId, Place, bool)>, AdminError> {
    let choice = &request.choice;
    for word in &choice.not_ids {
        writeln!(out, "{word}: not a queue id").map_err(AdminError::Output)?;
        summary.unknown += 1;
    }
    if !choice.ids.is_empty() {
        let queued = queue.ids()?;
        for &id in &choice.ids {
            if !queued.iter().any(|&(queued, _)| queued == id) {
                line(out, id, "not in the queue")?;
                summary.unknown += 1;
            }
        }
    }
    // A dry run must leave even the per-domain record as it is: it reads every envelope file
    // rather than rebuild a record it cannot believe.
    let scan = if choice.selection.domains.is_empty() || request.dry_run {
        queue.scan_files()?
    } else {
        queue.scan_domains(&choice.selection.domains)?
    };
    let mut chosen = Vec::new();
    let candidate = |id, place| choice.may_take(id, place);
    scan.for_each_where(&candidate, |inspection| -> Result<(), AdminError> {
        let (id, place) = (inspection.id, inspection.place);
        match &inspection.envelope {
            Ok(envelope) => {
                if choice.takes(envelope, place, request.now) {
                    chosen.push((id, place, inspection.locked));
                }
            }
            Err(problem) => {
                let moved = matches!(problem, Unusable::Damaged(_))
                    && !request.dry_run
                    && queue.quarantine(id, place).unwrap_or(false);
                let what = format!(
                    "unreadable envelope ({problem}); {}",
                    crate::queue::disposition(moved)
                );
                log.warning(&format!("{id}: {what}"));
                line(out, id, &what)?;
                summary.failed += 1;
            }
        }
        Ok(())
    })?;
    Ok(chosen)
}
