//! The one configuration file every program reads: `/etc/etrnq/etrnq.toml`, `-C FILE` or
//! `ETRNQ_CONFIG`.
//!
//! Every key is optional and every program runs on defaults without a file. The file is checked
//! whole, once, before anything else happens: an unknown key, a value of the wrong type or a value
//! out of range stops the program with EX_CONFIG and one line naming the file, the key and the
//! reason ("etrnq.toml: dns.nameservers: expected a list of addresses, found string").
//!
//! [`Config`] is read by serde (`deny_unknown_fields`), so a new key is one field with the reader
//! of its value (`values`); `serde_path_to_error` gives the key, `tree` the TOML tree with an
//! error type that tells an unknown key from a bad value. A key with control characters is
//! named escaped, so that the error stays one line.
//!
//! `hold_domains` and `relay_domains` may name files of domains ([`domain_list`]): those are
//! read here, with the rest of the file, so that every program starts on the same lists and a
//! bad line stops it like a bad key ("etrnq.toml: relay_domains: /etc/etrnq/relay_domains:12:
//! ...").
//!
//! Limits: of several bad keys only the first (in sorted order) is reported. Other values are
//! checked for form, not against the system: a queue directory or a certificate that does not
//! exist is found by the program that uses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::address::{Address, Domain};
use crate::route::RelayTarget;
use crate::sysexits::{Status, Sysexit};

pub mod domain_list;
pub mod list_file;
mod tree;
mod values;

pub use domain_list::{DomainList, DomainSet};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub const DEFAULT_CONFIG: &str = "/etc/etrnq/etrnq.toml";
pub const DEFAULT_QUEUE_DIR: &str = "/var/spool/etrnq";
pub const CONFIG_ENV: &str = "ETRNQ_CONFIG";
pub const QUEUE_DIR_ENV: &str = "ETRNQ_QUEUE_DIR";

/// A configuration problem: the file, the key when there is one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}{reason}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub key: Option<String>,
    pub reason: String,
}

impl Sysexit for ConfigError {
    fn status(&self) -> Status {
        Status::Config
    }
}

/// How the SMTP client uses STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use it when the server offers it; deliver in clear otherwise.
    Opportunistic,
    /// Never deliver without it.
    Required,
    /// Never use it.
    Off,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Syslog,
    Stderr,
    File(PathBuf),
}

/// The validated configuration, defaults filled in.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The file this came from, when there was one.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    #[serde(deserialize_with = "values::queue_dir")]
    pub queue_dir: PathBuf,
    /// This host's own names: MX self-detection, HELO, qualifying bare user names.
    #[serde(deserialize_with = "values::domains")]
    pub hostnames: Vec<Domain>,
    #[serde(deserialize_with = "values::whole")]
    pub max_message_size: u64,
    #[serde(deserialize_with = "values::hops")]
    pub max_hops: u32,
    #[serde(deserialize_with = "values::interval")]
    pub queue_lifetime: Duration,
    /// Per domain (by its lower-case name), a queue lifetime other than `queue_lifetime`; see
    /// [`Config::lifetime_of`].
    #[serde(deserialize_with = "values::lifetimes")]
    pub queue_lifetimes: BTreeMap<String, (Domain, Duration)>,
    /// How old a message must be before its sender is warned, once, that it is late; no
    /// warnings when absent.
    #[serde(deserialize_with = "values::some_interval")]
    pub delay_warning: Option<Duration>,
    #[serde(deserialize_with = "values::interval")]
    pub retry_first: Duration,
    #[serde(deserialize_with = "values::factor")]
    pub retry_factor: f64,
    #[serde(deserialize_with = "values::relay")]
    pub smarthost: Option<RelayTarget>,
    /// Domains held until a run names them; see [`Config::is_held`].
    #[serde(deserialize_with = "values::domain_lists")]
    pub hold_domains: DomainList,
    /// Domains queue-smtpd takes mail for, besides the held ones.
    #[serde(deserialize_with = "values::domain_lists")]
    pub relay_domains: DomainList,
    #[serde(deserialize_with = "values::tls")]
    pub tls: TlsPolicy,
    #[serde(deserialize_with = "values::log")]
    pub log: LogTarget,
    #[serde(deserialize_with = "values::routes")]
    pub routes: BTreeMap<String, (Domain, RelayTarget)>,
    #[serde(rename = "dns", deserialize_with = "values::dns")]
    pub dns_nameservers: Vec<SocketAddr>,
    /// The certificate chain and private key (PEM) queue-smtpd offers STARTTLS with; both or
    /// neither, checked here, and read when the server starts.
    #[serde(deserialize_with = "values::some_path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "values::some_path")]
    pub tls_key: Option<PathBuf>,
    /// At most this many recipients in one SMTP transaction when delivering.
    #[serde(deserialize_with = "values::count")]
    pub recipients_per_transaction: usize,
    /// At most this many messages in one batch of a queue run over the whole queue: what a
    /// run plans in memory at once (see `queue::Batches`).
    #[serde(deserialize_with = "values::count")]
    pub queue_run_batch: usize,
    /// `queue_min_free`, when set; see [`Config::queue_min_free`].
    #[serde(rename = "queue_min_free", deserialize_with = "values::size")]
    pub min_free: Option<u64>,
    /// Whether queue-smtpd takes `%`, `!` and quoted `@` routing in the local parts of relayed
    /// recipients.
    #[serde(deserialize_with = "values::boolean")]
    pub allow_untrusted_routing: bool,
    /// Per relay domain (by its lower-case name), the local parts that exist at the site.
    #[serde(deserialize_with = "values::relay_recipients")]
    pub relay_recipients: BTreeMap<String, (Domain, RecipientList)>,
    /// Where mail to the bare `postmaster` goes; `postmaster@` the first host name when absent.
    #[serde(deserialize_with = "values::postmaster")]
    pub postmaster: Option<Address>,
    /// The ODMR accounts file queue-smtpd reads for `--odmr-listen` (see `smtpd::odmr`).
    #[serde(deserialize_with = "values::some_path")]
    pub odmr_accounts: Option<PathBuf>,
}

