//! The per-domain record: for each recipient domain, the ids of the messages queued for it, so
//! that the work for one domain (`queue-run -R`, ETRN's count, `mailq -R`) reads that domain's
//! envelopes and no others, however many other messages wait.
//!
//! DESCRIPTION
//!     `QUEUE/domains/DOMAIN` (the domain in lower case) holds the ids of the messages queued
//!     with a recipient in DOMAIN; `QUEUE/domains/.unknown` the ids of messages whose envelope
//!     could not be read when the record was last rebuilt, which the work for every domain reads
//!     too; `QUEUE/domains/.list` names every domain file and the boot of the system it was made
//!     under. Every file is self-delimiting, so a torn, truncated or edited one is recognised:
//!
//!     ```text
//!     etrnq-domain 1 customer.example       etrnq-domains 1 BOOT-ID
//!     1xWNa000000001                        customer.example
//!     1xWNa000000002                        other.example
//!     end 2 HASH                            end 2 HASH
//!     ```
//!
//!     The last line counts the lines between the first and itself, and HASH is the exclusive
//!     or of their 64-bit FNV-1a hashes, in hexadecimal.
//!
//!     The record is written at three moments:
//!
//!     - Every commit ([`record`]), after the message's data is in `data/` and before its
//!       envelope's rename into `env/`, appends the id to the file of each recipient domain: one
//!       write of the new line and the new last line over the old last line, under the file's
//!       exclusive lock. A domain without a file gets one (written under `tmp/`, renamed into
//!       place), and its name is appended to `.list`. Nothing is synced: a process that dies
//!       loses nothing the kernel has, and what a power cut loses is covered by the boot id.
//!     - A per-domain pass that cannot believe the record reads every envelope file instead
//!       and rebuilds the record from them ([`rebuild`]): `.list` is removed, every id the pass
//!       read is merged into its domains' files, then `.list` is written afresh with this boot's
//!       id.
//!     - A per-domain pass that met many ids of messages that left the queue rewrites those files
//!       without them ([`compact`]); a plain queue run does the same for every file, and removes
//!       the files left with nothing once `.list` no longer names them ([`sweep`]).
//!
//!     Why append-only files, and no sync: on the disk of the benchmarks (ext4, 2 busy cores), a
//!     locked append costs 11 to 19 µs, an empty marker file per message 60 µs to 1.1 ms to
//!     create (and its removal at delivery another 11 to 21 µs), and an `fdatasync` of the
//!     append 2.3 to 4 ms, against about 5.5 ms for a whole submission: a synced record would
//!     cost submissions a third of their rate. What a power cut can lose, the boot id catches.
//!
//! PROMISES
//!     Complete: while `.list` names this boot, every message in `env/` and `hold/` is in the
//!     file of each of its recipients' domains or in `.unknown`, and every domain file that
//!     exists is named in `.list`. A message whose commit could not append its id (a file that
//!     is not what it should be, a lock held too long) removes `.list` before its envelope is
//!     renamed into place, so the record is not believed until it is rebuilt; a `domains` that is
//!     not the owner's directory is moved aside (to `QUEUE/domains.unusable.ID`) and started
//!     afresh. Extra ids (messages that left, commits that died) are harmless: the envelope
//!     files decide, and the record only chooses which of them a pass reads.
//!
//!     Believed only whole: `.list` of this boot, and every file a selection needs present (or,
//!     for a domain file, absent and not named in `.list`), regular, the owner's, at most
//!     [`MAX_FILE`] bytes, with its last line agreeing with its lines. Anything else sends the
//!     pass to read every envelope file and rebuild the record; nothing in the record ever stops a
//!     pass.
//!
//!     Rebuilt without losing a concurrent commit: commits take the queue directory's lock
//!     shared from before they record until their envelope is renamed; a rebuild, once its files
//!     are merged, takes it exclusively, reads the envelopes that appeared since its pass listed
//!     the queue, and only then writes `.list`. Files are replaced by rename while their old
//!     version is locked, and an appender that finds the file it locked no longer linked opens
//!     it again, so no append is lost to a compaction.
//!
//! SECURITY
//!     Record files are queue files: opened without following a link or waiting on a pipe,
//!     believed only as regular files of the queue's owner, read only up to [`MAX_FILE`]. Names
//!     come from validated domains ([`Domain`]), so a file name is never a path.
//!
//! LIMITS
//!     Lock order is the queue directory, then one record file; a wait for a lock is bounded, and
//!     a commit that cannot take the queue directory's lock within [`COMMIT_WAIT`] fails (try
//!     again later). A rebuild holds every queued id in memory, by domain, and keeps commits
//!     waiting while it lists `env/` and `hold/` a second time. An older etrnq that queues mail
//!     after this one has made a record leaves it incomplete: delete `QUEUE/domains` after
//!     running one. The boot id comes from `/proc`; without it the record is never believed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::files::{Refusal, create_file, rename_noreplace};
use super::{Place, Queue, QueueError, QueueId, TMP};
use crate::address::Domain;
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::selection::DomainPattern;

/// The record's directory, under the queue.
pub(super) const DIR: &str = "domains";
const LIST: &str = ".list";
const UNKNOWN: &str = ".unknown";
const FILE_MAGIC: &str = "etrnq-domain 1";
const LIST_MAGIC: &str = "etrnq-domains 1";

/// A record file is read whole; a larger one (more than 4 million ids) is not believed.
pub(super) const MAX_FILE: u64 = 64 << 20;

/// How long to wait for a record file's lock: its holders keep it for a few system calls, so a
/// longer wait means a stopped process, and the record is given up instead.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long a commit waits for a rebuild to finish publishing before it fails.
pub(super) const COMMIT_WAIT: Duration = Duration::from_secs(30);

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

/// The last line of a record file: how many lines lie between it and the first, and a hash of
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seal {
    count: u64,
    hash: u64,
}

impl Seal {
    fn of<'a>(items: impl IntoIterator<Item = &'a str>) -> Seal {
        items.into_iter().fold(Seal::default(), Seal::add)
    }

    fn add(self, item: &str) -> Seal {
        Seal {
            count: self.count + 1,
            hash: self.hash ^ fnv1a(item.as_bytes()),
        }
    }

    fn line(self) -> String {
        format!("end {} {:016x}\n", self.count, self.hash)
    }

    fn parse(line: &str) -> Option<Seal> {
        let mut words = line.strip_prefix("end ")?.split(' ');
        let count = words.next()?;
        let hash = words.next()?;
        if words.next().is_some()
            || hash.len() != 16
            || !count.bytes().all(|b| b.is_ascii_digit())
            || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        Some(Seal {
            count: count.parse().ok()?,
            hash: u64::from_str_radix(hash, 16).ok()?,
        })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A whole record file: its first line, its items, its last line.
fn render<'a>(magic: &str, name: &str, items: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = format!("{magic} {name}\n");
    let mut seal = Seal::default();
    for item in items {
        out.push_str(item);
        out.push('\n');
        seal = seal.add(item);
    }
    out.push_str(&seal.line());
    out.into_bytes()
}

