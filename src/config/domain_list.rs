//! `hold_domains` and `relay_domains`: domains listed in the configuration, in files, or both,
//! and lookups whose cost grows with a domain's labels, never with the length of the list.
//!
//! A key's value is a list of domains, an absolute file name, or a list mixing both, as
//! Postfix's `relay_domains = example.com, /etc/postfix/relay_domains`. A file holds one domain
//! a line; blank lines, `#` comments (a whole line or after the domain) and surrounding space
//! are ignored, and so is anything after the domain on its line, so that the source of a
//! Postfix map (`customer.example  OK`) serves unchanged. One closing dot is accepted, as
//! everywhere a domain is read.
//!
//! A [`DomainList`] is read whole or refused whole: a bad domain is named by FILE:LINE; a
//! missing, unreadable or non-regular file, one larger than [`MAX_FILE`] or one that is not
//! UTF-8 is named by its path. Nothing in a file can panic the reader.
//!
//! [`DomainSet`] answers two questions, each with at most one hash probe per label:
//! [`DomainSet::contains`] (the domain is listed itself: queue-smtpd accepts exactly the listed
//! domains) and [`DomainSet::holds`] (the domain or one of its parents is listed: a held domain
//! holds its subdomains). Names compare without ASCII case; an address literal matches only
//! itself.
//!
//! A list knows the version of each file it read ([`DomainList::freshness`]), so that a program
//! that runs for long reads a changed file again ([`DomainList::reload`]); when to look is the
//! program's business.
//!
//! Limits: the whole set is in memory (some 60 bytes a domain, so 10,000 domains take under a
//! megabyte).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::list_file::{self, Stamp};
use crate::address::Domain;

/// The largest domain list file read: some two million domains.
pub const MAX_FILE: u64 = 64 << 20;

/// A set of domains, by lower-case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    names: HashSet<String>,
}

impl DomainSet {
    pub fn insert(&mut self, domain: &Domain) {
        self.names.insert(domain.to_lowercase());
    }

    /// True when `domain` itself is in the set.
    pub fn contains(&self, domain: &Domain) -> bool {
        self.names.contains(&domain.to_lowercase())
    }

    /// True when `domain` or one of its parents is in the set (`a.b.example` is held by
    /// `b.example` and by `example`).
    pub fn holds(&self, domain: &Domain) -> bool {
        let name = domain.to_lowercase();
        upward(domain, &name).any(|name| self.names.contains(name))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl FromIterator<Domain> for DomainSet {
    fn from_iter<I: IntoIterator<Item = Domain>>(domains: I) -> DomainSet {
        let mut set = DomainSet::default();
        for domain in domains {
            set.insert(&domain);
        }
        set
    }
}

/// `name` (the lower-case form of `domain`) and then each of its parents, nearest first:
/// `a.b.example`, `b.example`, `example`. An address literal has no parents.
pub fn upward<'a>(domain: &Domain, name: &'a str) -> impl Iterator<Item = &'a str> {
    let literal = domain.is_literal();
    std::iter::successors(Some(name), move |name| {
        if literal {
            return None;
        }
        name.split_once('.').map(|(_, parent)| parent)
    })
}

/// One item of a domain list as the configuration wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Domain(Domain),
    /// A file of domains, by absolute path.
    File(PathBuf),
}

/// Whether a list's files are the versions it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// A file changed less than [`list_file::SETTLE`] ago: it may be half written.
    Settling,
    /// A file changed (or went) and has settled: the list should be read again.
    Stale,
}

/// A configured domain list: its sources, the domains they gave, and the version of each file
/// that was read.
#[derive(Debug, Clone, Default)]
pub struct DomainList {
    sources: Vec<Source>,
    set: DomainSet,
    files: Vec<(PathBuf, Stamp)>,
}

impl DomainList {
    /// Reads every source; the first that fails refuses the list, with its reason.
    pub fn load(sources: Vec<Source>) -> Result<DomainList, String> {
        let mut set = DomainSet::default();
        let mut files = Vec::new();
        for source in &sources {
            match source {
                Source::Domain(domain) => set.insert(domain),
                Source::File(path) => {
                    let (stamp, text) = list_file::read(path, MAX_FILE, "a domain list")?;
                    parse(&text, &mut set).map_err(|(line, why)| {
                        format!("{}:{line}: {why}", list_file::name(path))
                    })?;
                    files.push((path.clone(), stamp));
                }
            }
        }
        Ok(DomainList {
            sources,
            set,
            files,
        })
    }

    /// The same sources read again.
    pub fn reload(&self) -> Result<DomainList, String> {
        DomainList::load(self.sources.clone())
    }

    /// Whether the files are still the versions read, at `now`.
    pub fn freshness(&self, now: SystemTime) -> Freshness {
        let mut freshness = Freshness::Current;
        for (path, read) in &self.files {
            match Stamp::of(path) {
                Ok(stamp) if &stamp == read => {}
                Ok(stamp) if !stamp.is_settled(now) => return Freshness::Settling,
                _ => freshness = Freshness::Stale,
            }
        }
        freshness
    }

    /// The files the list was read from, each with the version that was read.
    pub fn files(&self) -> impl Iterator<Item = (&Path, &Stamp)> {
        self.files
            .iter()
            .map(|(path, stamp)| (path.as_path(), stamp))
    }

    /// The domains, whichever source gave them.
    pub fn set(&self) -> &DomainSet {
        &self.set
    }

    /// True when `domain` itself is listed.
    pub fn contains(&self, domain: &Domain) -> bool {
        self.set.contains(domain)
    }

    /// True when `domain` or one of its parents is listed.
    pub fn holds(&self, domain: &Domain) -> bool {
        self.set.holds(domain)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// A list of domains given in the configuration itself: no files to read.
impl From<Vec<Domain>> for DomainList {
    fn from(domains: Vec<Domain>) -> DomainList {
        DomainList {
            set: domains.iter().cloned().collect(),
            sources: domains.into_iter().map(Source::Domain).collect(),
            files: Vec::new(),
        }
    }
}

/// Reads `list` (the value of `key`) again: the new version and the line a log says, or the
/// line that says why the old one stays.
pub fn reread(key: &str, list: &DomainList) -> Result<(DomainList, String), String> {
    match list.reload() {
        Ok(new) => {
            let said = format!(
                "{key} read again: {} domains (was {})",
                new.set.len(),
                list.set.len()
            );
            Ok((new, said))
        }
        Err(why) => Err(format!(
            "{key}: {why}; the {} domains read before stay in use",
            list.set.len()
        )),
    }
}

/// Adds the domains of a list file to `set`; a bad line gives its number and why.
fn parse(text: &str, set: &mut DomainSet) -> Result<(), (usize, String)> {
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default();
        let Some(first) = content.split_whitespace().next() else {
            continue;
        };
        let domain = Domain::parse(first).map_err(|e| (number + 1, e.to_string()))?;
        set.insert(&domain);
    }
    Ok(())
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
