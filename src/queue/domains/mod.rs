//! The per-domain record: for each recipient domain, the ids of the messages queued for it, so
//! that the work for one domain (`queue-run -R`, ETRN's count, `mailq -R`) reads that domain's
//! envelopes and no others, however many other messages wait.
//!
//! `QUEUE/domains/DOMAIN` (the domain in lower case) holds the ids of the messages queued with a
//! recipient in DOMAIN; `QUEUE/domains/.unknown` the ids of messages whose envelope could not be
//! read when the record was last rebuilt, which the work for every domain reads too;
//! `QUEUE/domains/.list` names every domain file and the boot of the system it was made under.
//! Every file is self-delimiting, so a torn, truncated or edited one is recognised (see `format`):
//!
//! ```text
//! etrnq-domain 1 customer.example       etrnq-domains 1 BOOT-ID
//! 1xWNa000000001                        customer.example
//! 1xWNa000000002                        other.example
//! end 2 HASH                            end 2 HASH
//! ```
//!
//! The last line counts the lines between the first and itself, and HASH is the exclusive or of
//! their 64-bit FNV-1a hashes, in hexadecimal.
//!
//! The record is written at three moments:
//!
//! - Every commit ([`record`]), after the message's data is in `data/` and before its envelope's
//!   rename into `env/`, appends the id to the file of each recipient domain: one write of the
//!   new line and the new last line over the old last line, under the file's exclusive lock. A
//!   domain without a file gets one (written under `tmp/`, renamed into place), and its name is
//!   appended to `.list`. Nothing is synced: a process that dies loses nothing the kernel has,
//!   and what a power cut loses is covered by the boot id.
//! - A per-domain pass that cannot believe the record reads every envelope file instead and
//!   rebuilds the record from them ([`rebuild`]): `.list` is removed, every id the pass read is
//!   merged into its domains' files, then `.list` is written afresh with this boot's id.
//! - A per-domain pass that met many ids of messages that left the queue rewrites those files
//!   without them ([`compact`]); a plain queue run does the same for every file, and removes the
//!   files left with nothing once `.list` no longer names them ([`sweep`]).
//!
//! Why append-only files, and no sync: on the disk of the benchmarks (ext4, 2 busy cores), a
//! locked append costs 11 to 19 µs, an empty marker file per message 60 µs to 1.1 ms to create
//! (and its removal at delivery another 11 to 21 µs), and an `fdatasync` of the append 2.3 to
//! 4 ms, against about 5.5 ms for a whole submission: a synced record would cost submissions a
//! third of their rate. What a power cut can lose, the boot id catches.
//!
//! # Promises
//!
//! Complete: while `.list` names this boot, every message in `env/` and `hold/` is in the file of
//! each of its recipients' domains or in `.unknown`, and every domain file that exists is named in
//! `.list`. A message whose commit could not append its id (a file that is not what it should be,
//! a lock held too long) removes `.list` before its envelope is renamed into place, so the record
//! is not believed until it is rebuilt. A file that `.list` names and that is gone (deleted by
//! hand) is made again only after `.list` is removed, and a look-up believes what it read only if
//! the `.list` it opened is still in place after its reads. A `domains` that is not the owner's
//! directory is moved aside (to `QUEUE/domains.unusable.ID`) and started afresh. Extra ids
//! (messages that left, commits that died) are harmless: the envelope files decide, and the
//! record only chooses which of them a pass reads.
//!
//! Believed only whole: `.list` of this boot, and every file a selection needs present (or, for a
//! domain file, absent and not named in `.list`), regular, the owner's, at most [`MAX_FILE`]
//! bytes, with its last line agreeing with its lines. Anything else sends the pass to read every
//! envelope file and rebuild the record; nothing in the record ever stops a pass.
//!
//! Rebuilt without losing a concurrent commit: commits take the queue directory's lock shared from
//! before they record until their envelope is renamed; a rebuild, once its files are merged, takes
//! it exclusively, reads the envelopes that appeared since its pass listed the queue, and only
//! then writes `.list`. Files are replaced by rename while their old version is locked, and an
//! appender that finds the file it locked no longer linked opens it again, so no append is lost
//! to a compaction.
//!
//! # Security
//!
//! Record files are queue files: opened without following a link or waiting on a pipe, believed
//! only as regular files of the queue's owner, read only up to [`MAX_FILE`]. Names come from
//! validated domains ([`Domain`]), so a file name is never a path.
//!
//! # Limits
//!
//! Lock order is the gate (the lock of `tmp/`), the queue directory, then one record file; a wait
//! for a lock is bounded, and a commit that cannot take the queue directory's lock within
//! [`COMMIT_WAIT`] fails (try again later). A rebuild holds every queued id in memory, by domain, and keeps commits waiting while
//! it lists `env/` and `hold/` a second time. An older etrnq that queues mail after this one has
//! made a record leaves it incomplete: delete `QUEUE/domains` after running one. The boot id comes
//! from `/proc`; without it the record is never believed.

use std::sync::OnceLock;
use std::time::Duration;

use crate::address::Domain;
use crate::queue::envelope::Recipient;

mod error;
mod format;
mod lookup;
#[cfg(test)]
mod races;
mod rebuild;
mod record;
mod rewrite;
mod store;
#[cfg(test)]
mod tests;

pub use error::RecordError;
pub(super) use lookup::{Found, lookup};
pub(super) use rebuild::{Census, rebuild};
pub(super) use record::record;
pub(super) use rewrite::{compact, sweep};

/// The record's directory, under the queue.
const DIR: &str = "domains";
const LIST: &str = ".list";
const UNKNOWN: &str = ".unknown";
const FILE_MAGIC: &str = "etrnq-domain 1";
const LIST_MAGIC: &str = "etrnq-domains 1";

/// A record file is read whole; a larger one (more than 4 million ids) is not believed.
const MAX_FILE: u64 = 64 << 20;

/// How long to wait for a record file's lock: its holders keep it for a few system calls, so a
/// longer wait means a stopped process, and the record is given up instead.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long a commit waits for a rebuild to finish publishing before it fails.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// How long a rebuild or a sweep waits for the commits in progress to finish.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// A file is compacted when at least this many of its ids, and at least half, have left.
const COMPACT_MIN: usize = 64;

/// The id of this boot of the system: what a power cut may have lost, it changes with.
fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = text.trim();
        (id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            .then(|| id.to_string())
    })
    .as_deref()
}

/// The record's name for each domain of `recipients`: the domain in lower case, once each. A
/// domain that does not parse is left out: no `-R` can select it.
fn names_of<'a>(recipients: impl Iterator<Item = &'a Recipient>) -> Vec<String> {
    let mut names: Vec<String> = recipients
        .filter_map(|r| Domain::parse(r.domain()).ok())
        .map(|d| d.to_lowercase())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// True for a name that can be a domain file's: a domain in lower case, as [`names_of`] makes.
fn is_domain_name(name: &str) -> bool {
    Domain::parse(name).is_ok_and(|d| d.as_str() == name && d.to_lowercase() == name)
}
