//! An unreadable message met during a listing, and how each format reports it.

use std::io::{self, Write};

use serde::Serialize;

use crate::queue::{Place, QueueId, Unusable};

use super::Format;

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

pub(super) fn write_unreadable(
    out: &mut impl Write,
    format: Format,
    u: &Unreadable,
) -> io::Result<()> {
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

#[derive(Serialize)]
struct UnreadableJson<'a> {
    queue_name: &'static str,
    queue_id: &'a str,
    error: &'a str,
    unreadable: &'static str,
}
