//! queue-admin: lock-safe changes an administrator makes to queued mail, and a look inside it.
//!
//! Six verbs over one selection ([`Choice`]): `hold` moves messages to administrative hold,
//! where no run attempts them (`-R` and ETRN included) and they stay listed; `release` brings
//! them back; `delete` removes them without a bounce; `bounce` fails their open recipients now
//! with one delivery status notification to the sender; `retry` makes them due now, for the
//! next run; `show` prints the envelope and the message, like `postcat -q`.
//!
//! # Promises
//!
//! - Nothing is selected by default: a request without ids, `-R`, `-S`, `-I`, `--held`,
//!   `--older-than` or `--all` is refused before the queue is opened.
//! - Every change is made under the message's lock, the one a runner holds across its SMTP
//!   conversation, and decides on the envelope read again under that lock: a change never races
//!   a delivery, and a message a runner holds is skipped and reported (or waited for, up to
//!   `--wait`). The lock is taken the same way by a dry run, which reports what it would do and
//!   writes nothing at all: no state, no index, no per-domain record, no quarantine.
//! - One line per message on the output, a summary for the caller; every change is logged to
//!   the mail log with the id, what was done and the user who asked.
//! - Held messages do not expire while they are held: the administrator has taken them out of
//!   delivery, as with Postfix's hold queue. Released, a message counts its age from its arrival
//!   as before, so one held past its lifetime is returned to its sender by the next run; release
//!   says so on its line.
//!
//! # Security
//!
//! The program works as the queue's owner (see `queue::become_owner`); the user logged is the
//! one who started it. Ids from arguments or standard input are parsed as queue ids before they
//! name a file. Message text printed by `show` has its control characters replaced, so a
//! hostile message cannot drive the administrator's terminal.
//!
//! # Limits
//!
//! `--wait` polls the lock (a runner's lock is not queued for); the wait is one deadline for the
//! whole request. `bounce` reports "cancelled by the administrator" with status 5.0.0 and no
//! remote host. A message whose envelope cannot be read is reported (and moved to `corrupt/`
//! unless a runner holds it), never changed.

use std::io::Write;
use std::time::Duration;

use crate::config::Config;
use crate::maillog::MailLog;
use crate::queue::{Place, Queue, QueueId};

mod act;
mod bounce;
mod change;
mod error;
mod select;
mod show;
#[cfg(test)]
mod tests;

pub use error::AdminError;
pub use select::{Choice, read_ids};
pub use show::Part;

/// What the administrator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Hold,
    Release,
    Delete,
    Bounce,
    Retry,
    Show,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Hold => "hold",
            Verb::Release => "release",
            Verb::Delete => "delete",
            Verb::Bounce => "bounce",
            Verb::Retry => "retry",
            Verb::Show => "show",
        }
    }
}

/// One request: a verb, the messages it is about, and how to go about it.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: Verb,
    pub choice: Choice,
    /// Say what would be done; change nothing.
    pub dry_run: bool,
    /// How long to wait, in all, for messages a runner holds.
    pub wait: Duration,
    /// What `show` prints of the message.
    pub part: Part,
    /// Who asked, for the mail log.
    pub user: String,
    /// The epoch second ages count from.
    pub now: i64,
}

/// What a request came to, message by message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages acted on (or, in a dry run, that would have been).
    pub done: usize,
    /// Messages already as asked (`hold` of a held message, `release` of an active one).
    pub unchanged: usize,
    /// Messages a runner held throughout.
    pub busy: usize,
    /// Ids named that are not in the queue.
    pub unknown: usize,
    /// Messages whose files could not be used, or whose change could not be written.
    pub failed: usize,
}

impl Summary {
    /// 0 when everything asked was done; 75 when some messages were busy or could not be
    /// changed now (a later try may do them); else 67 when some id was not in the queue.
    pub fn status(&self) -> crate::sysexits::Status {
        use crate::sysexits::Status;
        if self.busy > 0 || self.failed > 0 {
            Status::TempFail
        } else if self.unknown > 0 {
            Status::NoUser
        } else {
            Status::Ok
        }
    }

    /// The summary line for standard error: `hold: 3 done, 1 busy (skipped)`.
    pub fn line(&self, request: &Request) -> String {
        let mut parts = vec![format!(
            "{} {}",
            self.done,
            if request.dry_run {
                "would be done"
            } else {
                "done"
            }
        )];
        for (count, words) in [
            (self.unchanged, "already so"),
            (self.busy, "busy (a run is delivering them; skipped)"),
            (self.failed, "could not be done"),
            (self.unknown, "not in the queue"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {words}"));
            }
        }
        format!("{}: {}", request.verb.name(), parts.join(", "))
    }
}

/// Carries out `request` on `queue`: one line per message on `out`, each change in `log`.
pub fn run(
    queue: &Queue,
    config: &Config,
    request: &Request,
    log: &MailLog,
    out: &mut impl Write,
) -> Result<Summary, AdminError> {
    if request.choice.is_empty() {
        return Err(AdminError::NothingSelected);
    }
    let mut summary = Summary::default();
    let chosen = select::resolve(queue, request, log, out, &mut summary)?;
    let change = match request.verb {
        Verb::Hold => act::Change::Hold,
        Verb::Release => act::Change::Release,
        Verb::Delete => act::Change::Delete,
        Verb::Bounce => act::Change::Bounce,
        Verb::Retry => act::Change::Retry,
        Verb::Show => {
            for (id, place, locked) in chosen {
                show::write(queue, id, place, locked, request.part, out)?;
                summary.done += 1;
            }
            return Ok(summary);
        }
    };
    let context = act::Context {
        queue,
        config,
        request,
        log,
        deadline: std::time::Instant::now() + request.wait,
    };
    for (id, place, _) in chosen {
        act::act(&context, change, (id, place), out, &mut summary)?;
    }
    Ok(summary)
}

/// One message's line on the output.
fn line(out: &mut impl Write, id: QueueId, text: &str) -> Result<(), AdminError> {
    writeln!(out, "{id}: {text}").map_err(AdminError::Output)
}

/// `1 recipient`, `3 recipients`.
fn recipients(count: usize) -> String {
    match count {
        1 => "1 recipient".to_string(),
        n => format!("{n} recipients"),
    }
}

/// Where a message's envelope is, as a listing names it.
fn place_name(place: Place) -> &'static str {
    match place {
        Place::Active => "active",
        Place::Held => "hold",
    }
}
