//! One message's change: its lock taken (or waited for), its envelope judged again under the
//! lock, then the verb, its line and its log entry.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::maillog::MailLog;
use crate::queue::{LockAttempt, Locked, Place, Queue, QueueId};

use super::{AdminError, Request, Summary, bounce, change, line};

/// The verbs that change a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Hold,
    Release,
    Delete,
    Bounce,
    Retry,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Hold => "hold",
            Change::Release => "release",
            Change::Delete => "delete",
            Change::Bounce => "bounce",
            Change::Retry => "retry",
        }
    }
}

/// How often a busy message's lock is tried again while `--wait` lasts.
const POLL: Duration = Duration::from_millis(100);

/// What a verb did to one locked message.
pub(super) enum Done {
    /// Changed: the words for the output line and for the mail log.
    Changed { line: String, log: String },
    /// Already as asked: the words for the output line.
    Unchanged(String),
}

/// What every message of one request is changed with.
pub(super) struct Context<'a> {
    pub(super) queue: &'a Queue,
    pub(super) config: &'a Config,
    pub(super) request: &'a Request,
    pub(super) log: &'a MailLog,
    /// Until when busy messages are waited for (`--wait`).
    pub(super) deadline: Instant,
}

pub(super) fn act(
    context: &Context<'_>,
    change: Change,
    (id, place): (QueueId, Place),
    out: &mut impl Write,
    summary: &mut Summary,
) -> Result<(), AdminError> {
    let Context {
        queue,
        config,
        request,
        log,
        deadline,
    } = *context;
    let mut locked = match lock(queue, id, place, deadline, request.dry_run) {
        Ok(Some(locked)) => locked,
        Ok(None) => {
            summary.busy += 1;
            let advice = if request.wait.is_zero() {
                "; skipped (--wait waits for it)"
            } else {
                "; skipped, still busy after --wait"
            };
            return line(
                out,
                id,
                &format!("busy: a queue run is delivering it{advice}"),
            );
        }
        Err(Trouble::Gone) => return line(out, id, "left the queue meanwhile"),
        Err(Trouble::Unusable(reason)) => {
            summary.failed += 1;
            log.warning(&format!("{id}: {reason}"));
            return line(out, id, &reason);
        }
    };
    if !request
        .choice
        .takes(locked.envelope(), locked.place(), request.now)
    {
        return line(
            out,
            id,
            "no longer selected: a queue run moved it on meanwhile",
        );
    }
    if request.dry_run {
        let (changes, words) = would(change, &locked);
        if changes {
            summary.done += 1;
        } else {
            summary.unchanged += 1;
        }
        return line(out, id, &words);
    }
    let done = match change {
        Change::Hold => change::hold(&mut locked),
        Change::Release => change::release(&mut locked, config, request.now),
        Change::Delete => change::delete(locked),
        Change::Retry => change::retry(&mut locked, &request.choice.selection),
        Change::Bounce => bounce::bounce(queue, config, request, locked, log),
    };
    match done {
        Ok(Done::Changed {
            line: text,
            log: words,
        }) => {
            summary.done += 1;
            log.info(&format!(
                "{id}: {words} by the administrator {}",
                request.user
            ));
            line(out, id, &text)
        }
        Ok(Done::Unchanged(text)) => {
            summary.unchanged += 1;
            line(out, id, &text)
        }
        Err(e) => {
            summary.failed += 1;
            let text = format!("cannot {}: {e}", change.name());
            log.warning(&format!("{id}: {text}"));
            line(out, id, &text)
        }
    }
}

/// A dry run's line: whether the verb would change this message, and in what words.
fn would(change: Change, locked: &Locked<'_>) -> (bool, String) {
    let open = super::recipients(locked.envelope().open_recipients().count());
    let words = match (change, locked.place()) {
        (Change::Hold, Place::Held) => return (false, "already on hold".to_string()),
        (Change::Release, Place::Active) => return (false, "not on hold".to_string()),
        (Change::Hold, _) => "would be held".to_string(),
        (Change::Release, _) => "would be released".to_string(),
        (Change::Delete, _) => "would be deleted".to_string(),
        (Change::Bounce, _) => format!("would be bounced ({open} open)"),
        (Change::Retry, _) => format!("would be made due now ({open} open)"),
    };
    (true, words)
}

enum Trouble {
    Gone,
    Unusable(String),
}

/// The message's lock, taken now or, while `deadline` has not passed, when its runner lets go.
/// `None` when it stayed busy. A message another administrator moved between `env/` and
/// `hold/` meanwhile is looked for in its other place.
fn lock(
    queue: &Queue,
    id: QueueId,
    place: Place,
    deadline: Instant,
    dry_run: bool,
) -> Result<Option<Locked<'_>>, Trouble> {
    let other = match place {
        Place::Active => Place::Held,
        Place::Held => Place::Active,
    };
    loop {
        let attempt = match queue.try_lock_in(id, place) {
            Ok(LockAttempt::Gone) => queue.try_lock_in(id, other),
            attempt => attempt,
        };
        match attempt {
            Ok(LockAttempt::Locked(locked)) => return Ok(Some(locked)),
            Ok(LockAttempt::Busy) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(LockAttempt::Busy) => return Ok(None),
            Ok(LockAttempt::Gone) => return Err(Trouble::Gone),
            Ok(LockAttempt::Corrupt(reason)) => {
                let moved = !dry_run && queue.quarantine(id, place).unwrap_or(false);
                return Err(Trouble::Unusable(format!(
                    "unreadable envelope ({reason}); {}",
                    crate::queue::disposition(moved)
                )));
            }
            Err(e) => return Err(Trouble::Unusable(e.to_string())),
        }
    }
}
