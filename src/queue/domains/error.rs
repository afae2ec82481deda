//! Why the per-domain record cannot be believed, kept or rebuilt: one kind for each cause, worded
//! as a log line or an error message says it.
//!
//! None of these stops a pass: a look-up that fails sends the pass to read every envelope file,
//! a rebuild that fails is tried again by the next pass that needs the record, and only a commit
//! that can neither record nor make the record unbelieved fails, as
//! [`QueueError::Busy`](crate::queue::QueueError::Busy), to be tried again later.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::{DIR, LIST, MAX_FILE};
use crate::queue::{QueueError, TMP};

/// Why the per-domain record cannot be believed, kept or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the system's boot id cannot be read")]
    NoBootId,
    #[error("no record has been made yet")]
    NotMade,
    /// A lock still held when the wait for it ended: its holder has stopped.
    #[error("held by another process for over {0:?}")]
    LockHeld(Duration),
    #[error("cannot lock: {0}")]
    Lock(io::Error),
    /// Record file `name` could not be locked.
    #[error("{DIR}/{name}: {source}")]
    FileLock {
        name: String,
        source: Box<RecordError>,
    },
    #[error("cannot open {}: {errno}", root.display())]
    OpenQueue { root: PathBuf, errno: nix::Error },
    #[error("{DIR} is not a directory")]
    DirNotDirectory,
    #[error("{DIR} is owned by uid {0}, not the queue's")]
    DirForeign(u32),
    #[error("{action} {DIR}: {errno}")]
    DirSys {
        action: &'static str,
        errno: nix::Error,
    },
    #[error("{action} {DIR}: {source}")]
    DirIo {
        action: &'static str,
        source: io::Error,
    },
    #[error("{DIR} keeps vanishing as it is made")]
    DirVanishing,
    #[error("cannot move {DIR} aside: {0}")]
    MoveAside(nix::Error),
    /// The directory listed by name is not the one this process has open.
    #[error("{DIR} was replaced")]
    DirReplaced,
    #[error("{DIR}/{name} is a symbolic link")]
    Link { name: String },
    #[error("{DIR}/{name} is {kind}, not a regular file")]
    NotRegular { name: String, kind: &'static str },
    #[error("{DIR}/{name} is owned by uid {uid}, not the queue's")]
    Foreign { name: String, uid: u32 },
    #[error("{action} {DIR}/{name}: {source}")]
    Io {
        action: &'static str,
        name: String,
        source: io::Error,
    },
    #[error("{action} {DIR}/{name}: {errno}")]
    Sys {
        action: &'static str,
        name: String,
        errno: nix::Error,
    },
    /// An open record file that could not be examined.
    #[error("{0}")]
    Unexamined(io::Error),
    #[error("{DIR}/{name} is over {MAX_FILE} bytes")]
    TooBig { name: String },
    #[error("{DIR}/{name} is damaged")]
    Damaged { name: String },
    #[error("{DIR}/{name} is missing")]
    Missing { name: String },
    #[error("{DIR}/{LIST} is not of this boot of the system")]
    OtherBoot,
    #[error("{DIR}/{LIST} is damaged or of another boot")]
    DamagedOrOtherBoot,
    #[error("{DIR}/{name} is named in {LIST} but missing")]
    NamedButMissing { name: String },
    /// A domain file deleted by hand: the ids it held are in no file now.
    #[error("{DIR}/{name} was lost: {LIST} names it")]
    Lost { name: String },
    #[error("{DIR}/{name} was replaced")]
    Replaced { name: String },
    #[error("{DIR}/{name} keeps being replaced")]
    KeepsBeingReplaced { name: String },
    #[error("cannot read: {0}")]
    AppendRead(io::Error),
    #[error("cannot write: {0}")]
    AppendWrite(io::Error),
    #[error("its last line is damaged")]
    LastLine,
    #[error("cannot create {TMP}/: {0}")]
    TmpCreate(io::Error),
    #[error("cannot write {TMP}/: {0}")]
    TmpWrite(io::Error),
    /// The queue itself failed a rebuild.
    #[error("{0}")]
    Queue(Box<QueueError>),
}