/// The items of a whole record file whose first line is `MAGIC NAME`, or `None` when anything
/// about it is off.
fn parse<'b>(bytes: &'b [u8], magic: &str, name: &str) -> Option<Vec<&'b str>> {
    let body = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let (head, rest) = body.split_once('\n')?;
    if head.strip_prefix(magic)?.strip_prefix(' ')? != name {
        return None;
    }
    let (items, last) = match rest.rsplit_once('\n') {
        Some((items, last)) => (items.split('\n').collect(), last),
        None => (Vec::new(), rest),
    };
    (Seal::parse(last)? == Seal::of(items.iter().copied())).then_some(items)
}

/// The ids of a domain file, or `None` when it is not whole.
fn parse_ids(bytes: &[u8], name: &str) -> Option<Vec<QueueId>> {
    parse(bytes, FILE_MAGIC, name)?
        .into_iter()
        .map(QueueId::parse)
        .collect()
}

/// Every line of a damaged domain file that is an id: what a rebuild keeps of it.
fn salvage_ids(bytes: &[u8]) -> Vec<QueueId> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok().and_then(QueueId::parse))
        .collect()
}

/// Takes `file`'s lock, waiting at most `limit`.
fn lock_within(file: &File, shared: bool, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!("held by another process for over {limit:?}"));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock: {e}")),
        }
    }
}

/// The queue directory itself, opened afresh (a lock belongs to one open file), locked shared
/// by commits and exclusively by a rebuild's first and last steps and by a sweep's removals.
fn lock_queue(queue: &Queue, shared: bool, limit: Duration) -> Result<File, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let file = nix::fcntl::openat(&queue.top, ".", flags, Mode::empty())
        .map(File::from)
        .map_err(|e| format!("cannot open {}: {e}", queue.root.display()))?;
    lock_within(&file, shared, limit)?;
    Ok(file)
}

/// What a refusal to open record file `name` says.
fn refused(name: &str, refusal: Refusal) -> String {
    match refusal {
        Refusal::Link => format!("{DIR}/{name} is a symbolic link"),
        Refusal::NotRegular(kind) => format!("{DIR}/{name} is {kind}, not a regular file"),
        Refusal::Foreign(uid) => format!("{DIR}/{name} is owned by uid {uid}, not the queue's"),
        Refusal::Io(action, e) => format!("{action} {DIR}/{name}: {e}"),
    }
}

/// Why the record's directory was not opened.
enum DirTrouble {
    /// What holds its name is not the owner's directory that the owner may open: a link, a
    /// file, another user's directory, one whose mode shuts its owner out. Never believed; moved
    /// aside by whoever needs to write.
    NotOurs(String),
    /// Anything else (no descriptor left, an I/O error): nothing is known about it.
    Io(String),
}

impl DirTrouble {
    fn reason(self) -> String {
        match self {
            DirTrouble::NotOurs(reason) | DirTrouble::Io(reason) => reason,
        }
    }
}

/// The record's directory: `Ok(None)` when there is none. Only the owner's is believed; one of
/// this process's own (the library used by root without [`super::become_owner`]) is written
/// in too, when `mine_too`, since nobody believes it before the owner rebuilds it.
fn open_dir(queue: &Queue, mine_too: bool) -> Result<Option<File>, DirTrouble> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match nix::fcntl::openat(&queue.top, DIR, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ELOOP | nix::Error::ENOTDIR) => {
            return Err(DirTrouble::NotOurs(format!("{DIR} is not a directory")));
        }
        Err(e @ (nix::Error::EACCES | nix::Error::EPERM)) => {
            return Err(DirTrouble::NotOurs(format!("cannot open {DIR}: {e}")));
        }
        Err(e) => return Err(DirTrouble::Io(format!("cannot open {DIR}: {e}"))),
    };
    let meta = dir
        .metadata()
        .map_err(|e| DirTrouble::Io(format!("cannot examine {DIR}: {e}")))?;
    let mine = mine_too && meta.uid() == nix::unistd::geteuid().as_raw();
    if meta.uid() != queue.owner && !mine {
        return Err(DirTrouble::NotOurs(format!(
            "{DIR} is owned by uid {}, not the queue's",
            meta.uid()
        )));
    }
    Ok(Some(dir))
}

/// The record's directory, made when missing; what holds its name and is not the owner's
/// directory is moved aside first.
fn usable_dir(queue: &Queue) -> Result<File, String> {
    // A directory removed between its making and its opening is made again.
    for _ in 0..8 {
        match open_dir(queue, true) {
            Ok(Some(dir)) => return Ok(dir),
            Ok(None) => {}
            Err(DirTrouble::NotOurs(_)) => move_aside(queue)?,
            Err(DirTrouble::Io(reason)) => return Err(reason),
        }
        match nix::sys::stat::mkdirat(&queue.top, DIR, Mode::S_IRWXU) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(format!("cannot create {DIR}: {e}")),
        }
    }
    Err(format!("{DIR} keeps vanishing as it is made"))
}

/// Renames what holds the record's name to `domains.unusable.ID` beside it: a rename within one
/// directory needs no permission on the thing renamed, so even another user's directory goes.
fn move_aside(queue: &Queue) -> Result<(), String> {
    let aside = format!("{DIR}.unusable.{}", QueueId::generate());
    match nix::fcntl::renameat(&queue.top, DIR, &queue.top, aside.as_str()) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(format!("cannot move {DIR} aside: {e}")),
    }
}

/// Opens record file `name` for reading or for writing; `Ok(None)` when there is none.
fn open_file(queue: &Queue, dir: &File, name: &str, write: bool) -> Result<Option<File>, String> {
    let access = if write {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    };
    match queue.open_own_as(dir, name, access) {
        Ok(opened) => Ok(opened.map(|(file, _)| file)),
        Err(refusal) => Err(refused(name, refusal)),
    }
}

