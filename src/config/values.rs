//! The readers of the configuration's values: each takes the value as the file wrote it and
//! returns it typed, or says in words why not.
//!
//! Each reader is named in a `deserialize_with` on its key in [`Config`](super::Config); the key
//! is added to the words by the caller, giving "file: key: reason". A list is refused as a whole
//! at its first bad item, named by the list's key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

use super::domain_list::{DomainList, Source};
use super::tree::{Entries, Raw};
use super::{
    LogTarget, RecipientList, TlsPolicy, parse_nameserver, parse_positive_interval, parse_size,
};
use crate::address::{self, Address, Domain};
use crate::route::RelayTarget;

/// Reads one value whole and checks it with `check`.
fn read<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    check: impl FnOnce(&toml::Value) -> Result<T, String>,
) -> Result<T, D::Error> {
    let Raw(value) = Raw::deserialize(deserializer)?;
    check(&value).map_err(de::Error::custom)
}

fn string(value: &toml::Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", value.type_str()))
}

fn path(value: &toml::Value) -> Result<PathBuf, String> {
    match string(value)? {
        "" => Err("must not be empty".to_string()),
        path => Ok(PathBuf::from(path)),
    }
}

fn positive(value: &toml::Value) -> Result<u64, String> {
    match value.as_integer() {
        Some(n) if n > 0 => Ok(n as u64),
        Some(_) => Err("must be greater than zero".to_string()),
        None => Err(format!(
            "expected a whole number, found {}",
            value.type_str()
        )),
    }
}

fn domain_list(value: &toml::Value) -> Result<Vec<Domain>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("expected a list of domains, found {}", value.type_str()))?;
    items
        .iter()
        .map(|item| Domain::parse(string(item)?).map_err(|e| e.to_string()))
        .collect()
}

/// A domain list key: a list of domains and absolute file names, or one file name alone.
fn domain_sources(value: &toml::Value) -> Result<DomainList, String> {
    let source = |text: &str| {
        if text.starts_with('/') {
            Ok(Source::File(PathBuf::from(text)))
        } else {
            Domain::parse(text)
                .map(Source::Domain)
                .map_err(|e| e.to_string())
        }
    };
    let sources = match value {
        toml::Value::String(path) if path.starts_with('/') => vec![Source::File(path.into())],
        toml::Value::Array(items) => items
            .iter()
            .map(|item| source(string(item)?))
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "expected a list of domains or an absolute file path, found {}",
                match other {
                    toml::Value::String(text) => format!("{text:?}"),
                    other => other.type_str().to_string(),
                }
            ));
        }
    };
    DomainList::load(sources)
}

fn relay_target(value: &toml::Value) -> Result<RelayTarget, String> {
    RelayTarget::parse(string(value)?).map_err(|e| e.to_string())
}

pub fn queue_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    read(d, |value| string(value).map(PathBuf::from))
}

pub fn some_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    read(d, path).map(Some)
}

pub fn domains<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Domain>, D::Error> {
    read(d, domain_list)
}

pub fn domain_lists<'de, D: Deserializer<'de>>(d: D) -> Result<DomainList, D::Error> {
    read(d, domain_sources)
}

pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    read(d, positive)
}

pub fn hops<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    read(d, |value| {
        u32::try_from(positive(value)?).map_err(|_| "too large".to_string())
    })
}

pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    read(d, |value| {
        usize::try_from(positive(value)?).map_err(|_| "too large".to_string())
    })
}

pub fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    read(d, |value| parse_positive_interval(string(value)?))
}

pub fn some_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    interval(d).map(Some)
}

pub fn factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    read(d, |value| {
        let factor = value
            .as_float()
            .or_else(|| value.as_integer().map(|n| n as f64))
            .ok_or_else(|| format!("expected a number, found {}", value.type_str()))?;
        if !(1.0..=10.0).contains(&factor) {
            return Err("must be between 1 and 10".to_string());
        }
        Ok(factor)
    })
}

/// Bytes: a whole number (0 allowed) or a string with a K, M, G or T suffix.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    read(d, |value| match value {
        toml::Value::Integer(n) => {
            u64::try_from(*n).map_err(|_| "must not be negative".to_string())
        }
        toml::Value::String(text) => parse_size(text),
        other => Err(format!(
            "expected a number of bytes, found {}",
            other.type_str()
        )),
    })
    .map(Some)
}

pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    read(d, |value| {
        value
            .as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", value.type_str()))
    })
}