/// The users of one relay domain, as `[relay_recipients]` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientList {
    /// Local parts listed in the configuration, lower-cased.
    Listed(std::collections::BTreeSet<String>),
    /// A file of local parts, one a line, read by queue-smtpd and read again when it changes.
    File(PathBuf),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: None,
            queue_dir: PathBuf::from(DEFAULT_QUEUE_DIR),
            hostnames: Vec::new(),
            max_message_size: 50 * 1024 * 1024,
            max_hops: 25,
            queue_lifetime: Duration::from_secs(5 * 86400),
            queue_lifetimes: BTreeMap::new(),
            delay_warning: None,
            retry_first: Duration::from_secs(3600),
            retry_factor: 1.5,
            smarthost: None,
            hold_domains: DomainList::default(),
            relay_domains: DomainList::default(),
            tls: TlsPolicy::Opportunistic,
            log: LogTarget::Syslog,
            routes: BTreeMap::new(),
            dns_nameservers: Vec::new(),
            tls_cert: None,
            tls_key: None,
            min_free: None,
            allow_untrusted_routing: false,
            relay_recipients: BTreeMap::new(),
            postmaster: None,
            odmr_accounts: None,
            recipients_per_transaction: crate::smtp::RECIPIENT_LIMIT,
            queue_run_batch: 250_000,
        }
    }
}