/// A record file's bytes, read whole under its shared lock; `Ok(None)` when there is none.
fn read_file(queue: &Queue, dir: &File, name: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(file) = open_file(queue, dir, name, false)? else {
        return Ok(None);
    };
    lock_within(&file, true, LOCK_WAIT).map_err(|e| format!("{DIR}/{name}: {e}"))?;
    read_locked(&file, name).map(Some)
}

/// The bytes of a record file this process holds a lock on; one over [`MAX_FILE`] is not read.
fn read_locked(file: &File, name: &str) -> Result<Vec<u8>, String> {
    let too_big = || format!("{DIR}/{name} is over {MAX_FILE} bytes");
    let size = file
        .metadata()
        .map_err(|e| format!("cannot examine {DIR}/{name}: {e}"))?
        .len();
    if size > MAX_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {DIR}/{name}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The ids of domain file `name`: `Ok(None)` when there is none, an error when it is not whole.
fn read_ids(queue: &Queue, dir: &File, name: &str) -> Result<Option<Vec<QueueId>>, String> {
    let Some(bytes) = read_file(queue, dir, name)? else {
        return Ok(None);
    };
    parse_ids(&bytes, name)
        .map(Some)
        .ok_or_else(|| format!("{DIR}/{name} is damaged"))
}

/// `.list`, once its first line has shown it to be of this boot.
struct List {
    file: File,
    boot: &'static str,
    names: Option<Vec<String>>,
}

impl List {
    fn open(queue: &Queue, dir: &File, boot: &'static str) -> Result<List, String> {
        let file = open_file(queue, dir, LIST, false)?
            .ok_or_else(|| format!("{DIR}/{LIST} is missing"))?;
        // The first line is written once, with the file; appends go after it.
        let mut head = [0u8; 128];
        let read = file
            .read_at(&mut head, 0)
            .map_err(|e| format!("cannot read {DIR}/{LIST}: {e}"))?;
        let first = head[..read].split(|&b| b == b'\n').next().unwrap_or(&[]);
        if first != format!("{LIST_MAGIC} {boot}").as_bytes() {
            return Err(format!("{DIR}/{LIST} is not of this boot of the system"));
        }
        Ok(List {
            file,
            boot,
            names: None,
        })
    }

    /// The domain files it names, sorted; read whole and checked the first time, under its
    /// shared lock for the read alone, so that a long look-up never keeps a commit from naming
    /// a new file.
    fn names(&mut self) -> Result<&[String], String> {
        if self.names.is_none() {
            lock_within(&self.file, true, LOCK_WAIT).map_err(|e| format!("{DIR}/{LIST}: {e}"))?;
            let read = read_locked(&self.file, LIST);
            // Closing the file would release it too; a look-up keeps the file a while.
            let _ = self.file.unlock();
            let bytes = read?;
            let names = parse(&bytes, LIST_MAGIC, self.boot)
                .filter(|names| names.iter().all(|n| is_domain_name(n)))
                .ok_or_else(|| format!("{DIR}/{LIST} is damaged"))?;
            let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
            names.sort_unstable();
            self.names = Some(names);
        }
        Ok(self.names.as_deref().unwrap_or_default())
    }
}

/// What the record says a selection must read.
#[derive(Debug)]
pub(super) struct Found {
    /// The candidates, sorted, each once.
    pub(super) ids: Vec<QueueId>,
    /// Each file read, with its ids, for compaction.
    files: Vec<(String, Vec<QueueId>)>,
    dir: File,
}

/// The messages that may have an open recipient in one of `patterns`, from the record; an error
/// says why the record cannot be believed, and the caller reads every envelope instead.
pub(super) fn lookup(queue: &Queue, patterns: &[DomainPattern]) -> Result<Found, String> {
    let boot = boot_id().ok_or("the system's boot id cannot be read")?;
    let dir = open_dir(queue, false)
        .map_err(DirTrouble::reason)?
        .ok_or("no record has been made yet")?;
    let mut list = List::open(queue, &dir, boot)?;
    let mut names = vec![UNKNOWN.to_string()];
    for pattern in patterns {
        match pattern {
            DomainPattern::Exact(domain) => names.push(domain.to_lowercase()),
            DomainPattern::WithSubdomains(parent) => names.extend(
                list.names()?
                    .iter()
                    .filter(|n| Domain::parse(n).is_ok_and(|d| d.is_within(parent)))
                    .cloned(),
            ),
        }
    }
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::new();
    for name in names {
        match read_ids(queue, &dir, &name)? {
            Some(ids) => files.push((name, ids)),
            // Nothing queued for it since the record was made, or all of it gone.
            None if name != UNKNOWN && list.names()?.binary_search(&name).is_err() => {}
            None if name == UNKNOWN => return Err(format!("{DIR}/{UNKNOWN} is missing")),
            None => return Err(format!("{DIR}/{name} is named in {LIST} but missing")),
        }
    }
    let mut ids: Vec<QueueId> = files.iter().flat_map(|(_, ids)| ids).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(Found { ids, files, dir })
}

/// Holds the queue directory's shared lock while a commit records its id and renames its
/// envelope into place; dropping it releases the lock.
#[derive(Debug)]
pub(super) struct Recording {
    _lock: File,
}

/// Records `envelope`'s id under each of its recipients' domains, before the envelope is
/// renamed into `env/`. Keep the returned value until that rename is done.
///
/// An id that cannot be appended makes the record unbelieved (its `.list` removed) instead of
/// failing the commit. The commit fails (try again later) only when the record's directory can
/// neither be used nor made, when the record cannot even be made unbelieved, or when a rebuild
/// holds the queue for longer than [`COMMIT_WAIT`].
pub(super) fn record(queue: &Queue, envelope: &Envelope) -> Result<Recording, QueueError> {
    let lock = lock_queue(queue, true, COMMIT_WAIT).map_err(|reason| QueueError::Busy {
        path: queue.root.clone(),
        reason,
    })?;
    let recording = Recording { _lock: lock };
    let dir = usable_dir(queue).map_err(|reason| QueueError::Busy {
        path: queue.root.join(DIR),
        reason,
    })?;
    for name in names_of(envelope.recipients.iter()) {
        if add(queue, &dir, &name, envelope.id).is_err() {
            distrust(queue, &dir)?;
        }
    }
    Ok(recording)
}

/// Appends `id` to domain file `name`, making the file (and naming it in `.list`) when there is
/// none.
fn add(queue: &Queue, dir: &File, name: &str, id: QueueId) -> Result<(), String> {
    // A file replaced while this process waited for its lock is opened again.
    for _ in 0..8 {
        let Some(file) = open_file(queue, dir, name, true)? else {
            if create(queue, dir, name, &[id])? {
                return register(queue, dir, name);
            }
            continue;
        };
        lock_within(&file, false, LOCK_WAIT)?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if meta.nlink() > 0 {
            return append(&file, meta.len(), id.as_str());
        }
    }
    Err(format!("{DIR}/{name} keeps being replaced"))
}

/// Names a new domain file in `.list`, when there is one. A file `.list` already names was
/// lost (deleted by hand): the ids it held are not in the new one, so the record must not be
/// believed, and this fails.
fn register(queue: &Queue, dir: &File, name: &str) -> Result<(), String> {
    let Some(list) = open_file(queue, dir, LIST, true)? else {
        return Ok(());
    };
    lock_within(&list, false, LOCK_WAIT)?;
    let meta = list.metadata().map_err(|e| e.to_string())?;
    if meta.nlink() == 0 {
        return Err(format!("{DIR}/{LIST} was replaced"));
    }
    let boot = boot_id().ok_or("the system's boot id cannot be read")?;
    let bytes = read_locked(&list, LIST)?;
    let names = parse(&bytes, LIST_MAGIC, boot)
        .ok_or_else(|| format!("{DIR}/{LIST} is damaged or of another boot"))?;
    if names.contains(&name) {
        return Err(format!("{DIR}/{name} was lost: {LIST} names it"));
    }
    append(&list, meta.len(), name)
}

/// Adds `item` to a record file this process holds the exclusive lock on: the item's line and
/// the new last line are written over the old last line in one write.
fn append(file: &File, len: u64, item: &str) -> Result<(), String> {
    // The last line is at most 42 bytes; the newline before it is read too.
    let start = len.saturating_sub(64);
    let mut tail = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut tail, start)
        .map_err(|e| format!("cannot read: {e}"))?;
    let last = std::str::from_utf8(&tail)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|t| t.rsplit_once('\n'))
        .map(|(_, last)| last)
        .ok_or("its last line is damaged")?;
    let seal = Seal::parse(last).ok_or("its last line is damaged")?;
    let at = len - last.len() as u64 - 1;
    let bytes = format!("{item}\n{}", seal.add(item).line());
    file.write_all_at(bytes.as_bytes(), at)
        .map_err(|e| format!("cannot write: {e}"))
}

