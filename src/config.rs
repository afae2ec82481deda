//! The one configuration file every program reads: `/etc/etrnq/etrnq.toml`, `-C FILE` or
//! `ETRNQ_CONFIG`.
//!
//! Every key is optional and every program runs on defaults without a file. The file is checked
//! whole, once, before anything else happens: an unknown key, a value of the wrong type or a value
//! out of range stops the program with EX_CONFIG and a line naming the file, the key and the
//! reason. Keys are read by hand from the TOML table rather than through a derived deserialiser so
//! that every message can name its key exactly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address::{Address, Domain};
use crate::route::RelayTarget;
use crate::sysexits::{Status, Sysexit};

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
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, when there was one.
    pub source: Option<PathBuf>,
    pub queue_dir: PathBuf,
    /// This host's own names: MX self-detection, HELO, qualifying bare user names.
    pub hostnames: Vec<Domain>,
    pub max_message_size: u64,
    pub max_hops: u32,
    pub queue_lifetime: Duration,
    pub retry_first: Duration,
    pub retry_factor: f64,
    pub smarthost: Option<RelayTarget>,
    pub hold_domains: Vec<Domain>,
    pub relay_domains: Vec<Domain>,
    pub tls: TlsPolicy,
    pub log: LogTarget,
    pub routes: BTreeMap<String, (Domain, RelayTarget)>,
    pub dns_nameservers: Vec<SocketAddr>,
    /// The certificate chain and private key (PEM) queue-smtpd offers STARTTLS with; both or
    /// neither, checked here, and read when the server starts.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// At most this many recipients in one SMTP transaction when delivering.
    pub recipients_per_transaction: usize,
    /// `queue_min_free`, when set; see [`Config::queue_min_free`].
    pub min_free: Option<u64>,
    /// Whether queue-smtpd takes `%`, `!` and quoted `@` routing in the local parts of relayed
    /// recipients.
    pub allow_untrusted_routing: bool,
    /// Per relay domain (by its lower-case name), the local parts that exist at the site.
    pub relay_recipients: BTreeMap<String, (Domain, RecipientList)>,
    /// Where mail to the bare `postmaster` goes; `postmaster@` the first host name when absent.
    pub postmaster: Option<Address>,
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
            retry_first: Duration::from_secs(3600),
            retry_factor: 1.5,
            smarthost: None,
            hold_domains: Vec::new(),
            relay_domains: Vec::new(),
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
            recipients_per_transaction: crate::smtp::RECIPIENT_LIMIT,
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
        let mut config = Config::default();
        for (key, value) in &table {
            let reader = Reader { file, key };
            match key.as_str() {
                "queue_dir" => config.queue_dir = PathBuf::from(reader.string(value)?),
                "hostnames" => config.hostnames = reader.domains(value)?,
                "max_message_size" => config.max_message_size = reader.positive(value)?,
                "max_hops" => {
                    config.max_hops = u32::try_from(reader.positive(value)?)
                        .map_err(|_| reader.error("too large"))?
                }
                "queue_lifetime" => config.queue_lifetime = reader.interval(value)?,
                "retry_first" => config.retry_first = reader.interval(value)?,
                "retry_factor" => config.retry_factor = reader.factor(value)?,
                "smarthost" => config.smarthost = Some(reader.relay(value)?),
                "hold_domains" => config.hold_domains = reader.domains(value)?,
                "relay_domains" => config.relay_domains = reader.domains(value)?,
                "tls" => config.tls = reader.tls(value)?,
                "log" => config.log = reader.log(value)?,
                "routes" => config.routes = reader.routes(value)?,
                "dns" => config.dns_nameservers = reader.dns(value)?,
                "tls_cert" => config.tls_cert = Some(reader.path(value)?),
                "tls_key" => config.tls_key = Some(reader.path(value)?),
                "queue_min_free" => config.min_free = Some(reader.size(value)?),
                "allow_untrusted_routing" => {
                    config.allow_untrusted_routing = reader.boolean(value)?
                }
                "relay_recipients" => config.relay_recipients = reader.relay_recipients(value)?,
                "postmaster" => {
                    config.postmaster = Some(
                        Address::parse_qualified(reader.string(value)?)
                            .map_err(|e| reader.error(e.to_string()))?,
                    )
                }
                "recipients_per_transaction" => {
                    config.recipients_per_transaction = usize::try_from(reader.positive(value)?)
                        .map_err(|_| reader.error("too large"))?
                }
                _ => return Err(reader.error("unknown key")),
            }
        }
        // A users list for a domain that is not taken would never be consulted: a typo.
        for (domain, _) in config.relay_recipients.values() {
            if !config
                .relay_domains
                .iter()
                .chain(&config.hold_domains)
                .any(|listed| listed == domain)
            {
                let key = format!("relay_recipients.{domain}");
                return Err(
                    Reader { file, key: &key }.error("not one of relay_domains or hold_domains")
                );
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
            return Err(
                Reader { file, key }.error(format!("missing: {other} is set, so is needed"))
            );
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

    /// True when mail for `domain` is held until a run names it (ETRN, `-R`): a held domain
    /// holds its subdomains too, as a part-time site's subdomains usually live on the same link.
    pub fn is_held(&self, domain: &Domain) -> bool {
        self.hold_domains.iter().any(|held| domain.is_within(held))
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

struct Reader<'a> {
    file: &'a str,
    key: &'a str,
}

impl Reader<'_> {
    fn error(&self, reason: impl Into<String>) -> ConfigError {
        // A quoted key may hold any character: an error must still be one line.
        let key = if self.key.contains(char::is_control) {
            self.key.escape_debug().to_string()
        } else {
            self.key.to_string()
        };
        ConfigError {
            file: self.file.to_string(),
            key: Some(key),
            reason: reason.into(),
        }
    }

    fn string<'v>(&self, value: &'v toml::Value) -> Result<&'v str, ConfigError> {
        value
            .as_str()
            .ok_or_else(|| self.error(format!("expected a string, found {}", value.type_str())))
    }

    fn path(&self, value: &toml::Value) -> Result<PathBuf, ConfigError> {
        match self.string(value)? {
            "" => Err(self.error("must not be empty")),
            path => Ok(PathBuf::from(path)),
        }
    }

    fn positive(&self, value: &toml::Value) -> Result<u64, ConfigError> {
        match value.as_integer() {
            Some(n) if n > 0 => Ok(n as u64),
            Some(_) => Err(self.error("must be greater than zero")),
            None => Err(self.error(format!(
                "expected a whole number, found {}",
                value.type_str()
            ))),
        }
    }

    fn boolean(&self, value: &toml::Value) -> Result<bool, ConfigError> {
        value.as_bool().ok_or_else(|| {
            self.error(format!(
                "expected true or false, found {}",
                value.type_str()
            ))
        })
    }

    /// Bytes: a whole number (0 allowed) or a string with a K, M, G or T suffix.
    fn size(&self, value: &toml::Value) -> Result<u64, ConfigError> {
        match value {
            toml::Value::Integer(n) => {
                u64::try_from(*n).map_err(|_| self.error("must not be negative"))
            }
            toml::Value::String(text) => parse_size(text).map_err(|e| self.error(e)),
            other => Err(self.error(format!(
                "expected a number of bytes, found {}",
                other.type_str()
            ))),
        }
    }

    fn factor(&self, value: &toml::Value) -> Result<f64, ConfigError> {
        let factor = value
            .as_float()
            .or_else(|| value.as_integer().map(|n| n as f64))
            .ok_or_else(|| self.error(format!("expected a number, found {}", value.type_str())))?;
        if !(1.0..=10.0).contains(&factor) {
            return Err(self.error("must be between 1 and 10"));
        }
        Ok(factor)
    }

    fn interval(&self, value: &toml::Value) -> Result<Duration, ConfigError> {
        let interval = parse_interval(self.string(value)?).map_err(|e| self.error(e))?;
        if interval.is_zero() {
            return Err(self.error("must be longer than zero"));
        }
        Ok(interval)
    }

    fn domains(&self, value: &toml::Value) -> Result<Vec<Domain>, ConfigError> {
        let items = value.as_array().ok_or_else(|| {
            self.error(format!(
                "expected a list of domains, found {}",
                value.type_str()
            ))
        })?;
        items
            .iter()
            .map(|item| Domain::parse(self.string(item)?).map_err(|e| self.error(e.to_string())))
            .collect()
    }

    fn relay(&self, value: &toml::Value) -> Result<RelayTarget, ConfigError> {
        RelayTarget::parse(self.string(value)?).map_err(|e| self.error(e))
    }

    fn tls(&self, value: &toml::Value) -> Result<TlsPolicy, ConfigError> {
        match self.string(value)? {
            "opportunistic" => Ok(TlsPolicy::Opportunistic),
            "required" => Ok(TlsPolicy::Required),
            "off" => Ok(TlsPolicy::Off),
            other => Err(self.error(format!(
                "{other:?}: expected \"opportunistic\", \"required\" or \"off\""
            ))),
        }
    }

    fn log(&self, value: &toml::Value) -> Result<LogTarget, ConfigError> {
        match self.string(value)? {
            "syslog" => Ok(LogTarget::Syslog),
            "stderr" => Ok(LogTarget::Stderr),
            path if path.starts_with('/') => Ok(LogTarget::File(PathBuf::from(path))),
            other => Err(self.error(format!(
                "{other:?}: expected \"syslog\", \"stderr\" or an absolute file path"
            ))),
        }
    }

    fn table<'v>(&self, value: &'v toml::Value) -> Result<&'v toml::Table, ConfigError> {
        value
            .as_table()
            .ok_or_else(|| self.error(format!("expected a table, found {}", value.type_str())))
    }

    fn routes(
        &self,
        value: &toml::Value,
    ) -> Result<BTreeMap<String, (Domain, RelayTarget)>, ConfigError> {
        let mut routes = BTreeMap::new();
        for (domain, target) in self.table(value)? {
            let key = format!("routes.{domain}");
            let reader = Reader {
                file: self.file,
                key: &key,
            };
            let parsed = Domain::parse(domain).map_err(|e| reader.error(e.to_string()))?;
            let target = reader.relay(target)?;
            routes.insert(parsed.to_lowercase(), (parsed, target));
        }
        Ok(routes)
    }

    /// `"domain" = ["alice", "bob"]` or `"domain" = "/path/of/a/users/file"`.
    fn relay_recipients(
        &self,
        value: &toml::Value,
    ) -> Result<BTreeMap<String, (Domain, RecipientList)>, ConfigError> {
        let mut lists = BTreeMap::new();
        for (domain, users) in self.table(value)? {
            let key = format!("relay_recipients.{domain}");
            let reader = Reader {
                file: self.file,
                key: &key,
            };
            let parsed = Domain::parse(domain).map_err(|e| reader.error(e.to_string()))?;
            let list = match users {
                toml::Value::String(path) if path.starts_with('/') => {
                    RecipientList::File(PathBuf::from(path))
                }
                toml::Value::String(path) => {
                    return Err(reader.error(format!(
                        "{path:?}: expected an absolute file path or a list of local parts"
                    )));
                }
                toml::Value::Array(items) => RecipientList::Listed(
                    items
                        .iter()
                        .map(|item| {
                            let local = reader.string(item)?;
                            crate::address::validate_local(local)
                                .map(|()| local.to_ascii_lowercase())
                                .map_err(|e| reader.error(e.to_string()))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(reader.error(format!(
                        "expected a list of local parts or a file path, found {}",
                        other.type_str()
                    )));
                }
            };
            lists.insert(parsed.to_lowercase(), (parsed, list));
        }
        Ok(lists)
    }

    fn dns(&self, value: &toml::Value) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut nameservers = Vec::new();
        for (key, item) in self.table(value)? {
            let full_key = format!("dns.{key}");
            let reader = Reader {
                file: self.file,
                key: &full_key,
            };
            if key != "nameservers" {
                return Err(reader.error("unknown key"));
            }
            let items = item.as_array().ok_or_else(|| {
                reader.error(format!(
                    "expected a list of addresses, found {}",
                    item.type_str()
                ))
            })?;
            for server in items {
                nameservers
                    .push(parse_nameserver(reader.string(server)?).map_err(|e| reader.error(e))?);
            }
        }
        Ok(nameservers)
    }
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when none is given.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an IP address with an optional port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
queue_dir = "/var/spool/etrnq"
hostnames = ["mx2.isp.example"]
max_message_size = 52428800
max_hops = 25
queue_lifetime = "5d"
retry_first = "1h"
retry_factor = 1.5
smarthost = "[relay.isp.example]:25"
hold_domains = ["customer.example"]
relay_domains = ["customer.example"]
tls = "opportunistic"
log = "syslog"
tls_cert = "/etc/etrnq/tls/cert.pem"
tls_key = "/etc/etrnq/tls/key.pem"
queue_min_free = "100M"
allow_untrusted_routing = false
postmaster = "hostmaster@isp.example"
recipients_per_transaction = 50
[routes]
"customer.example" = "[127.0.0.1]:2526"
[dns]
nameservers = ["127.0.0.1:5353"]
[relay_recipients]
"customer.example" = ["alice", "Bob"]
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(FULL, "etrnq.toml").unwrap();
        assert_eq!(c.hostnames[0].as_str(), "mx2.isp.example");
        assert_eq!(c.queue_lifetime, Duration::from_secs(5 * 86400));
        assert_eq!(c.routes["customer.example"].1.port, 2526);
        assert_eq!(c.dns_nameservers[0].port(), 5353);
        assert!(c.is_held(&Domain::parse("Customer.Example").unwrap()));
        assert_eq!(c.queue_min_free(), 100 << 20);
        assert_eq!(c.postmaster.unwrap().to_string(), "hostmaster@isp.example");
        let (_, users) = &c.relay_recipients["customer.example"];
        assert_eq!(
            users,
            &RecipientList::Listed(["alice".to_string(), "bob".to_string()].into())
        );
    }

    #[test]
    fn the_reserve_defaults_to_one_and_a_half_messages() {
        let c = Config::parse("max_message_size = 1000", "etrnq.toml").unwrap();
        assert_eq!(c.queue_min_free(), 1500);
        let c = Config::parse("queue_min_free = 0", "etrnq.toml").unwrap();
        assert_eq!(c.queue_min_free(), 0);
        assert_eq!(parse_size("75000000"), Ok(75_000_000));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases = [
            ("bogus = 1", "etrnq.toml: bogus: unknown key"),
            (
                "max_hops = \"x\"",
                "etrnq.toml: max_hops: expected a whole number",
            ),
            (
                "max_hops = 0",
                "etrnq.toml: max_hops: must be greater than zero",
            ),
            (
                "queue_lifetime = \"5x\"",
                "etrnq.toml: queue_lifetime: \"5x\": unit",
            ),
            ("tls = \"maybe\"", "etrnq.toml: tls: \"maybe\""),
            (
                "hostnames = [\"bad host\"]",
                "etrnq.toml: hostnames: \"bad host\"",
            ),
            (
                "[routes]\n\"a.example\" = \"[x\"",
                "etrnq.toml: routes.a.example:",
            ),
            (
                "[dns]\nservers = []",
                "etrnq.toml: dns.servers: unknown key",
            ),
            ("log = \"relative.log\"", "etrnq.toml: log:"),
            (
                "retry_factor = 0.5",
                "etrnq.toml: retry_factor: must be between",
            ),
            ("hostnames = [", "etrnq.toml: line 1:"),
            (
                "tls_cert = \"/c.pem\"",
                "etrnq.toml: tls_key: missing: tls_cert is set",
            ),
            (
                "tls_key = \"/k.pem\"",
                "etrnq.toml: tls_cert: missing: tls_key is set",
            ),
            ("tls_cert = \"\"", "etrnq.toml: tls_cert: must not be empty"),
            (
                "queue_min_free = -1",
                "etrnq.toml: queue_min_free: must not be negative",
            ),
            (
                "queue_min_free = \"5Q\"",
                "etrnq.toml: queue_min_free: \"5Q\": unit must be",
            ),
            (
                "allow_untrusted_routing = \"yes\"",
                "etrnq.toml: allow_untrusted_routing: expected true or false",
            ),
            ("postmaster = \"nobody\"", "etrnq.toml: postmaster: "),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = \"users\"",
                "etrnq.toml: relay_recipients.a.example: \"users\": expected an absolute",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = 5",
                "etrnq.toml: relay_recipients.a.example: expected a list",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [\"a b\"]",
                "etrnq.toml: relay_recipients.a.example: \"a b\"",
            ),
            (
                "[relay_recipients]\n\"b.example\" = [\"alice\"]",
                "etrnq.toml: relay_recipients.b.example: not one of relay_domains",
            ),
            (
                "recipients_per_transaction = 0",
                "etrnq.toml: recipients_per_transaction: must be greater than zero",
            ),
            (
                "recipients_per_transaction = \"50\"",
                "etrnq.toml: recipients_per_transaction: expected a whole number",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "{err:?} spans lines");
        }
    }

    #[test]
    fn a_key_with_control_characters_is_named_on_one_line() {
        let cases = [
            ("\"a\\nb\" = 1", "etrnq.toml: a\\nb: unknown key"),
            (
                "[dns]\n\"x\\r\\ny\" = 1",
                "etrnq.toml: dns.x\\r\\ny: unknown key",
            ),
            (
                "[routes]\n\"a\\u001Bb\" = \"x\"",
                "etrnq.toml: routes.a\\u{1b}b: \"a\\u{1b}b\": domain may",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?} gave {err:?}");
        }
    }

    /// Every message the configuration reader gives, exactly: a change of wording is a change
    /// administrators and their scripts see.
    #[test]
    fn every_error_message_is_exact() {
        let cases = [
            (
                "hostnames = [",
                "etrnq.toml: line 1: unclosed array, expected `]`",
            ),
            ("bogus = 1", "etrnq.toml: bogus: unknown key"),
            ("[bogus]\nx = 1", "etrnq.toml: bogus: unknown key"),
            ("\"a\\nb\" = 1", "etrnq.toml: a\\nb: unknown key"),
            (
                "queue_dir = 5",
                "etrnq.toml: queue_dir: expected a string, found integer",
            ),
            (
                "queue_dir = 1979-05-27",
                "etrnq.toml: queue_dir: expected a string, found datetime",
            ),
            (
                "queue_dir = [1]",
                "etrnq.toml: queue_dir: expected a string, found array",
            ),
            (
                "hostnames = \"a.example\"",
                "etrnq.toml: hostnames: expected a list of domains, found string",
            ),
            (
                "hostnames = [1]",
                "etrnq.toml: hostnames: expected a string, found integer",
            ),
            (
                "hostnames = [\"bad host\"]",
                "etrnq.toml: hostnames: \"bad host\": domain may contain only letters, digits, '-' and '.'",
            ),
            (
                "hostnames = [\"a..example\"]",
                "etrnq.toml: hostnames: \"a..example\": empty label in domain",
            ),
            (
                "hostnames = [\"\"]",
                "etrnq.toml: hostnames: \"\": empty domain",
            ),
            (
                "max_message_size = \"big\"",
                "etrnq.toml: max_message_size: expected a whole number, found string",
            ),
            (
                "max_message_size = 0",
                "etrnq.toml: max_message_size: must be greater than zero",
            ),
            (
                "max_message_size = -3",
                "etrnq.toml: max_message_size: must be greater than zero",
            ),
            (
                "max_message_size = 1.5",
                "etrnq.toml: max_message_size: expected a whole number, found float",
            ),
            (
                "max_hops = \"x\"",
                "etrnq.toml: max_hops: expected a whole number, found string",
            ),
            (
                "max_hops = 0",
                "etrnq.toml: max_hops: must be greater than zero",
            ),
            ("max_hops = 4294967296", "etrnq.toml: max_hops: too large"),
            (
                "queue_lifetime = 5",
                "etrnq.toml: queue_lifetime: expected a string, found integer",
            ),
            (
                "queue_lifetime = \"5x\"",
                "etrnq.toml: queue_lifetime: \"5x\": unit must be s, m, h, d or w",
            ),
            (
                "queue_lifetime = \"x\"",
                "etrnq.toml: queue_lifetime: \"x\" is not an interval such as 30m, 1h or 5d",
            ),
            (
                "queue_lifetime = \"0\"",
                "etrnq.toml: queue_lifetime: must be longer than zero",
            ),
            (
                "queue_lifetime = \"30000000000000000w\"",
                "etrnq.toml: queue_lifetime: \"30000000000000000w\" is too long",
            ),
            (
                "queue_lifetime = \"\"",
                "etrnq.toml: queue_lifetime: \"\" is not an interval such as 30m, 1h or 5d",
            ),
            (
                "retry_first = \"1y\"",
                "etrnq.toml: retry_first: \"1y\": unit must be s, m, h, d or w",
            ),
            (
                "retry_first = \"0s\"",
                "etrnq.toml: retry_first: must be longer than zero",
            ),
            (
                "retry_factor = \"2\"",
                "etrnq.toml: retry_factor: expected a number, found string",
            ),
            (
                "retry_factor = 0.5",
                "etrnq.toml: retry_factor: must be between 1 and 10",
            ),
            (
                "retry_factor = 11",
                "etrnq.toml: retry_factor: must be between 1 and 10",
            ),
            (
                "smarthost = 25",
                "etrnq.toml: smarthost: expected a string, found integer",
            ),
            (
                "smarthost = \"[x\"",
                "etrnq.toml: smarthost: \"[x\": unbalanced '['",
            ),
            (
                "smarthost = \"host:0\"",
                "etrnq.toml: smarthost: \"host:0\": bad port \"0\"",
            ),
            (
                "smarthost = \"host:port\"",
                "etrnq.toml: smarthost: \"host:port\": bad port \"port\"",
            ),
            (
                "smarthost = \"[::1]x\"",
                "etrnq.toml: smarthost: \"[::1]x\": bad port \"x\"",
            ),
            (
                "smarthost = \"bad host\"",
                "etrnq.toml: smarthost: \"bad host\": \"bad host\" is neither a host name nor an IP address",
            ),
            (
                "smarthost = \"\"",
                "etrnq.toml: smarthost: \"\": \"\" is neither a host name nor an IP address",
            ),
            (
                "smarthost = \"[bad host]:25\"",
                "etrnq.toml: smarthost: \"[bad host]:25\": \"bad host\" is neither a host name nor an IP address",
            ),
            (
                "smarthost = \"[127.0.0.1]:99999\"",
                "etrnq.toml: smarthost: \"[127.0.0.1]:99999\": bad port \"99999\"",
            ),
            (
                "smarthost = \"::1\"",
                "etrnq.toml: smarthost: \"::1\": \":\" is neither a host name nor an IP address",
            ),
            (
                "hold_domains = [true]",
                "etrnq.toml: hold_domains: expected a string, found boolean",
            ),
            (
                "relay_domains = [\"-a.example\"]",
                "etrnq.toml: relay_domains: \"-a.example\": domain label starts or ends with '-'",
            ),
            (
                "tls = \"maybe\"",
                "etrnq.toml: tls: \"maybe\": expected \"opportunistic\", \"required\" or \"off\"",
            ),
            (
                "tls = true",
                "etrnq.toml: tls: expected a string, found boolean",
            ),
            (
                "log = \"relative.log\"",
                "etrnq.toml: log: \"relative.log\": expected \"syslog\", \"stderr\" or an absolute file path",
            ),
            (
                "log = 1",
                "etrnq.toml: log: expected a string, found integer",
            ),
            (
                "routes = 5",
                "etrnq.toml: routes: expected a table, found integer",
            ),
            (
                "[routes]\n\"a.example\" = \"[x\"",
                "etrnq.toml: routes.a.example: \"[x\": unbalanced '['",
            ),
            (
                "[routes]\n\"a.example\" = 5",
                "etrnq.toml: routes.a.example: expected a string, found integer",
            ),
            (
                "[routes]\n\"bad host\" = \"relay.example\"",
                "etrnq.toml: routes.bad host: \"bad host\": domain may contain only letters, digits, '-' and '.'",
            ),
            (
                "[routes]\n\"a\\u001Bb\" = \"x\"",
                "etrnq.toml: routes.a\\u{1b}b: \"a\\u{1b}b\": domain may contain only letters, digits, '-' and '.'",
            ),
            (
                "dns = \"x\"",
                "etrnq.toml: dns: expected a table, found string",
            ),
            (
                "[dns]\nservers = []",
                "etrnq.toml: dns.servers: unknown key",
            ),
            (
                "[dns]\n\"x\\r\\ny\" = 1",
                "etrnq.toml: dns.x\\r\\ny: unknown key",
            ),
            (
                "[dns]\nnameservers = \"127.0.0.1\"",
                "etrnq.toml: dns.nameservers: expected a list of addresses, found string",
            ),
            (
                "[dns]\nnameservers = [53]",
                "etrnq.toml: dns.nameservers: expected a string, found integer",
            ),
            (
                "[dns]\nnameservers = [\"localhost\"]",
                "etrnq.toml: dns.nameservers: \"localhost\" is not an IP address with an optional port",
            ),
            (
                "[dns]\nnameservers = [\"127.0.0.1:99999\"]",
                "etrnq.toml: dns.nameservers: \"127.0.0.1:99999\" is not an IP address with an optional port",
            ),
            (
                "tls_cert = \"/c.pem\"",
                "etrnq.toml: tls_key: missing: tls_cert is set, so is needed",
            ),
            (
                "tls_key = \"/k.pem\"",
                "etrnq.toml: tls_cert: missing: tls_key is set, so is needed",
            ),
            ("tls_cert = \"\"", "etrnq.toml: tls_cert: must not be empty"),
            (
                "tls_key = 3",
                "etrnq.toml: tls_key: expected a string, found integer",
            ),
            (
                "queue_min_free = -1",
                "etrnq.toml: queue_min_free: must not be negative",
            ),
            (
                "queue_min_free = \"5Q\"",
                "etrnq.toml: queue_min_free: \"5Q\": unit must be K, M, G or T",
            ),
            (
                "queue_min_free = \"abc\"",
                "etrnq.toml: queue_min_free: \"abc\": unit must be K, M, G or T",
            ),
            (
                "queue_min_free = \"99999999999T\"",
                "etrnq.toml: queue_min_free: \"99999999999T\" is too large",
            ),
            (
                "queue_min_free = true",
                "etrnq.toml: queue_min_free: expected a number of bytes, found boolean",
            ),
            (
                "queue_min_free = \"\"",
                "etrnq.toml: queue_min_free: \"\" is not a size such as 75000000, 100M or 2G",
            ),
            (
                "allow_untrusted_routing = \"yes\"",
                "etrnq.toml: allow_untrusted_routing: expected true or false, found string",
            ),
            (
                "postmaster = \"nobody\"",
                "etrnq.toml: postmaster: \"nobody\": address has no domain",
            ),
            (
                "postmaster = \"a@\"",
                "etrnq.toml: postmaster: \"\": empty domain",
            ),
            (
                "postmaster = 1",
                "etrnq.toml: postmaster: expected a string, found integer",
            ),
            (
                "relay_recipients = []",
                "etrnq.toml: relay_recipients: expected a table, found array",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = \"users\"",
                "etrnq.toml: relay_recipients.a.example: \"users\": expected an absolute file path or a list of local parts",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = 5",
                "etrnq.toml: relay_recipients.a.example: expected a list of local parts or a file path, found integer",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [\"a b\"]",
                "etrnq.toml: relay_recipients.a.example: \"a b\": local part has a character that needs quoting (space, '@', '<', ...)",
            ),
            (
                "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [5]",
                "etrnq.toml: relay_recipients.a.example: expected a string, found integer",
            ),
            (
                "[relay_recipients]\n\"b.example\" = [\"alice\"]",
                "etrnq.toml: relay_recipients.b.example: not one of relay_domains or hold_domains",
            ),
            (
                "[relay_recipients]\n\"bad host\" = [\"alice\"]",
                "etrnq.toml: relay_recipients.bad host: \"bad host\": domain may contain only letters, digits, '-' and '.'",
            ),
            (
                "recipients_per_transaction = 0",
                "etrnq.toml: recipients_per_transaction: must be greater than zero",
            ),
            (
                "recipients_per_transaction = \"50\"",
                "etrnq.toml: recipients_per_transaction: expected a whole number, found string",
            ),
            ("max_hops = 0\nbogus = 1", "etrnq.toml: bogus: unknown key"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
            assert_eq!(err, expected, "{text:?}");
        }
        let missing = Path::new("/nonexistent/etrnq.toml");
        assert_eq!(
            Config::read(missing).unwrap_err().to_string(),
            "/nonexistent/etrnq.toml: cannot read: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_interval("90"), Ok(Duration::from_secs(90)));
        assert!(parse_interval("m").is_err());
        assert!(parse_interval("1y").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn domain() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}"
    }

    fn string(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        inner.prop_map(|s| format!("{s:?}"))
    }

    fn list(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        proptest::collection::vec(string(item), 0..4)
            .prop_map(|items| format!("[{}]", items.join(", ")))
    }

    /// One line of configuration, with a value that is usually valid.
    fn setting() -> impl Strategy<Value = String> {
        let interval = "[0-9]{1,6}[smhdw]?";
        let size = "[0-9]{1,8}[KMGT]?";
        let host = prop_oneof![
            domain(),
            domain().prop_map(|d| format!("[{d}]:25")),
            any::<[u8; 4]>().prop_map(|o| format!("[{}]:2525", std::net::Ipv4Addr::from(o))),
            any::<u128>().prop_map(|a| format!("[{}]:26", std::net::Ipv6Addr::from(a))),
        ];
        prop_oneof![
            string("/[a-z/]{1,20}").prop_map(|v| format!("queue_dir = {v}")),
            list(domain()).prop_map(|v| format!("hostnames = {v}")),
            (1..100_000_000i64).prop_map(|v| format!("max_message_size = {v}")),
            (-5..100i64).prop_map(|v| format!("max_hops = {v}")),
            string(interval).prop_map(|v| format!("queue_lifetime = {v}")),
            string(interval).prop_map(|v| format!("retry_first = {v}")),
            (0.0..20.0f64).prop_map(|v| format!("retry_factor = {v}")),
            string(host.clone()).prop_map(|v| format!("smarthost = {v}")),
            list(domain()).prop_map(|v| format!("hold_domains = {v}")),
            list(domain()).prop_map(|v| format!("relay_domains = {v}")),
            string("opportunistic|required|off|maybe").prop_map(|v| format!("tls = {v}")),
            string("syslog|stderr|/var/log/etrnq.log|relative").prop_map(|v| format!("log = {v}")),
            string("/[a-z]{1,8}\\.pem").prop_map(|v| format!("tls_cert = {v}\ntls_key = {v}")),
            prop_oneof![string(size), (-1..1_000_000i64).prop_map(|n| n.to_string())]
                .prop_map(|v| format!("queue_min_free = {v}")),
            any::<bool>().prop_map(|v| format!("allow_untrusted_routing = {v}")),
            string("[a-z]{1,8}@[a-z]{1,8}\\.example").prop_map(|v| format!("postmaster = {v}")),
            (domain(), host).prop_map(|(d, h)| format!("[routes]\n{d:?} = {h:?}")),
            list("127\\.0\\.0\\.1(:[0-9]{1,5})?|\\[::1\\]:53")
                .prop_map(|v| format!("[dns]\nnameservers = {v}")),
            (
                domain(),
                prop_oneof![list("[a-z.+-]{1,10}"), string("/[a-z/]{1,20}")]
            )
                .prop_map(|(d, users)| format!(
                    "relay_domains = [{d:?}]\n[relay_recipients]\n{d:?} = {users}"
                )),
        ]
    }

    /// A key of any text, quoted as TOML quotes it, under any table or none.
    fn odd_key() -> impl Strategy<Value = String> {
        let table = prop_oneof![
            Just(""),
            Just("[routes]\n"),
            Just("[dns]\n"),
            Just("[relay_recipients]\n")
        ];
        (table, text(12)).prop_map(|(table, key)| {
            let quoted: String = key
                .chars()
                .map(|c| match c {
                    '"' | '\\' => format!("\\{c}"),
                    c if c.is_control() => format!("\\u{:04X}", u32::from(c)),
                    c => c.to_string(),
                })
                .collect();
            format!("{table}\"{quoted}\" = \"x\"")
        })
    }

    /// Settings in an order TOML takes: plain keys first, tables after.
    fn configuration() -> impl Strategy<Value = String> {
        proptest::collection::vec(setting(), 0..8).prop_map(|mut lines| {
            lines.sort_by_key(|line| line.contains('['));
            lines.dedup_by_key(|line| line.split(' ').next().map(str::to_string));
            lines.join("\n") + "\n"
        })
    }

    /// Parses `text`: no panic, an error on one line naming the file, and memory in proportion
    /// to the text.
    fn parse_checked(text: &str) -> Result<Config, ConfigError> {
        let (result, most) = peak(|| Config::parse(text, "etrnq.toml"));
        // The TOML parser holds some 50 to 90 bytes for each octet of the text it reads
        // (measured up to 1 MB): linear, in a file only the administrator writes.
        assert!(
            most <= 128 * text.len() + 64 * 1024,
            "{most} bytes for {} octets",
            text.len()
        );
        if let Err(e) = &result {
            let message = e.to_string();
            assert!(message.starts_with("etrnq.toml: "), "{message}");
            assert!(!message.contains(char::is_control), "{message:?}");
        }
        result
    }

    proptest! {
        #![proptest_config(config(8000))]

        #[test]
        fn any_text_is_a_configuration_or_one_error(input in text(300)) {
            let _ = parse_checked(&input);
        }

        #[test]
        fn near_valid_configurations_are_configurations_or_one_error(
            input in mutated_text(configuration())
        ) {
            let _ = parse_checked(&input);
        }

        #[test]
        fn odd_keys_are_named_on_one_line(input in odd_key()) {
            let _ = parse_checked(&input);
        }

        #[test]
        fn sizes_and_intervals_read_as_written(count in any::<u64>(), unit in 0..5usize, input in text(30)) {
            let _ = (parse_size(&input), parse_interval(&input), parse_nameserver(&input));
            let (suffix, scale) = [("", 1u64), ("K", 1 << 10), ("M", 1 << 20), ("g", 1 << 30), ("T", 1 << 40)][unit];
            prop_assert_eq!(parse_size(&format!("{count}{suffix}")).ok(), count.checked_mul(scale));
            let (suffix, scale) = [("", 1u64), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800)][unit];
            prop_assert_eq!(
                parse_interval(&format!(" {count}{suffix} ")).ok(),
                count.checked_mul(scale).map(Duration::from_secs)
            );
        }

        #[test]
        fn name_servers_read_as_written(ip in any::<std::net::IpAddr>(), port in any::<u16>()) {
            let addr = SocketAddr::new(ip, port);
            prop_assert_eq!(parse_nameserver(&addr.to_string()), Ok(addr));
            prop_assert_eq!(parse_nameserver(&ip.to_string()), Ok(SocketAddr::new(ip, 53)));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for depth in [1_000, 100_000] {
            let text = format!("a = {}{}", "[".repeat(depth), "]".repeat(depth));
            let _ = parse_checked(&text);
            let text = format!("a = {}1{}", "{b = ".repeat(depth), "}".repeat(depth));
            let _ = parse_checked(&text);
        }
    }
}
