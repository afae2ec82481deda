//! The verbs that change a locked message in place or take it away: hold, release, delete and
//! retry. Each returns what it did, for the output line and the mail log; `act` says it.

use crate::config::Config;
use crate::delivery::retry;
use crate::queue::selection::Selection;
use crate::queue::{Locked, Place, QueueError};

use super::act::Done;

/// Moves the message to administrative hold.
pub(super) fn hold(locked: &mut Locked<'_>) -> Result<Done, QueueError> {
    if locked.place() == Place::Held {
        return Ok(Done::Unchanged("already on hold".to_string()));
    }
    locked.move_to(Place::Held)?;
    Ok(Done::Changed {
        line: "held".to_string(),
        log: "placed on hold".to_string(),
    })
}

/// Brings the message back from hold. One held past its lifetime is said to be returned to its
/// sender by the next run: its age counts from its arrival, hold or not.
pub(super) fn release(
    locked: &mut Locked<'_>,
    config: &Config,
    now: i64,
) -> Result<Done, QueueError> {
    if locked.place() == Place::Active {
        return Ok(Done::Unchanged("not on hold".to_string()));
    }
    locked.move_to(Place::Active)?;
    let line = if !retry::expired_recipients(config, locked.envelope(), now).is_empty() {
        "released; older than its queue lifetime, so the next run returns it to its sender"
    } else {
        "released"
    };
    Ok(Done::Changed {
        line: line.to_string(),
        log: "released from hold".to_string(),
    })
}

/// Takes the message out of the queue, without a bounce.
pub(super) fn delete(locked: Locked<'_>) -> Result<Done, QueueError> {
    locked.remove()?;
    Ok(Done::Changed {
        line: "deleted".to_string(),
        log: "removed".to_string(),
    })
}

/// Makes the open recipients `selection` takes due now, for the next run, as `postsuper -r`
/// does; a held message stays held.
pub(super) fn retry(locked: &mut Locked<'_>, selection: &Selection) -> Result<Done, QueueError> {
    let mut count = 0;
    for recipient in &mut locked.envelope_mut().recipients {
        if recipient.status.is_open() && selection.selects_recipient(recipient) {
            recipient.next_attempt = 0;
            count += 1;
        }
    }
    locked.save()?;
    let held = if locked.place() == Place::Held {
        "; still on hold until released"
    } else {
        ""
    };
    let count = super::recipients(count);
    Ok(Done::Changed {
        line: format!("due now ({count}){held}"),
        log: format!("made due now ({count})"),
    })
}