impl Config {
    /// Loads the configuration a program should run with: `explicit` (`-C`), else `$ETRNQ_CONFIG`,
    /// else the default file when it exists, else defaults. A file named explicitly must exist.
    /// `$ETRNQ_QUEUE_DIR` then overrides the file's `queue_dir`.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        let mut config = match (explicit, env_file) {
            (Some(path), _) => Config::read(path)?,
            (None, Some(path)) => Config::read(Path::new(&path))?,
            (None, None) if Path::new(DEFAULT_CONFIG).exists() => {
                Config::read(Path::new(DEFAULT_CONFIG))?
            }
            (None, None) => Config::default(),
        };
        if let Some(dir) = std::env::var_os(QUEUE_DIR_ENV).filter(|v| !v.is_empty()) {
            config.queue_dir = PathBuf::from(dir);
        }
        Ok(config)
    }

    /// Reads and validates one file.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&text, &file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            file: file.to_string(),
            key: None,
            reason: toml_error_line(text, &e),
        })?;
        let config: Config = serde_path_to_error::deserialize(tree::Tree(toml::Value::Table(
            table,
        )))
        .map_err(|e| {
            let key = e
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(".");
            error(file, &key, e.into_inner().to_string())
        })?;
        // A users list for a domain that is not taken would never be consulted: a typo.
        for (domain, _) in config.relay_recipients.values() {
            if !config.takes(domain) {
                let key = format!("relay_recipients.{domain}");
                return Err(error(
                    file,
                    &key,
                    "not one of relay_domains or hold_domains",
                ));
            }
        }
        // A certificate without its key (or the reverse) is a half-done setup: refused here
        // rather than silently running without STARTTLS.
        let missing = match (&config.tls_cert, &config.tls_key) {
            (Some(_), None) => Some(("tls_key", "tls_cert")),
            (None, Some(_)) => Some(("tls_cert", "tls_key")),
            _ => None,
        };
        if let Some((key, other)) = missing {
            return Err(error(
                file,
                key,
                format!("missing: {other} is set, so is needed"),
            ));
        }
        Ok(config)
    }

    /// The name this host gives itself: the first of `hostnames`, else the system's host name.
    pub fn primary_hostname(&self) -> Domain {
        if let Some(name) = self.hostnames.first() {
            return name.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .and_then(|name| Domain::parse(&name).ok())
            .unwrap_or_else(Domain::localhost)
    }

    /// The free space (bytes) the queue's file system keeps for delivery state and bounces: new
    /// mail is refused below it. `queue_min_free`, else one and a half times the largest
    /// message, as Postfix's smtpd asks of its queue file system.
    pub fn queue_min_free(&self) -> u64 {
        self.min_free
            .unwrap_or_else(|| self.max_message_size.saturating_mul(3) / 2)
    }

    /// How long mail for `domain` is kept: the lifetime of the most specific domain in
    /// `queue_lifetimes` that holds it (itself or a parent, as `hold_domains` holds
    /// subdomains), else `queue_lifetime`. A domain that does not parse gets `queue_lifetime`.
    /// One lookup per label, however many domains have a lifetime of their own.
    pub fn lifetime_of(&self, domain: &str) -> Duration {
        let Ok(domain) = Domain::parse(domain) else {
            return self.queue_lifetime;
        };
        let name = domain.to_lowercase();
        domain_list::upward(&domain, &name)
            .find_map(|name| self.queue_lifetimes.get(name))
            .map_or(self.queue_lifetime, |&(_, lifetime)| lifetime)
    }

    /// True when mail for `domain` is held until a run names it (ETRN, `-R`): a held domain
    /// holds its subdomains too, as a part-time site's subdomains usually live on the same link.
    pub fn is_held(&self, domain: &Domain) -> bool {
        self.hold_domains.holds(domain)
    }

    /// Reads `hold_domains` and `relay_domains` again where a file of theirs has changed and
    /// settled, for a program that runs for long; a list that no longer reads stays as it was.
    /// One line for each list looked at again: `Ok` when it was read, `Err` why not.
    pub fn reread_domain_lists(&mut self, now: SystemTime) -> Vec<Result<String, String>> {
        let mut said = Vec::new();
        for (key, list) in [
            ("relay_domains", &mut self.relay_domains),
            ("hold_domains", &mut self.hold_domains),
        ] {
            if list.freshness(now) != domain_list::Freshness::Stale {
                continue;
            }
            said.push(domain_list::reread(key, list).map(|(new, line)| {
                *list = new;
                line
            }));
        }
        said
    }

    /// True when queue-smtpd takes mail for `domain`: it is listed itself in `relay_domains` or
    /// `hold_domains` (a subdomain must be listed itself).
    pub fn takes(&self, domain: &Domain) -> bool {
        self.relay_domains.contains(domain) || self.hold_domains.contains(domain)
    }
}

/// Turns a TOML syntax error into one line with its line number.
fn toml_error_line(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Parses a size in bytes: a whole number, optionally followed by `K`, `M`, `G` or `T` (powers
/// of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let scale: u64 = match unit.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{text:?}: unit must be K, M, G or T")),
            };
            (&text[..at], scale)
        }
        _ => (text, 1),
    };
    let count: u64 = digits
        .parse()
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{text:?} is not a size such as 75000000, 100M or 2G"))?;
    count
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses an interval such as `5d`, `1h`, `30m`, `90s`, `2w` or a bare number of seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an interval such as 30m, 1h or 5d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{text:?}: unit must be s, m, h, d or w")),
    };
    count
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Parses an interval that must be longer than zero: a lifetime, a timeout, a wait.
pub fn parse_positive_interval(text: &str) -> Result<Duration, String> {
    match parse_interval(text)? {
        interval if interval.is_zero() => Err("must be longer than zero".to_string()),
        interval => Ok(interval),
    }
}

/// An error about one key. A quoted key may hold any character: the error must still be one
/// line.
fn error(file: &str, key: &str, reason: impl Into<String>) -> ConfigError {
    let key = if key.contains(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_string()
    };
    ConfigError {
        file: file.to_string(),
        key: Some(key),
        reason: reason.into(),
    }
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when none is given.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    crate::address::parse_nameserver(text)
        .map_err(|_| format!("{text:?} is not an IP address with an optional port"))
}
