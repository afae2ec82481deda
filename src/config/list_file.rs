//! A list file an administrator keeps beside the configuration: read whole, bounded, and told
//! apart from its next version by a [`Stamp`].
//!
//! The domain lists (`hold_domains`, `relay_domains`) and the users files of
//! `[relay_recipients]` are such files. Reading one promises: only a regular file is read (a
//! fifo or a device is refused before it can block or stream forever), never more than the
//! caller's limit, and only UTF-8 text; every failure is one line naming the file.
//!
//! The stamp (device, inode, size, modification time) is what a long-running server compares
//! to notice a change cheaply: a file renamed into place has a new inode, one rewritten in
//! place a new size or time. It is taken from the file that was read, before reading, so a
//! change made while reading is seen at the next comparison.
//!
//! Limits: a rewrite in place that keeps the size and lands within the file system's time
//! granularity is not seen (nanoseconds on the usual Linux file systems).

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a changed file is left alone before it is read: it may be half written.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What tells one version of a file from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: SystemTime,
    size: u64,
    inode: (u64, u64),
}

impl Stamp {
    /// The stamp of the file `path` names now.
    pub fn of(path: &Path) -> Result<Stamp, String> {
        std::fs::metadata(path)
            .map(|meta| Stamp::from(&meta))
            .map_err(|e| format!("{}: {e}", name(path)))
    }

    pub fn modified(&self) -> SystemTime {
        self.modified
    }

    /// True when this version has been left alone for [`SETTLE`] at `now`. A modification time
    /// in the future never settles by age; the caller decides by seeing it unchanged.
    pub fn is_settled(&self, now: SystemTime) -> bool {
        now.duration_since(self.modified)
            .is_ok_and(|age| age >= SETTLE)
    }
}

impl From<&Metadata> for Stamp {
    fn from(meta: &Metadata) -> Stamp {
        Stamp {
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            size: meta.len(),
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// Reads the regular file `path` as text of at most `limit` bytes; `what` names the kind of
/// file in the refusal of a larger one ("not a users file?").
pub fn read(path: &Path, limit: u64, what: &str) -> Result<(Stamp, String), String> {
    let name = name(path);
    // A device is refused before it is opened, since opening some has effects of its own; the
    // check is made again on what was opened, in case the name changed in between. Opening is
    // non-blocking, so that a fifo does not wait for a writer, and never takes a terminal.
    let is_file = std::fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .is_file();
    if !is_file {
        return Err(format!("{name}: not a regular file"));
    }
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{name}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    if meta.len() > limit {
        return Err(format!("{name}: larger than {limit} bytes; not {what}?"));
    }
    let mut bytes = Vec::new();
    // The file may grow after the check: the limit holds for what is read, not for the stat.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{name}: larger than {limit} bytes; not {what}?"));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{name}: not text (UTF-8 expected)"))?;
    Ok((Stamp::from(&meta), text))
}

/// The file's name for an error line: a control character in it is escaped, so the error
/// stays one line.
pub fn name(path: &Path) -> String {
    let name = path.display().to_string();
    if name.contains(char::is_control) {
        name.escape_debug().to_string()
    } else {
        name
    }
}