pub fn relay<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RelayTarget>, D::Error> {
    read(d, relay_target).map(Some)
}

pub fn tls<'de, D: Deserializer<'de>>(d: D) -> Result<TlsPolicy, D::Error> {
    read(d, |value| match string(value)? {
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "required" => Ok(TlsPolicy::Required),
        "off" => Ok(TlsPolicy::Off),
        other => Err(format!(
            "{other:?}: expected \"opportunistic\", \"required\" or \"off\""
        )),
    })
}

pub fn log<'de, D: Deserializer<'de>>(d: D) -> Result<LogTarget, D::Error> {
    read(d, |value| match string(value)? {
        "syslog" => Ok(LogTarget::Syslog),
        "stderr" => Ok(LogTarget::Stderr),
        path if path.starts_with('/') => Ok(LogTarget::File(PathBuf::from(path))),
        other => Err(format!(
            "{other:?}: expected \"syslog\", \"stderr\" or an absolute file path"
        )),
    })
}

pub fn postmaster<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
    read(d, |value| {
        Address::parse_qualified(string(value)?).map_err(|e| e.to_string())
    })
    .map(Some)
}

/// A table key that names a domain.
struct DomainKey(Domain);

impl<'de> Deserialize<'de> for DomainKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DomainKey, D::Error> {
        let text = String::deserialize(d)?;
        Domain::parse(&text)
            .map(DomainKey)
            .map_err(de::Error::custom)
    }
}

/// `[routes]`: `"domain" = "target"`, keyed by the domain's lower-case name.
pub fn routes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, (Domain, RelayTarget)>, D::Error> {
    struct Target(RelayTarget);
    impl<'de> Deserialize<'de> for Target {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
            read(d, relay_target).map(Target)
        }
    }
    let Entries(entries) = Entries::<DomainKey, Target>::deserialize(d)?;
    Ok(entries
        .into_iter()
        .map(|(DomainKey(domain), Target(target))| (domain.to_lowercase(), (domain, target)))
        .collect())
}

/// `[queue_lifetimes]`: `"domain" = "30d"`, keyed by the domain's lower-case name.
pub fn lifetimes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, (Domain, Duration)>, D::Error> {
    struct Lifetime(Duration);
    impl<'de> Deserialize<'de> for Lifetime {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lifetime, D::Error> {
            interval(d).map(Lifetime)
        }
    }
    let Entries(entries) = Entries::<DomainKey, Lifetime>::deserialize(d)?;
    Ok(entries
        .into_iter()
        .map(|(DomainKey(domain), Lifetime(lifetime))| (domain.to_lowercase(), (domain, lifetime)))
        .collect())
}

/// `[relay_recipients]`: `"domain" = ["alice", "bob"]` or `"domain" = "/path/of/a/users/file"`.
pub fn relay_recipients<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, (Domain, RecipientList)>, D::Error> {
    struct Users(RecipientList);
    impl<'de> Deserialize<'de> for Users {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Users, D::Error> {
            read(d, |value| match value {
                toml::Value::String(path) if path.starts_with('/') => {
                    Ok(RecipientList::File(PathBuf::from(path)))
                }
                toml::Value::String(path) => Err(format!(
                    "{path:?}: expected an absolute file path or a list of local parts"
                )),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        let local = string(item)?;
                        address::validate_local(local)
                            .map(|()| local.to_ascii_lowercase())
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<BTreeSet<_>, _>>()
                    .map(RecipientList::Listed),
                other => Err(format!(
                    "expected a list of local parts or a file path, found {}",
                    other.type_str()
                )),
            })
            .map(Users)
        }
    }
    let Entries(entries) = Entries::<DomainKey, Users>::deserialize(d)?;
    Ok(entries
        .into_iter()
        .map(|(DomainKey(domain), Users(list))| (domain.to_lowercase(), (domain, list)))
        .collect())
}

/// `[dns]`: the one key `nameservers`, a list of `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub fn dns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Dns {
        #[serde(default, deserialize_with = "nameservers")]
        nameservers: Vec<SocketAddr>,
    }
    fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        read(d, |value| {
            let items = value.as_array().ok_or_else(|| {
                format!("expected a list of addresses, found {}", value.type_str())
            })?;
            items
                .iter()
                .map(|item| parse_nameserver(string(item)?))
                .collect()
        })
    }
    Dns::deserialize(d).map(|dns| dns.nameservers)
}
