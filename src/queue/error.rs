//! Why one message cannot be used by a pass ([`Unusable`]), and the helpers that make a
//! [`QueueError`] out of a failed system call with what was being done and to which path.
//!
//! An `Unusable` is one message's trouble alone, and a pass goes on with the others: damage is
//! moved to `corrupt/`, an access problem is left where it is and reported on every pass (see the
//! queue's invariants).

use std::io;
use std::path::PathBuf;

use super::QueueError;

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
