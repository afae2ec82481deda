//! Whose the queue's files are: the owner of the queue directory, whom a program started by root
//! becomes before it opens the queue.
//!
//! [`become_owner`] gives up root for good (supplementary groups, then the group, then the user,
//! real, effective and saved ids alike) and refuses anyone but root and the owner, since the
//! queue's files are the owner's alone; it must run while the program has one thread. The user
//! who started the program is remembered ([`invoking_uid`]): a submission names that user.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::unistd::{Gid, Uid, User};

use super::QueueError;
use super::error::io_error;

/// The user this process was started as, when [`become_owner`] changed it.
static INVOKER: OnceLock<u32> = OnceLock::new();

/// The user who started this program, before [`become_owner`] changed it: a submission names
/// this user as its sender and in its `Received:` field.
pub fn invoking_uid() -> u32 {
    INVOKER
        .get()
        .copied()
        .unwrap_or_else(|| nix::unistd::getuid().as_raw())
}

/// Makes this process the owner of the queue at `root` before anything in it is opened, so that
/// every file it creates, and the mail log it opens afterwards, belongs to the queue's owner.
///
/// Run by the owner (or on a queue that does not exist yet, which this process will create and
/// so own) it does nothing. Run by root on another user's queue, it takes that user's id, its
/// login group (the directory's group when the user has no account entry) and no supplementary
/// groups, for good: nothing the program does later runs as root. Run by anyone else it refuses,
/// since the queue's files are the owner's alone. Call it while the program has one thread.
pub fn become_owner(root: &Path) -> Result<(), QueueError> {
    let meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot examine", root)(e)),
    };
    let owner = Uid::from_raw(meta.uid());
    let me = nix::unistd::geteuid();
    if me == owner {
        return Ok(());
    }
    let user = User::from_uid(owner).ok().flatten();
    let name = describe_user(meta.uid());
    if !me.is_root() {
        return Err(QueueError::NotOwner {
            path: root.to_path_buf(),
            owner: name,
        });
    }
    let group = user.map_or(Gid::from_raw(meta.gid()), |user| user.gid);
    let invoker = nix::unistd::getuid().as_raw();
    let switched = nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(group, group, group))
        .and_then(|()| nix::unistd::setresuid(owner, owner, owner));
    switched.map_err(|source| QueueError::CannotBecomeOwner {
        path: root.to_path_buf(),
        owner: name,
        source,
    })?;
    let _ = INVOKER.set(invoker);
    Ok(())
}

/// `etrnq (uid 999)`, or `uid 999` when the user has no account entry.
pub fn describe_user(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)).ok().flatten() {
        Some(user) => format!("{} (uid {uid})", user.name),
        None => format!("uid {uid}"),
    }
}

/// The name `chown` takes for `uid`.
pub(super) fn chown_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}