/// Makes `.list` absent, so that the record is not believed until a rebuild; when even that
/// cannot be done, the whole directory is moved aside.
fn distrust(queue: &Queue, dir: &File) -> Result<(), QueueError> {
    match nix::unistd::unlinkat(dir, LIST, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
        Err(_) => move_aside(queue).map_err(|reason| QueueError::Busy {
            path: queue.root.join(DIR),
            reason,
        }),
    }
}

/// A file being written under `tmp/`, removed unless it was renamed into place.
struct Draft<'q> {
    queue: &'q Queue,
    name: String,
}

impl<'q> Draft<'q> {
    fn write(queue: &'q Queue, bytes: &[u8]) -> Result<Draft<'q>, String> {
        let draft = Draft {
            queue,
            name: format!("{}.record", QueueId::generate()),
        };
        let path = queue.path(TMP, &draft.name);
        let mut file = create_file(&path).map_err(|e| format!("cannot create {TMP}/: {e}"))?;
        io::Write::write_all(&mut file, bytes).map_err(|e| format!("cannot write {TMP}/: {e}"))?;
        Ok(draft)
    }

    /// Renames it to `name` in `dir`, replacing what is there.
    fn replace(self, dir: &File, name: &str) -> Result<(), String> {
        nix::fcntl::renameat(&self.queue.tmp, self.name.as_str(), dir, name)
            .map_err(|e| format!("cannot replace {DIR}/{name}: {e}"))
    }
}

impl Drop for Draft<'_> {
    fn drop(&mut self) {
        // After a rename the name is gone and this fails harmlessly.
        let _ = std::fs::remove_file(self.queue.path(TMP, &self.name));
    }
}

/// Makes domain file `name` holding `ids`, unless one appeared meanwhile (`Ok(false)`).
fn create(queue: &Queue, dir: &File, name: &str, ids: &[QueueId]) -> Result<bool, String> {
    let draft = Draft::write(
        queue,
        &render(FILE_MAGIC, name, ids.iter().map(QueueId::as_str)),
    )?;
    match rename_noreplace(&queue.tmp, &draft.name, dir, name) {
        Ok(()) => Ok(true),
        Err(nix::Error::EEXIST) => Ok(false),
        Err(e) => Err(format!("cannot create {DIR}/{name}: {e}")),
    }
}

/// How [`rewrite`] treats a file it cannot take as whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// A rebuild, which has every queued id at hand: a damaged file keeps each line that is an
    /// id, a missing one is made, and what is not the owner's regular file is replaced.
    Rebuild,
    /// Dropping ids that left: only a whole file is touched, since rewriting a damaged one
    /// would make it look whole.
    Compact,
}

/// Rewrites domain file `name` with `add` and without `drop` (sorted), under the old version's
/// exclusive lock.
fn rewrite(
    queue: &Queue,
    dir: &File,
    name: &str,
    add: &[QueueId],
    drop: &[QueueId],
    how: Rewrite,
) -> Result<(), String> {
    for _ in 0..8 {
        let file = match open_file(queue, dir, name, true) {
            Ok(Some(file)) => file,
            Ok(None) if how == Rewrite::Compact => return Ok(()),
            Ok(None) => {
                if create(queue, dir, name, &sorted(add.to_vec()))? {
                    return Ok(());
                }
                continue;
            }
            Err(reason) if how == Rewrite::Compact => return Err(reason),
            Err(_) => {
                let bytes = render(
                    FILE_MAGIC,
                    name,
                    sorted(add.to_vec()).iter().map(QueueId::as_str),
                );
                return Draft::write(queue, &bytes)?.replace(dir, name);
            }
        };
        lock_within(&file, false, LOCK_WAIT)?;
        if file.metadata().map_err(|e| e.to_string())?.nlink() == 0 {
            continue;
        }
        let bytes = match read_locked(&file, name) {
            Ok(bytes) => bytes,
            Err(reason) if how == Rewrite::Compact => return Err(reason),
            // Too big to read: nothing of it is kept.
            Err(_) => Vec::new(),
        };
        let (whole, mut ids) = match (parse_ids(&bytes, name), how) {
            (Some(ids), _) => (true, ids),
            (None, Rewrite::Rebuild) => (false, salvage_ids(&bytes)),
            (None, Rewrite::Compact) => return Err(format!("{DIR}/{name} is damaged")),
        };
        let before = ids.len();
        ids.retain(|id| drop.binary_search(id).is_err());
        let known = sorted(ids.clone());
        let missing: Vec<QueueId> = sorted(
            add.iter()
                .filter(|id| known.binary_search(id).is_err())
                .copied()
                .collect(),
        );
        if whole && ids.len() == before && missing.is_empty() {
            return Ok(());
        }
        ids.extend(missing);
        let bytes = render(FILE_MAGIC, name, ids.iter().map(QueueId::as_str));
        // The old version stays locked until the new one has its name, so an appender waiting
        // for it finds it unlinked and opens the new one.
        return Draft::write(queue, &bytes)?.replace(dir, name);
    }
    Err(format!("{DIR}/{name} keeps being replaced"))
}

