//! Mail addresses, domains and hosts, parsed once at the edge and typed from then on.
//!
//! A [`Domain`] is a host name of letter-digit-hyphen labels or an address literal (`[192.0.2.1]`,
//! `[IPv6:2001:db8::1]`); it is what `-R`, ETRN and routing speak, and it can never carry a space,
//! a shell metacharacter or a path separator. An [`Address`] is `local-part@domain` (RFC 5321
//! `Mailbox`) or the null reverse path `<>`. Domains keep the case they were written in, because
//! mail administrators expect to see addresses as submitted, and compare case-insensitively.
//! A [`HostPort`] is a host to connect to with its port, in the forms routes, etrn-send and the
//! name servers share (`host`, module docs).
//!
//! Security: nothing accepted here can carry a space, a control character, a shell
//! metacharacter or a path separator, so a domain may name a file or reach a log as it is.
//!
//! Limits: internationalised (UTF-8) addresses are refused; an unqualified name is qualified with
//! the domain the caller supplies (this host's first name), as sendmail and Postfix do.

use std::fmt;

use crate::sysexits::{Status, Sysexit};

mod domain;
mod host;

pub use domain::{Domain, Literal, Name};
pub use host::{Host, HostError, HostPort, HostProblem, parse_nameserver};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

/// Why an address or a domain was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{input:?}: {reason}")]
pub struct AddressError {
    pub input: String,
    pub reason: &'static str,
}

impl Sysexit for AddressError {
    fn status(&self) -> Status {
        Status::Usage
    }
}

fn refuse(input: &str, reason: &'static str) -> AddressError {
    AddressError {
        input: input.to_string(),
        reason,
    }
}

/// A mailbox `local-part@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses one address as written on a command line or in an envelope: optional angle
    /// brackets, an optional source route (ignored, RFC 5321 §3.3), a dot-atom or quoted local
    /// part. An address without `@` is qualified with `default_domain`.
    pub fn parse(input: &str, default_domain: &Domain) -> Result<Address, AddressError> {
        Address::parse_or_qualify(input, Some(default_domain))
    }

    /// Parses an address that must name its domain, as an SMTP path does: nothing is qualified.
    pub fn parse_qualified(input: &str) -> Result<Address, AddressError> {
        Address::parse_or_qualify(input, None)
    }

    fn parse_or_qualify(
        input: &str,
        default_domain: Option<&Domain>,
    ) -> Result<Address, AddressError> {
        let path = strip_angle_brackets(input)?;
        let path = strip_source_route(input, path)?;
        if path.is_empty() {
            return Err(refuse(input, "empty address"));
        }
        let (local, domain) = match (split_at_domain(path), default_domain) {
            (Some((local, domain)), _) => (local, Domain::parse(domain)?),
            (None, Some(default_domain)) => (path, default_domain.clone()),
            (None, None) => return Err(refuse(input, "address has no domain")),
        };
        validate_local_part(input, local)?;
        Ok(Address {
            local: local.to_string(),
            domain,
        })
    }

    /// `postmaster@domain`, the mailbox RFC 5321 §4.5.1 requires every domain to have.
    pub fn postmaster(domain: &Domain) -> Address {
        Address {
            local: "postmaster".to_string(),
            domain: domain.clone(),
        }
    }

    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// True when the local part names another hop: `user%elsewhere`, `elsewhere!user` or
    /// `"user@elsewhere"`. A mail server that honours these conventions relays to `elsewhere`,
    /// so a backup MX that passes them on makes its site an open relay.
    pub fn routes_onward(&self) -> bool {
        unquoted(&self.local)
            .iter()
            .any(|b| matches!(b, b'%' | b'!' | b'@'))
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// An envelope sender: a mailbox, or the null reverse path `<>` that bounces use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Address),
}

impl ReversePath {
    /// `<>` and the empty string are the null sender; anything else must be an address.
    pub fn parse(input: &str, default_domain: &Domain) -> Result<ReversePath, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed == "<>" {
            return Ok(ReversePath::Null);
        }
        Address::parse(trimmed, default_domain).map(ReversePath::Mailbox)
    }

    pub fn mailbox(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(address) => Some(address),
        }
    }
}

impl fmt::Display for ReversePath {
    /// The bare address, or the empty string for the null sender (the form envelopes store).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(address) => address.fmt(f),
        }
    }
}

fn strip_angle_brackets(input: &str) -> Result<&str, AddressError> {
    let text = input.trim();
    match (text.starts_with('<'), text.ends_with('>')) {
        (true, true) if text.len() >= 2 => Ok(&text[1..text.len() - 1]),
        (false, false) => Ok(text),
        (true, _) => Err(refuse(input, "unbalanced '<'")),
        (false, true) => Err(refuse(input, "unbalanced '>'")),
    }
}

fn strip_source_route<'a>(input: &str, path: &'a str) -> Result<&'a str, AddressError> {
    if !path.starts_with('@') {
        return Ok(path);
    }
    match path.find(':') {
        Some(colon) => Ok(&path[colon + 1..]),
        None => Err(refuse(input, "source route without ':'")),
    }
}

/// Splits at the `@` that separates the domain: the last one outside a quoted local part.
fn split_at_domain(path: &str) -> Option<(&str, &str)> {
    let search_from = if path.starts_with('"') {
        closing_quote(path).map_or(path.len(), |end| end + 1)
    } else {
        0
    };
    path[search_from..]
        .rfind('@')
        .map(|at| (&path[..search_from + at], &path[search_from + at + 1..]))
}

fn closing_quote(path: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The local part with its quotes and backslash escapes removed: what a mail server that
/// interprets it sees.
fn unquoted(local: &str) -> Vec<u8> {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.as_bytes().to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner.as_bytes() {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Checks a local part on its own (a dot-atom or a quoted string), as lists of users give it.
pub fn validate_local(local: &str) -> Result<(), AddressError> {
    validate_local_part(local, local)
}

fn validate_local_part(input: &str, local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(refuse(input, "empty local part"));
    }
    if local.len() > 64 {
        return Err(refuse(input, "local part longer than 64 characters"));
    }
    if local.starts_with('"') {
        return match closing_quote(local) {
            Some(end) if end == local.len() - 1 => {
                if local.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    Ok(())
                } else {
                    Err(refuse(
                        input,
                        "control or 8-bit character in quoted local part",
                    ))
                }
            }
            _ => Err(refuse(input, "unbalanced '\"' in local part")),
        };
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(refuse(input, "misplaced '.' in local part"));
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b);
    if !local.bytes().all(atext) {
        return Err(refuse(
            input,
            "local part has a character that needs quoting (space, '@', '<', ...)",
        ));
    }
    Ok(())
}
