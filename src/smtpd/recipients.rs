//! `[relay_recipients]`: the users that exist at each site, and the RCPT lookup against them.
//!
//! Mail for anyone else is refused at RCPT (`550 5.1.1`) rather than accepted and bounced
//! later, when the site refuses it, to a sender that is usually forged (backscatter). This is
//! Postfix's `relay_recipient_maps`.
//!
//! A domain's users are a list in the configuration or a file of local parts, one a line;
//! blank lines and `#` comments (at the start of a line or after a space) are ignored. Local
//! parts compare without case. `postmaster` is always taken (RFC 5321 §4.5.1). A domain without
//! an entry takes every local part, as before.
//!
//! A file is read when the server starts (an unreadable or malformed file stops it with
//! EX_CONFIG) and read again when it changes: its modification time, size or inode, checked at
//! each RCPT for the domain. A file changed less than a second ago is not read yet, since it
//! may be half written; the previous list answers until then. A file that can no longer be
//! read, or that is malformed, makes RCPT for the domain `451 4.3.0` until it is fixed: a
//! temporary refusal costs the sender a retry, a wrong `550` would bounce a real user's mail.
//! Write the file elsewhere and rename it into place.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::address::{Address, validate_local};
use crate::config::list_file::{self, Stamp};
use crate::config::{Config, ConfigError, RecipientList};

/// The largest users file read (a few hundred thousand users).
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What the users of a domain say about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A listed user, or postmaster.
    Known,
    /// The domain lists its users and this is not one of them.
    Unknown,
    /// The domain lists no users: everyone is taken.
    Unlisted,
    /// The users file cannot be used now; why.
    Unavailable(String),
}

/// Every domain's users.
#[derive(Debug, Default)]
pub struct RelayRecipients {
    /// By lower-case domain.
    domains: HashMap<String, Users>,
}

#[derive(Debug)]
enum Users {
    Listed(BTreeSet<String>),
    File(Mutex<UsersFile>),
}

#[derive(Debug)]
struct UsersFile {
    path: PathBuf,
    /// The version of the file last read, well or not.
    seen: Option<Stamp>,
    /// The users of the last version read well.
    users: BTreeSet<String>,
    /// Why the file as it is now cannot be used, when that is so.
    broken: Option<String>,
}

impl RelayRecipients {
    /// Reads every configured list and file.
    pub fn load(config: &Config) -> Result<RelayRecipients, ConfigError> {
        let mut domains = HashMap::new();
        for (key, (domain, list)) in &config.relay_recipients {
            let users = match list {
                RecipientList::Listed(users) => Users::Listed(users.clone()),
                RecipientList::File(path) => {
                    let (stamp, users) = read(path).map_err(|reason| ConfigError {
                        file: config
                            .source
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        key: Some(format!("relay_recipients.{domain}")),
                        reason,
                    })?;
                    Users::File(Mutex::new(UsersFile {
                        path: path.clone(),
                        seen: Some(stamp),
                        users,
                        broken: None,
                    }))
                }
            };
            domains.insert(key.clone(), users);
        }
        Ok(RelayRecipients { domains })
    }

    /// What the users of `address`'s domain say about it.
    pub fn lookup(&self, address: &Address) -> Lookup {
        let Some(users) = self.domains.get(&address.domain().to_lowercase()) else {
            return Lookup::Unlisted;
        };
        let local = address.local_part().to_ascii_lowercase();
        if local == "postmaster" {
            return Lookup::Known;
        }
        let known = match users {
            Users::Listed(users) => users.contains(&local),
            Users::File(file) => {
                let Ok(mut file) = file.lock() else {
                    return Lookup::Unavailable("users table lock poisoned".into());
                };
                file.refresh(SystemTime::now());
                if let Some(why) = &file.broken {
                    return Lookup::Unavailable(why.clone());
                }
                file.users.contains(&local)
            }
        };
        if known {
            Lookup::Known
        } else {
            Lookup::Unknown
        }
    }
}

impl UsersFile {
    /// Reads the file again when it has changed and has been still for
    /// [`list_file::SETTLE`].
    fn refresh(&mut self, now: SystemTime) {
        let stamp = match Stamp::of(&self.path) {
            Ok(stamp) => stamp,
            Err(why) => {
                self.seen = None;
                self.broken = Some(why);
                return;
            }
        };
        if self.seen.as_ref() == Some(&stamp) {
            return;
        }
        if !stamp.is_settled(now) {
            // Half written, perhaps: what answered so far answers for another moment.
            return;
        }
        match read(&self.path) {
            Ok((stamp, users)) => {
                self.seen = Some(stamp);
                self.users = users;
                self.broken = None;
            }
            Err(why) => {
                self.seen = Some(stamp);
                self.broken = Some(why);
            }
        }
    }
}

/// Reads a users file: its stamp (taken first, so a change while reading is seen next time)
/// and its local parts, lower-cased.
fn read(path: &Path) -> Result<(Stamp, BTreeSet<String>), String> {
    let (stamp, text) = list_file::read(path, MAX_FILE, "a users file")?;
    let users =
        parse(&text).map_err(|(line, why)| format!("{}:{line}: {why}", list_file::name(path)))?;
    Ok((stamp, users))
}