fn sorted(mut ids: Vec<QueueId>) -> Vec<QueueId> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Rewrites, without the ids that left the queue, each file `found` read in which they are many.
pub(super) fn compact(queue: &Queue, found: &Found, gone: &[QueueId]) {
    for (name, ids) in &found.files {
        let left = ids
            .iter()
            .filter(|id| gone.binary_search(id).is_ok())
            .count();
        if left >= COMPACT_MIN && left * 2 >= ids.len() {
            // Advisory: a file left long is only read longer.
            let _ = rewrite(queue, &found.dir, name, &[], gone, Rewrite::Compact);
        }
    }
}

/// What a pass over every envelope file learnt for the record.
#[derive(Debug, Default)]
pub(super) struct Census {
    domains: HashMap<String, Vec<QueueId>>,
    unknown: Vec<QueueId>,
}

impl Census {
    /// Notes one message: under the domains of its open recipients, or as unknown when its
    /// envelope could not be read.
    pub(super) fn add(&mut self, id: QueueId, envelope: Option<&Envelope>) {
        match envelope {
            Some(envelope) => {
                for name in names_of(envelope.open_recipients()) {
                    self.domains.entry(name).or_default().push(id);
                }
            }
            None => self.unknown.push(id),
        }
    }
}

/// Rebuilds the record from `census`, made by a pass over every envelope file of the queue as
/// `listed` (sorted) showed it: the files are merged, then, with every commit kept waiting, the
/// envelopes that appeared since are read and recorded, and `.list` is written for this boot.
/// An error says why the record is still not to be believed; it is tried again by the next
/// pass that needs it.
pub(super) fn rebuild(
    queue: &Queue,
    census: Census,
    listed: &[(QueueId, Place)],
) -> Result<(), String> {
    let boot = boot_id().ok_or("the system's boot id cannot be read")?;
    let dir = usable_dir(queue)?;
    // Whatever made the record unbelievable, no pass believes a part of it mended before the
    // envelopes that appeared meanwhile are in it too. A sweep rewrites `.list` with commits
    // kept waiting: so is this removal made, lest a sweep put back what it removes.
    {
        let _lock = lock_queue(queue, false, PUBLISH_WAIT)?;
        distrust(queue, &dir).map_err(|e| e.to_string())?;
    }
    // Most of the work is done while commits go on; with them kept waiting, it is done again,
    // which then only reads, unless a file was removed or damaged meanwhile.
    merge(queue, &dir, &census)?;
    let _lock = lock_queue(queue, false, PUBLISH_WAIT)?;
    merge(queue, &dir, &census)?;
    for &(id, place) in &queue.ids().map_err(|e| e.to_string())? {
        if listed.binary_search_by_key(&id, |&(id, _)| id).is_ok() {
            continue;
        }
        let envelope = match queue.read_envelope(id, place) {
            Ok(None) => continue,
            Ok(Some(bytes)) => Envelope::parse(&bytes).ok().filter(|e| e.id == id),
            Err(_) => None,
        };
        let targets = match &envelope {
            Some(envelope) => names_of(envelope.recipients.iter()),
            None => vec![UNKNOWN.to_string()],
        };
        for name in targets {
            rewrite(queue, &dir, &name, &[id], &[], Rewrite::Rebuild)?;
        }
    }
    // The census's domains are named even if their files went meanwhile, so that the loss is
    // seen.
    let mut names: Vec<String> = census.domains.keys().cloned().collect();
    names.extend(dir_names(queue, &dir)?);
    names.sort_unstable();
    names.dedup();
    let bytes = render(LIST_MAGIC, boot, names.iter().map(String::as_str));
    Draft::write(queue, &bytes)?.replace(&dir, LIST)
}

/// Puts `census` into the files of `dir`, `.unknown` included, and mends every other domain
/// file there that is not whole, lest the record send every pass back to a rebuild.
fn merge(queue: &Queue, dir: &File, census: &Census) -> Result<(), String> {
    for (name, ids) in &census.domains {
        rewrite(queue, dir, name, ids, &[], Rewrite::Rebuild)?;
    }
    rewrite(queue, dir, UNKNOWN, &census.unknown, &[], Rewrite::Rebuild)?;
    for name in dir_names(queue, dir)? {
        if !census.domains.contains_key(&name) && read_ids(queue, dir, &name).is_err() {
            rewrite(queue, dir, &name, &[], &[], Rewrite::Rebuild)?;
        }
    }
    Ok(())
}

