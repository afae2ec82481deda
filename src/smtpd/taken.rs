//! The domains queue-smtpd takes mail for (`relay_domains` and `hold_domains`), read again when
//! one of their files changes, without a restart.
//!
//! At most once a [`CHECK_EVERY`], at an RCPT or an ETRN, the files' stamps (device, inode,
//! size, modification time) are compared with those of the versions read; a file renamed into
//! place and one rewritten in place are both seen. A changed file is read once it has been left
//! alone for a second (or has been seen unchanged at two checks), since it may be half written.
//! A list read again well replaces the old one at once, and the mail log says so in one line.
//! A list that no longer reads (a bad line, a missing file) leaves the last good one in use:
//! the log says why in one line, once for each version of the files, and the server goes on.
//! Refusing every domain because of a typo would bounce the sites' mail; keeping the old list
//! costs only the change.
//!
//! Lookups take a shared lock: one session reading the files again never stops the others
//! answering, and a check already under way is never waited for.
//!
//! Limits: a change takes one to two seconds to be seen and then waits for the next RCPT or
//! ETRN. In inetd mode each session is a process that reads the files when it starts.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::address::Domain;
use crate::config::list_file::Stamp;
use crate::config::{Config, DomainList};
use crate::maillog::MailLog;

/// How often the files are compared with the versions read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The domain lists in use, and the watch on their files.
#[derive(Debug)]
pub struct Taken {
    lists: RwLock<Lists>,
    watch: Mutex<Watch>,
}

#[derive(Debug)]
struct Lists {
    relay: DomainList,
    hold: DomainList,
}

/// The files' versions, in the order of [`Lists::files`]; `None` for a file that is gone.
type Versions = Vec<Option<Stamp>>;

#[derive(Debug, Default)]
struct Watch {
    checked: Option<Instant>,
    /// A changed version seen at the last check but not read yet.
    pending: Option<Versions>,
    /// A version that did not read; it is not read again, nor logged again.
    refused: Option<Versions>,
}

impl Taken {
    pub fn new(config: &Config) -> Taken {
        Taken {
            lists: RwLock::new(Lists {
                relay: config.relay_domains.clone(),
                hold: config.hold_domains.clone(),
            }),
            watch: Mutex::default(),
        }
    }

    /// True when mail for `domain` is taken: it is listed itself in `relay_domains` or
    /// `hold_domains`. The files are checked first when the last check is a second old.
    pub fn accepts(&self, domain: &Domain, log: &MailLog) -> bool {
        self.refresh(Instant::now(), SystemTime::now(), log);
        self.lists
            .read()
            .is_ok_and(|lists| lists.relay.contains(domain) || lists.hold.contains(domain))
    }

    /// Compares the files with the versions read, at most once a [`CHECK_EVERY`], and reads
    /// what changed and has settled.
    fn refresh(&self, now: Instant, wall: SystemTime, log: &MailLog) {
        // Another session is checking: it will do what this one would.
        let Ok(mut watch) = self.watch.try_lock() else {
            return;
        };
        if watch
            .checked
            .is_some_and(|last| now.duration_since(last) < CHECK_EVERY)
        {
            return;
        }
        watch.checked = Some(now);
        let Ok(lists) = self.lists.read() else {
            return;
        };
        let read: Versions = lists
            .files()
            .map(|(_, stamp)| Some(stamp.clone()))
            .collect();
        let current: Versions = lists
            .files()
            .map(|(path, _)| Stamp::of(path).ok())
            .collect();
        drop(lists);
        if current == read {
            watch.pending = None;
            return;
        }
        if watch.refused.as_ref() == Some(&current) {
            return;
        }
        let settled = watch.pending.as_ref() == Some(&current)
            || current.iter().zip(&read).all(|(seen, was)| {
                seen == was || seen.as_ref().is_some_and(|stamp| stamp.is_settled(wall))
            });
        if !settled {
            watch.pending = Some(current);
            return;
        }
        watch.pending = None;
        if !self.reload(log) {
            watch.refused = Some(current);
        }
    }

    /// Reads again each list whose files changed; false when one did not read.
    fn reload(&self, log: &MailLog) -> bool {
        let Ok(mut guard) = self.lists.write() else {
            return false;
        };
        let Lists { relay, hold } = &mut *guard;
        let mut all_read = true;
        for (key, list) in [("relay_domains", relay), ("hold_domains", hold)] {
            let changed = list
                .files()
                .any(|(path, stamp)| Stamp::of(path).ok().as_ref() != Some(stamp));
            if !changed {
                continue;
            }
            match list.reload() {
                Ok(new) => {
                    log.info(&format!(
                        "{key} read again: {} domains (was {})",
                        new.set().len(),
                        list.set().len()
                    ));
                    *list = new;
                }
                Err(why) => {
                    log.warning(&format!(
                        "{key}: {why}; the {} domains read before stay in use",
                        list.set().len()
                    ));
                    all_read = false;
                }
            }
        }
        all_read
    }
}

impl Lists {
    fn files(&self) -> impl Iterator<Item = (&std::path::Path, &Stamp)> {
        self.relay.files().chain(self.hold.files())
    }
}

#[cfg(test)]
mod tests;
