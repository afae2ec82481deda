//! Which files someone holds a lock on, from one read of the kernel's lock table, `/proc/locks`.
//!
//! A listing marks the messages being delivered. Asking each message with a try-lock costs an open
//! per message; the kernel's table costs one read for the whole queue. Only granted `FLOCK` lines
//! of the queue's file system count. Where the table cannot be read (no `/proc`, another kernel)
//! the caller asks each message instead.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The inodes on the queue's file system that someone holds a `flock` on, from one read of
/// `/proc/locks`; `None` when that table cannot be read (no /proc, another kernel).
pub(super) fn locked_inodes(dir: &Path) -> Option<std::collections::HashSet<u64>> {
    let table = fs::read_to_string("/proc/locks").ok()?;
    let dev = fs::metadata(dir).ok()?.dev();
    let device = format!(
        "{:02x}:{:02x}:",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    Some(flocked_inodes(&table, &device))
}

/// The inodes of `device` (`08:01:`) with a granted `flock` in a `/proc/locks` table.
fn flocked_inodes(table: &str, device: &str) -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    for line in table.lines() {
        let mut fields = line.split_whitespace().skip(1);
        // Waiters are listed with "->" and hold nothing yet.
        if fields.next() != Some("FLOCK") {
            continue;
        }
        let Some(file) = fields.nth(3) else { continue };
        if let Some(inode) = file.strip_prefix(device).and_then(|i| i.parse().ok()) {
            inodes.insert(inode);
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_lines() {
        let table = "\
1: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4243 fd:01:1312 0 EOF
2: POSIX  ADVISORY  WRITE 99 fd:01:1313 0 EOF
3: FLOCK  ADVISORY  READ 77 08:02:1314 0 EOF
4: FLOCK  ADVISORY  READ 78 fd:01:1315 0 EOF
";
        let inodes = flocked_inodes(table, "fd:01:");
        assert_eq!(inodes, [1311, 1315].into_iter().collect());
    }
}
