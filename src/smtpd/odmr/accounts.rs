//! The ODMR accounts file: who may ask for which domains' mail, and the secret that proves it.
//!
//! ```text
//! # USER      SECRET             DOMAINS
//! alice       correct-horse      alice.example,alice.test
//! bob         battery-staple     bob.example
//! ```
//!
//! One account a line: a user name, its secret and its domains separated by commas, the three
//! separated by white space; `#` starts a comment line; blank lines are skipped. A user name is
//! given once. Names and secrets are compared exactly, domains without case.
//!
//! Security: CRAM-MD5 needs the secret itself on the server, so the file must be a regular
//! file (not a symbolic link), owned by the user the server runs as (the queue's owner) and
//! readable by that user alone (mode 0600 or 0400). A file that is not so is refused when the
//! server starts, and refused (logins get 454) if it becomes so later. `Debug` never shows a
//! secret.
//!
//! The file is looked at again (one `stat`) at each AUTH and read again when it changed, so
//! accounts are added and removed without a restart. While a changed file cannot be used, no
//! login succeeds: the previous table is not trusted for a file someone is editing.
//!
//! Limits: at most 1 MiB; secrets are plain text in the file, as RFC 2195 requires.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::address::Domain;

/// A larger file is refused rather than read.
const MAX_FILE: u64 = 1024 * 1024;

/// One account.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub secret: String,
    pub domains: Vec<Domain>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Account {{ user: {:?}, secret: ****, domains: {:?} }}",
            self.user, self.domains
        )
    }
}

/// Accounts by user name.
pub type Table = HashMap<String, Account>;

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The version of the file last looked at, and the table read from it or why it cannot be used.
type Loaded = (Option<Stamp>, Result<Arc<Table>, String>);

/// The accounts file and the table last read from it.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl Accounts {
    /// Reads the file when the server starts; why it cannot be used is a configuration error.
    pub fn open(path: &Path) -> Result<Accounts, String> {
        let (stamp, table) = read(path)?;
        Ok(Accounts {
            path: path.to_path_buf(),
            loaded: Mutex::new((Some(stamp), Ok(Arc::new(table)))),
        })
    }

    /// The table as the file is now, read again when it changed; why not while it cannot be
    /// used.
    pub fn current(&self) -> Result<Arc<Table>, String> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| "accounts lock poisoned".to_string())?;
        let now = std::fs::symlink_metadata(&self.path)
            .map(|meta| Stamp::of(&meta))
            .ok();
        if now.is_none() || now != loaded.0 {
            *loaded = match read(&self.path) {
                Ok((stamp, table)) => (Some(stamp), Ok(Arc::new(table))),
                Err(why) => (now, Err(why)),
            };
        }
        loaded.1.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the file without following a link, checks who may read it, and parses it.
fn read(path: &Path) -> Result<(Stamp, Table), String> {
    let shown = path.display();
    let mut file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{shown}: cannot examine: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{shown}: owned by uid {}, not by uid {me} that the server runs as (the queue's owner)",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown}: mode {:04o} lets others read the secrets; chmod 600 it",
            meta.mode() & 0o7777
        ));
    }
    if meta.size() > MAX_FILE {
        return Err(format!("{shown}: larger than {MAX_FILE} bytes"));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let table = parse(&text).map_err(|why| format!("{shown}: {why}"))?;
    Ok((Stamp::of(&meta), table))
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<Table, String> {
    let mut table = Table::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [user, secret, domains] = fields[..] else {
            return Err(format!(
                "line {}: expected USER SECRET DOMAIN[,DOMAIN...], found {} fields",
                number + 1,
                fields.len()
            ));
        };
        let domains = domains
            .split(',')
            .map(|d| {
                Domain::parse(d)
                    .map_err(|e| format!("line {}: domain {d:?}: {e}", number + 1))
                    .and_then(|domain| match domain.literal() {
                        Some(_) => Err(format!(
                            "line {}: {d:?} is an address, not a domain",
                            number + 1
                        )),
                        None => Ok(domain),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let account = Account {
            user: user.to_string(),
            secret: secret.to_string(),
            domains,
        };
        if table.insert(user.to_string(), account).is_some() {
            return Err(format!("line {}: user {user:?} given twice", number + 1));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn accounts_are_read_with_their_domains() {
        let table =
            parse("# comment\n\n alice  s3cret  Alice.Example,alice.test \nbob\tpw\tbob.example\n")
                .unwrap();
        assert_eq!(table.len(), 2);
        let alice = &table["alice"];
        assert_eq!(alice.secret, "s3cret");
        assert_eq!(
            alice.domains,
            [
                Domain::parse("alice.example").unwrap(),
                Domain::parse("alice.test").unwrap()
            ]
        );
        assert!(!format!("{alice:?}").contains("s3cret"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, expected) in [
            ("alice s3cret", "line 1: expected USER SECRET"),
            ("# c\nalice s3cret a.example extra", "line 2: expected"),
            ("alice s3cret a..example", "line 1: domain \"a..example\""),
            ("alice s3cret a.example,", "line 1: domain \"\""),
            ("alice s3cret [127.0.0.1]", "is an address"),
            (
                "a x a.example\na y b.example",
                "line 2: user \"a\" given twice",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_file_others_may_read_is_refused_and_a_change_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        std::fs::write(&path, "alice s3cret alice.example\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Accounts::open(&path).unwrap_err();
        assert!(error.contains("mode 0644"), "{error}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let accounts = Accounts::open(&path).unwrap();
        assert!(accounts.current().unwrap().contains_key("alice"));

        std::fs::write(&path, "bob pw bob.example\nalice other alice.example\n").unwrap();
        let table = accounts.current().unwrap();
        assert_eq!(table["alice"].secret, "other");
        assert!(table.contains_key("bob"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(accounts.current().is_err(), "a file others may read");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Accounts::open(&link).unwrap_err().contains("cannot open"));
    }
}