/// The local parts of a users file; a bad line gives its number and why.
fn parse(text: &str) -> Result<BTreeSet<String>, (usize, String)> {
    let mut users = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let content = strip_comment(line).trim();
        if content.is_empty() {
            continue;
        }
        validate_local(content).map_err(|e| (number + 1, e.to_string()))?;
        users.insert(content.to_ascii_lowercase());
    }
    Ok(users)
}

/// The line without a `#` comment that starts it or follows a space or a tab (`#` is a valid
/// character inside a local part).
fn strip_comment(line: &str) -> &str {
    let mut previous = None;
    for (at, c) in line.char_indices() {
        if c == '#' && matches!(previous, None | Some(' ' | '\t')) {
            return &line[..at];
        }
        previous = Some(c);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::list_file::SETTLE;

    fn address(text: &str) -> Address {
        Address::parse_qualified(text).unwrap()
    }

    #[test]
    fn users_files_take_comments_and_blank_lines() {
        let users = parse("# the site's users\nalice\n\n  Bob   # Bob Smith\nc#d\n").unwrap();
        let listed: Vec<&str> = users.iter().map(String::as_str).collect();
        assert_eq!(listed, ["alice", "bob", "c#d"]);
        assert_eq!(parse("alice\nbad user\n").unwrap_err().0, 2);
        assert_eq!(parse("x@y\n").unwrap_err().0, 1);
    }

    #[test]
    fn lookups_by_list_compare_without_case() {
        let config = Config::parse(
            "relay_domains = [\"customer.example\", \"open.example\"]\n\
             [relay_recipients]\n\"customer.example\" = [\"Alice\", \"bob\"]\n",
            "etrnq.toml",
        )
        .unwrap();
        let table = RelayRecipients::load(&config).unwrap();
        assert_eq!(
            table.lookup(&address("ALICE@customer.example")),
            Lookup::Known
        );
        assert_eq!(
            table.lookup(&address("postmaster@Customer.Example")),
            Lookup::Known
        );
        assert_eq!(
            table.lookup(&address("carol@customer.example")),
            Lookup::Unknown
        );
        assert_eq!(
            table.lookup(&address("carol@open.example")),
            Lookup::Unlisted
        );
    }

    #[test]
    fn a_file_is_read_again_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "alice\n").unwrap();
        let (stamp, users) = read(&path).unwrap();
        let mut file = UsersFile {
            path: path.clone(),
            seen: Some(stamp),
            users,
            broken: None,
        };
        std::fs::write(&path, "alice\nbob\n").unwrap();
        let modified = Stamp::of(&path).unwrap().modified();
        file.refresh(modified);
        assert!(
            !file.users.contains("bob"),
            "read while it may be half written"
        );
        file.refresh(modified + SETTLE);
        assert!(file.users.contains("bob"));
        std::fs::write(&path, "alice\nno good\n").unwrap();
        file.refresh(SystemTime::now() + SETTLE);
        assert!(file.broken.as_deref().is_some_and(|b| b.contains(":2: ")));
        std::fs::remove_file(&path).unwrap();
        file.refresh(SystemTime::now() + SETTLE);
        assert!(file.broken.is_some());
        std::fs::write(&path, "carol\n").unwrap();
        file.refresh(SystemTime::now() + SETTLE);
        assert!(file.broken.is_none());
        assert!(file.users.contains("carol") && !file.users.contains("alice"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!$%&'*+/=?^_`{|}~-][a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{0,10}",
            "\"[a-z ]{1,10}\"",
        ]
    }

    /// A users file as administrators write it: users, blank lines, comments.
    fn users_file() -> impl Strategy<Value = (Vec<String>, String)> {
        proptest::collection::vec((local_part(), 0..4usize), 0..20).prop_map(|lines| {
            let mut text = String::new();
            let mut users = Vec::new();
            for (user, decoration) in lines {
                match decoration {
                    0 => text.push_str(&format!("{user}\n")),
                    1 => text.push_str(&format!("  {user}\t# {user}'s mailbox\r\n")),
                    2 => text.push_str("# a comment\n\n"),
                    _ => text.push_str(&format!("{user} #\n")),
                }
                if decoration != 2 {
                    users.push(user.to_ascii_lowercase());
                }
            }
            (users, text)
        })
    }

    proptest! {
        #![proptest_config(config(6000))]

        #[test]
        fn users_files_read_as_written((users, text) in users_file()) {
            let parsed = parse(&text).unwrap();
            prop_assert_eq!(parsed, users.into_iter().collect::<BTreeSet<_>>());
        }

        #[test]
        fn any_users_file_is_users_or_a_numbered_error(
            input in prop_oneof![text(300), mutated_text(users_file().prop_map(|(_, text)| text))]
        ) {
            let (parsed, most) = peak(|| parse(&input));
            prop_assert!(most <= 8 * input.len() + 1024, "{} bytes", most);
            match parsed {
                Ok(users) => {
                    for user in users {
                        prop_assert!(validate_local(&user).is_ok());
                        prop_assert_eq!(user.to_ascii_lowercase(), user);
                    }
                }
                Err((line, _)) => prop_assert!(line >= 1 && line <= input.lines().count()),
            }
        }
    }
}
