//! A mail domain: a host name or an address literal, validated once, compared without case.
//!
//! A host name is letter-digit-hyphen labels (and `_`, which real zones hold), at most 253
//! characters, labels of at most 63; one closing dot is accepted and dropped. An address literal
//! is RFC 5321's: `[192.0.2.1]` or `[IPv6:2001:db8::1]`, the tag in any case; an IPv6 address
//! without its tag is refused, as RFC 5321 §4.1.3 writes none.
//!
//! A domain keeps the text it was written in (case, and a literal's spelling), which is what
//! envelopes store and logs print; equality and hashing ignore ASCII case, so `Customer.Example`
//! and `customer.example` are one domain.

use std::fmt;
use std::net::IpAddr;

use super::host::literal_ip;
use super::{AddressError, refuse};

/// A mail domain: a host name or an address literal.
#[derive(Debug, Clone)]
pub enum Domain {
    /// A host name, as written (without the closing dot).
    Name(Name),
    /// An address literal, never looked up in the DNS.
    Literal(Literal),
}

/// A validated host name, as written.
#[derive(Debug, Clone)]
pub struct Name(String);

/// An address literal: the address, and the text as written (brackets and tag included).
#[derive(Debug, Clone)]
pub struct Literal {
    ip: IpAddr,
    text: String,
}

impl Literal {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Domain {
    /// Parses a domain as written in an address, on a command line or after ETRN. One trailing dot
    /// (a fully qualified name) is accepted and dropped.
    pub fn parse(input: &str) -> Result<Domain, AddressError> {
        let text = input.strip_suffix('.').unwrap_or(input);
        if text.starts_with('[') {
            return Self::parse_literal(input, text);
        }
        if text.is_empty() {
            return Err(refuse(input, "empty domain"));
        }
        if text.len() > 253 {
            return Err(refuse(input, "domain longer than 253 characters"));
        }
        for label in text.split('.') {
            if label.is_empty() {
                return Err(refuse(input, "empty label in domain"));
            }
            if label.len() > 63 {
                return Err(refuse(input, "domain label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(refuse(
                    input,
                    "domain may contain only letters, digits, '-' and '.'",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(refuse(input, "domain label starts or ends with '-'"));
            }
        }
        Ok(Domain::Name(Name(text.to_string())))
    }

    fn parse_literal(input: &str, text: &str) -> Result<Domain, AddressError> {
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or_else(|| refuse(input, "unbalanced '[' in address literal"))?;
        match literal_ip(inner) {
            Some((ip, tagged)) if tagged || ip.is_ipv4() => Ok(Domain::Literal(Literal {
                ip,
                text: text.to_string(),
            })),
            _ => Err(refuse(input, "not an IPv4 or IPv6 address literal")),
        }
    }

    /// `localhost`: the name of last resort for a host that has no usable name.
    pub fn localhost() -> Domain {
        Domain::Name(Name("localhost".to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Domain::Name(Name(text)) => text,
            Domain::Literal(literal) => &literal.text,
        }
    }

    /// The lower-case form, for matching and for file and log keys.
    pub fn to_lowercase(&self) -> String {
        self.as_str().to_ascii_lowercase()
    }

    /// True for `[192.0.2.1]`-style literals, which are never looked up in DNS.
    pub fn is_literal(&self) -> bool {
        matches!(self, Domain::Literal(_))
    }

    /// The address of a literal; `None` for a host name.
    pub fn literal(&self) -> Option<IpAddr> {
        match self {
            Domain::Name(_) => None,
            Domain::Literal(literal) => Some(literal.ip),
        }
    }

    /// True when `self` is `other` or lies below it (`a.b.example` is within `example`).
    pub fn is_within(&self, other: &Domain) -> bool {
        if self == other {
            return true;
        }
        let own = self.as_str().as_bytes();
        let parent = other.as_str().as_bytes();
        own.len() > parent.len() + 1
            && own[own.len() - parent.len() - 1] == b'.'
            && own[own.len() - parent.len()..].eq_ignore_ascii_case(parent)
    }
}

impl PartialEq for Domain {
    fn eq(&self, other: &Domain) -> bool {
        self.as_str().eq_ignore_ascii_case(other.as_str())
    }
}

impl Eq for Domain {}

impl std::hash::Hash for Domain {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.as_str().bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Domain, AddressError> {
        Domain::parse(s)
    }
}
