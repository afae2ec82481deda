//! The queue's errors: an operation that failed ([`QueueError`]) and a message a pass cannot use
//! ([`Unusable`]).
//!
//! A `QueueError` says what was being done and to which path, and carries the exit status a
//! program ends with when it stops on it ([`Sysexit`]). An `Unusable` is one message's trouble
//! alone, and a pass goes on with the others: damage is moved to `corrupt/`, an access problem is
//! left where it is and reported on every pass (see the queue's invariants).

use std::io;
use std::path::PathBuf;

use super::domains::RecordError;
use super::envelope;
use super::id::QueueId;
use crate::sysexits::{Status, Sysexit};

/// A queue failure, with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: is a symbolic link; the queue follows none", path.display())]
    Symlink { path: PathBuf },
    #[error("queue id {id} is already taken; submit again")]
    IdCollision { id: QueueId },
    /// One message's file that this process cannot use: left in place, tried again later.
    #[error("{reason}")]
    Inaccessible { reason: String },
    #[error(
        "{recipients} recipients are more than one message may carry: its envelope could grow \
         to {largest} bytes, and the most an envelope may hold is {} bytes; send it in parts",
        envelope::MAX_BYTES
    )]
    TooManyRecipients { recipients: usize, largest: u64 },
    #[error("{} belongs to {owner}; run this as that user or as root", path.display())]
    NotOwner { path: PathBuf, owner: String },
    #[error("cannot become {owner}, the owner of {}: {source}", path.display())]
    CannotBecomeOwner {
        path: PathBuf,
        owner: String,
        source: nix::Error,
    },
    /// The per-domain record could not be kept (see `domains`); try again later.
    #[error("{}: {reason}; try again later", path.display())]
    Busy { path: PathBuf, reason: RecordError },
}

impl Sysexit for QueueError {
    fn status(&self) -> Status {
        match self {
            QueueError::Io { source, .. } => Status::of_io(source),
            QueueError::Symlink { .. } => Status::CantCreat,
            QueueError::IdCollision { .. } => Status::TempFail,
            QueueError::Inaccessible { .. } => Status::TempFail,
            QueueError::TooManyRecipients { .. } => Status::DataErr,
            QueueError::NotOwner { .. } | QueueError::CannotBecomeOwner { .. } => Status::NoPerm,
            QueueError::Busy { .. } => Status::TempFail,
        }
    }
}

/// Why one message cannot be used by this pass. Either way the pass goes on with the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// The owner's own regular file, read whole, is not a message: torn, garbled, too big, its
    /// data file missing. Moved to `corrupt/` for a human.
    #[error("{0}")]
    Damaged(String),
    /// The file cannot be read as one of the queue's own: not a regular file, a symbolic link,
    /// another user's, permission denied, an I/O error. Left in place and reported on every pass
    /// until a human fixes it: a process that cannot read a file cannot call it damaged.
    #[error("{0}")]
    Inaccessible(String),
}

pub(super) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> QueueError {
    let path = path.into();
    move |source| QueueError::Io {
        action,
        path,
        source,
    }
}

pub(super) fn nix_error(
    action: &'static str,
    path: PathBuf,
) -> impl FnOnce(nix::Error) -> QueueError {
    move |errno| QueueError::Io {
        action,
        path,
        source: io::Error::from_raw_os_error(errno as i32),
    }
}