/// The names in the record's directory `dir` that can be domain files.
fn dir_names(queue: &Queue, dir: &File) -> Result<Vec<String>, String> {
    let path = queue.root.join(DIR);
    // Listed by name: what is listed must be the directory this process has open.
    let same = match (std::fs::symlink_metadata(&path), dir.metadata()) {
        (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
        _ => false,
    };
    if !same {
        return Err(format!("{DIR} was replaced"));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&path).map_err(|e| format!("cannot read {DIR}: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot read {DIR}: {e}"))?;
        if let Some(name) = entry.file_name().to_str()
            && is_domain_name(name)
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// A plain run's care of the record: each file loses the ids of messages that left (`data`, the
/// sorted ids of `data/` as the run listed it, checked again one by one before an id is dropped),
/// and a domain file left with none is removed, after `.list` stops naming it.
pub(super) fn sweep(queue: &Queue, data: &[QueueId]) {
    let Ok(Some(dir)) = open_dir(queue, false) else {
        return;
    };
    let Ok(names) = dir_names(queue, &dir) else {
        return;
    };
    let gone = |id: &QueueId| {
        data.binary_search(id).is_err()
            && matches!(
                nix::sys::stat::fstatat(&queue.data, id.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
                Err(nix::Error::ENOENT)
            )
    };
    let mut empty = Vec::new();
    for name in names.iter().map(String::as_str).chain([UNKNOWN]) {
        let Ok(Some(ids)) = read_ids(queue, &dir, name) else {
            continue;
        };
        let mut left: Vec<QueueId> = ids.iter().filter(|id| gone(id)).copied().collect();
        left.sort_unstable();
        if left.len() == ids.len() && name != UNKNOWN {
            empty.push(name);
        } else if left.len() >= COMPACT_MIN && left.len() * 2 >= ids.len() {
            let _ = rewrite(queue, &dir, name, &[], &left, Rewrite::Compact);
        }
    }
    if !empty.is_empty() {
        let _ = remove_empty(queue, &dir, &empty, gone);
    }
}

/// Removes domain files whose every id `gone` says left, with commits kept waiting: `.list`
/// first stops naming them, so that no reader takes a removed file for a lost one.
fn remove_empty(
    queue: &Queue,
    dir: &File,
    names: &[&str],
    gone: impl Fn(&QueueId) -> bool,
) -> Result<(), String> {
    let _lock = lock_queue(queue, false, LOCK_WAIT)?;
    let mut held = Vec::new();
    for &name in names {
        let Ok(Some(file)) = open_file(queue, dir, name, true) else {
            continue;
        };
        if lock_within(&file, false, LOCK_WAIT).is_err()
            || file.metadata().map_or(true, |m| m.nlink() == 0)
        {
            continue;
        }
        let still_empty = read_locked(&file, name)
            .ok()
            .and_then(|bytes| parse_ids(&bytes, name))
            .is_some_and(|ids| ids.iter().all(&gone));
        if still_empty {
            held.push((name, file));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    let boot = boot_id().unwrap_or_default();
    if let Ok(Some(list)) = open_file(queue, dir, LIST, false) {
        let mut list = List {
            file: list,
            boot,
            names: None,
        };
        if let Ok(names) = list.names() {
            let kept = names
                .iter()
                .filter(|n| !held.iter().any(|(name, _)| name == n))
                .map(String::as_str);
            let bytes = render(LIST_MAGIC, boot, kept);
            Draft::write(queue, &bytes)?.replace(dir, LIST)?;
        }
    }
    for (name, _file) in &held {
        let _ = nix::unistd::unlinkat(dir, *name, UnlinkatFlags::NoRemoveDir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Draft as MessageDraft, LockAttempt};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn envelope(id: QueueId, recipients: &[&str]) -> Envelope {
        Envelope {
            id,
            arrival: 1_795_418_591,
            size: 2,
            sender: "alice@example.test".into(),
            notify: None,
            ret: None,
            envid: None,
            recipients: recipients
                .iter()
                .map(|r| Recipient::new(r.to_string()))
                .collect(),
        }
    }

    fn commit(queue: &Queue, recipients: &[&str]) -> QueueId {
        let mut draft: MessageDraft<'_> = queue.draft().unwrap();
        draft.write_all(b"x\n").unwrap();
        let id = draft.id();
        draft.commit(&envelope(id, recipients)).unwrap()
    }

    fn pattern(text: &str) -> DomainPattern {
        DomainPattern::parse(text).unwrap()
    }

    /// The ids the record names for `text`, or why it is not believed.
    fn candidates(queue: &Queue, text: &str) -> Result<Vec<QueueId>, String> {
        lookup(queue, &[pattern(text)]).map(|found| found.ids)
    }

    /// A per-domain pass for customer.test and its subdomains (which reads `.list` and the
    /// domain's file), rebuilding the record when it cannot believe it.
    fn rebuild_now(queue: &Queue) {
        let scan = queue.scan_domains(&[pattern("@customer.test")]).unwrap();
        scan.for_each(scan.ids(), |_| -> Result<(), ()> { Ok(()) })
            .unwrap();
        if let Some((why, outcome)) = scan.record_rebuild() {
            assert_eq!(outcome, Some(Ok(())), "rebuild after: {why}");
        }
    }

    fn sorted_ids(mut ids: Vec<QueueId>) -> Vec<QueueId> {
        ids.sort();
        ids
    }

    fn record_path(queue: &Queue, name: &str) -> std::path::PathBuf {
        queue.root.join(DIR).join(name)
    }

    #[test]
    fn files_round_trip_and_any_cut_or_edit_is_refused() {
        let ids = ["1xWNa000000001", "1xWNa000000002", "1xWNa000000003"];
        let bytes = render(FILE_MAGIC, "customer.test", ids);
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "customer.test"),
            Some(ids.to_vec())
        );
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "other.test"),
            None,
            "another domain's"
        );
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut], FILE_MAGIC, "customer.test"),
                None,
                "cut at {cut}"
            );
        }
        let text = String::from_utf8(bytes.clone()).unwrap();
        let without_one = text.replace("1xWNa000000002\n", "");
        let changed = text.replace("1xWNa000000002", "1xWNa000000009");
        for edited in [without_one, changed] {
            assert_eq!(parse(edited.as_bytes(), FILE_MAGIC, "customer.test"), None);
        }
        let empty = render(FILE_MAGIC, "customer.test", []);
        assert_eq!(parse(&empty, FILE_MAGIC, "customer.test"), Some(vec![]));
    }

    #[test]
    fn appends_keep_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, render(FILE_MAGIC, "a.test", ["1xWNa000000001"])).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        for id in ["1xWNa000000002", "1xWNa000000003"] {
            append(&file, file.metadata().unwrap().len(), id).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "a.test"),
            Some(vec!["1xWNa000000001", "1xWNa000000002", "1xWNa000000003"])
        );
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        assert!(append(&file, file.metadata().unwrap().len(), "1xWNa000000004").is_err());
    }

    #[test]
    fn commits_record_every_domain_once_in_lower_case() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let one = commit(
            &queue,
            &["a@Customer.TEST", "b@customer.test", "c@other.test"],
        );
        let two = commit(&queue, &["d@sub.customer.test"]);
        // No record is believed before a pass has made one from every envelope.
        assert!(candidates(&queue, "customer.test").is_err());
        rebuild_now(&queue);
        assert_eq!(candidates(&queue, "customer.test").unwrap(), [one]);
        assert_eq!(candidates(&queue, "CUSTOMER.test.").unwrap(), [one]);
        assert_eq!(candidates(&queue, "other.test").unwrap(), [one]);
        assert_eq!(
            candidates(&queue, "@customer.test").unwrap(),
            sorted_ids(vec![one, two])
        );
        assert_eq!(candidates(&queue, "nowhere.test").unwrap(), []);
        // After the record is made, commits keep it whole; a new domain is named in .list.
        let three = commit(&queue, &["e@new.test", "f@customer.test"]);
        assert_eq!(candidates(&queue, "new.test").unwrap(), [three]);
        assert_eq!(
            candidates(&queue, "customer.test").unwrap(),
            sorted_ids(vec![one, three])
        );
        let list = std::fs::read_to_string(record_path(&queue, LIST)).unwrap();
        assert!(list.lines().any(|l| l == "new.test"), "{list}");
    }

    #[test]
    fn a_record_of_another_boot_or_without_its_list_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        let list = record_path(&queue, LIST);
        let text = std::fs::read_to_string(&list).unwrap();
        let boot = boot_id().unwrap();
        std::fs::write(
            &list,
            text.replace(boot, "00000000-0000-0000-0000-000000000000"),
        )
        .unwrap();
        assert!(
            candidates(&queue, "customer.test")
                .unwrap_err()
                .contains("boot")
        );
        rebuild_now(&queue);
        assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
        std::fs::remove_file(&list).unwrap();
        assert!(candidates(&queue, "customer.test").is_err());
    }

    #[test]
    fn damage_of_any_kind_is_not_believed_and_a_rebuild_mends_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let ids = sorted_ids(
            (0..5)
                .map(|_| commit(&queue, &["u@customer.test"]))
                .collect(),
        );
        let other = commit(&queue, &["u@other.test"]);
        rebuild_now(&queue);
        let file = record_path(&queue, "customer.test");
        let list = record_path(&queue, LIST);
        type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
        let damages: Vec<Damage<'_>> = vec![
            ("deleted", Box::new(|| std::fs::remove_file(&file).unwrap())),
            (
                "truncated to nothing",
                Box::new(|| std::fs::write(&file, "").unwrap()),
            ),
            (
                "truncated at a line",
                Box::new(|| {
                    let text = std::fs::read_to_string(&file).unwrap();
                    let cut = text.trim_end().rfind('\n').unwrap() + 1;
                    std::fs::write(&file, &text[..cut]).unwrap();
                }),
            ),
            (
                "a line gone",
                Box::new(|| {
                    let text = std::fs::read_to_string(&file).unwrap();
                    let first = format!("{}\n", ids[0]);
                    std::fs::write(&file, text.replacen(&first, "", 1)).unwrap();
                }),
            ),
            (
                "a named pipe",
                Box::new(|| {
                    std::fs::remove_file(&file).unwrap();
                    nix::unistd::mkfifo(&file, Mode::S_IRWXU).unwrap();
                }),
            ),
            (
                "a symbolic link",
                Box::new(|| {
                    std::fs::remove_file(&file).unwrap();
                    std::os::unix::fs::symlink(record_path(&queue, "other.test"), &file).unwrap();
                }),
            ),
            (
                "oversized",
                Box::new(|| {
                    File::options()
                        .write(true)
                        .open(&file)
                        .unwrap()
                        .set_len(MAX_FILE + 1)
                        .unwrap()
                }),
            ),
            ("no list", Box::new(|| std::fs::remove_file(&list).unwrap())),
            (
                "a torn list",
                Box::new(|| {
                    let text = std::fs::read_to_string(&list).unwrap();
                    std::fs::write(&list, &text[..text.len() - 2]).unwrap();
                }),
            ),
            (
                "the list a named pipe",
                Box::new(|| {
                    std::fs::remove_file(&list).unwrap();
                    nix::unistd::mkfifo(&list, Mode::S_IRWXU).unwrap();
                }),
            ),
            (
                "no unknown",
                Box::new(|| std::fs::remove_file(record_path(&queue, UNKNOWN)).unwrap()),
            ),
            (
                "the whole record deleted",
                Box::new(|| std::fs::remove_dir_all(queue.root.join(DIR)).unwrap()),
            ),
            (
                "the record a symbolic link",
                Box::new(|| {
                    std::fs::remove_dir_all(queue.root.join(DIR)).unwrap();
                    std::os::unix::fs::symlink("/tmp", queue.root.join(DIR)).unwrap();
                }),
            ),
        ];
        for (what, damage) in &damages {
            damage();
            // `.list` is read whole only by a look-up that needs it.
            assert!(
                candidates(&queue, "@customer.test").is_err(),
                "{what}: believed"
            );
            rebuild_now(&queue);
            assert_eq!(
                candidates(&queue, "customer.test"),
                Ok(ids.clone()),
                "{what}"
            );
            assert_eq!(candidates(&queue, "other.test"), Ok(vec![other]), "{what}");
        }
        // Nothing outside the queue was touched, and what held the record's name was moved aside.
        assert!(std::fs::symlink_metadata("/tmp").unwrap().is_dir());
        let aside: Vec<String> = std::fs::read_dir(&queue.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("domains.unusable."))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn another_users_record_is_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let id = commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        // As if every record file were another user's: the queue expects an owner they lack.
        queue.owner += 1;
        assert!(
            candidates(&queue, "customer.test")
                .unwrap_err()
                .contains("owned by")
        );
        queue.owner -= 1;
        assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
    }

    #[test]
    fn a_commit_that_cannot_append_makes_the_record_unbelieved() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let first = commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        let file = record_path(&queue, "customer.test");
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, &text[..text.len() - 1]).unwrap();
        let second = commit(&queue, &["v@customer.test"]);
        assert!(
            !record_path(&queue, LIST).exists(),
            "the record is still believed"
        );
        rebuild_now(&queue);
        assert_eq!(
            candidates(&queue, "customer.test").unwrap(),
            sorted_ids(vec![first, second])
        );
    }

    #[test]
    fn a_record_directory_that_is_not_the_queues_own_is_moved_aside_by_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), queue.root.join(DIR)).unwrap();
        let id = commit(&queue, &["u@customer.test"]);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(queue.root.join(DIR).is_dir());
        rebuild_now(&queue);
        assert_eq!(candidates(&queue, "customer.test").unwrap(), [id]);
    }

    #[test]
    fn unreadable_envelopes_are_candidates_for_every_domain() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let odd = commit(&queue, &["u@elsewhere.test"]);
        // As an older version would have left it, before any record: whom it is for cannot be
        // read.
        std::fs::remove_dir_all(queue.root.join(DIR)).unwrap();
        let env = queue.path(super::super::ENV, odd.as_str());
        std::fs::remove_file(&env).unwrap();
        nix::unistd::mkfifo(&env, Mode::S_IRWXU).unwrap();
        rebuild_now(&queue);
        assert_eq!(candidates(&queue, "customer.test").unwrap(), [odd]);
        assert_eq!(candidates(&queue, "@test").unwrap(), [odd]);
    }

    #[test]
    fn compaction_drops_what_left_and_keeps_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let ids: Vec<QueueId> = (0..3 * COMPACT_MIN)
            .map(|_| commit(&queue, &["u@customer.test"]))
            .collect();
        rebuild_now(&queue);
        for &id in &ids[..2 * COMPACT_MIN] {
            let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
                panic!("not locked")
            };
            locked.remove().unwrap();
        }
        let kept = sorted_ids(ids[2 * COMPACT_MIN..].to_vec());
        // The first pass still reads every id the file names, and compacts it.
        let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
        assert_eq!(
            scan.ids().iter().map(|&(id, _)| id).collect::<Vec<_>>(),
            kept
        );
        assert_eq!(candidates(&queue, "customer.test").unwrap(), kept);
        // A sweep with nothing queued for a domain removes its file and its name in .list.
        for &id in &kept {
            let LockAttempt::Locked(locked) = queue.try_lock(id).unwrap() else {
                panic!("not locked")
            };
            locked.remove().unwrap();
        }
        queue.sweep_orphans(SWEEP).unwrap();
        assert!(!record_path(&queue, "customer.test").exists());
        assert_eq!(candidates(&queue, "customer.test").unwrap(), []);
        let list = std::fs::read_to_string(record_path(&queue, LIST)).unwrap();
        assert!(!list.contains("customer.test"), "{list}");
    }

    const SWEEP: Duration = Duration::from_secs(3600);

    #[test]
    fn compaction_racing_appenders_loses_no_append() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let rec = usable_dir(&queue).unwrap();
        let gone: Vec<QueueId> = sorted_ids((0..200).map(|_| QueueId::generate()).collect());
        for &id in &gone {
            add(&queue, &rec, "race.test", id).unwrap();
        }
        let appended: Vec<Vec<QueueId>> = std::thread::scope(|scope| {
            let appenders: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..300)
                            .map(|_| {
                                let id = QueueId::generate();
                                add(&queue, &rec, "race.test", id).unwrap();
                                id
                            })
                            .collect::<Vec<QueueId>>()
                    })
                })
                .collect();
            for _ in 0..100 {
                rewrite(&queue, &rec, "race.test", &[], &gone, Rewrite::Compact).unwrap();
            }
            appenders.into_iter().map(|a| a.join().unwrap()).collect()
        });
        rewrite(&queue, &rec, "race.test", &[], &gone, Rewrite::Compact).unwrap();
        let left = sorted_ids(read_ids(&queue, &rec, "race.test").unwrap().unwrap());
        let appended: Vec<QueueId> = appended.into_iter().flatten().collect();
        let lost = appended
            .iter()
            .filter(|id| left.binary_search(id).is_err())
            .count();
        assert_eq!(lost, 0, "{lost} of {} appends lost", appended.len());
        assert_eq!(left.len(), appended.len(), "ids that left are still there");
        assert!(
            std::fs::read_dir(queue.root.join(TMP))
                .unwrap()
                .next()
                .is_none(),
            "drafts left behind"
        );
    }

    /// Sets its flag when dropped, so that a failed assertion stops the other threads of a
    /// scope instead of leaving the scope waiting for them.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn commits_during_a_rebuild_are_all_in_the_record_it_makes() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        for _ in 0..50 {
            commit(&queue, &["u@customer.test"]);
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (committed, checked) = std::thread::scope(|scope| {
            let _stop = StopOnDrop(&stop);
            let committers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        let mut ids = Vec::new();
                        while !stop.load(Relaxed) {
                            ids.push(commit(&queue, &["u@customer.test"]));
                        }
                        ids
                    })
                })
                .collect();
            // The record is deleted at any moment, so that commits record into a directory a
            // rebuild never sees: only its second look at the queue finds them.
            let remover = scope.spawn(|| {
                while !stop.load(Relaxed) {
                    let _ = std::fs::remove_dir_all(queue.root.join(DIR));
                    std::thread::sleep(Duration::from_millis(3));
                }
            });
            let mut checked = 0;
            for _ in 0..40 {
                let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
                scan.for_each(scan.ids(), |_| -> Result<(), ()> { Ok(()) })
                    .unwrap();
                // Every message queued before a look-up begins is among its candidates.
                let before = queue.ids().unwrap();
                if let Ok(found) = candidates(&queue, "customer.test") {
                    checked += 1;
                    for (id, _) in before {
                        assert!(found.binary_search(&id).is_ok(), "{id} missing");
                    }
                }
            }
            stop.store(true, Relaxed);
            remover.join().unwrap();
            let committed: Vec<QueueId> = committers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            (committed, checked)
        });
        assert!(!committed.is_empty());
        println!(
            "{} commits; {checked} records believed and checked",
            committed.len()
        );
        rebuild_now(&queue);
        let found = candidates(&queue, "customer.test").unwrap();
        let queued: Vec<QueueId> = queue.ids().unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(found, queued);
        assert_eq!(queued.len(), 50 + committed.len());
    }

    #[test]
    fn a_commit_killed_before_its_envelope_leaves_a_harmless_stale_id() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        let kept = commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        // What a commit that died after recording leaves: its id, its data, no envelope.
        let id = QueueId::generate();
        std::fs::write(queue.path(super::super::DATA, id.as_str()), b"x\n").unwrap();
        let recording = record(&queue, &envelope(id, &["u@customer.test"])).unwrap();
        drop(recording);
        assert_eq!(
            candidates(&queue, "customer.test").unwrap(),
            sorted_ids(vec![kept, id])
        );
        let scan = queue.scan_domains(&[pattern("customer.test")]).unwrap();
        assert_eq!(scan.ids(), [(kept, Place::Active)]);
    }

    #[test]
    fn record_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        commit(&queue, &["u@customer.test"]);
        rebuild_now(&queue);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&queue.root.join(DIR)), 0o700);
        for name in ["customer.test", LIST, UNKNOWN] {
            assert_eq!(mode(&record_path(&queue, name)), 0o600, "{name}");
        }
    }
}
