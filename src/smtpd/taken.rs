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

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::address::Domain;
use crate::config::domain_list::{self, Freshness};
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
    relay: Arc<DomainList>,
    hold: Arc<DomainList>,
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
                relay: Arc::new(config.relay_domains.clone()),
                hold: Arc::new(config.hold_domains.clone()),
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
        if !self.reload(wall, log) {
            watch.refused = Some(current);
        }
    }

    /// Reads again each list whose files changed; false when one did not read. The files are
    /// read outside the lock, so lookups go on meanwhile; only one session is here at a time
    /// (the watch is held), so nothing read in between is lost.
    fn reload(&self, wall: SystemTime, log: &MailLog) -> bool {
        let Ok(lists) = self.lists.read() else {
            return false;
        };
        let (relay, hold) = (Arc::clone(&lists.relay), Arc::clone(&lists.hold));
        drop(lists);
        let mut all_read = true;
        let mut read_again = |key: &str, list: &DomainList| {
            if list.freshness(wall) == Freshness::Current {
                return None;
            }
            match domain_list::reread(key, list) {
                Ok((new, line)) => {
                    log.info(&line);
                    Some(Arc::new(new))
                }
                Err(line) => {
                    log.warning(&line);
                    all_read = false;
                    None
                }
            }
        };
        let (new_relay, new_hold) = (
            read_again("relay_domains", &relay),
            read_again("hold_domains", &hold),
        );
        if let Ok(mut lists) = self.lists.write() {
            if let Some(new) = new_relay {
                lists.relay = new;
            }
            if let Some(new) = new_hold {
                lists.hold = new;
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
