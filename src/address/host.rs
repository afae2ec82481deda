//! Hosts to connect to, with an optional port, as the configuration and the command lines write
//! them: the one reader behind routes and the smart host, etrn-send's SERVER and the name
//! servers.
//!
//! The forms, each with an optional `:PORT` (1 to 65535):
//!
//! ```text
//! mail.isp.example          a host name
//! 192.0.2.1                 an IPv4 address
//! 2001:db8::1               an IPv6 address, whole: it can carry no port
//! [mail.isp.example]        brackets: this host exactly (routes: no MX lookup)
//! [192.0.2.1]  [2001:db8::1]  [IPv6:2001:db8::1]
//! ```
//!
//! The `IPv6:` tag of RFC 5321's address literals is accepted in any case wherever brackets
//! are. An address with a closing dot (`192.0.2.1.`) is that address, not a name. What a caller
//! does with the result is its own: routes take a name in brackets as "no MX lookup", etrn-send
//! takes only addresses in brackets, name servers take only addresses.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::{AddressError, Domain};

/// A host to connect to: a name to look up, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(Domain),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => name.fmt(f),
            Host::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A host and its port as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: Option<u16>,
    /// Written in square brackets.
    pub bracketed: bool,
}

/// Why a host was refused: the input, and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{input:?}: {problem}")]
pub struct HostError {
    pub input: String,
    pub problem: HostProblem,
}

/// What is wrong with a host as written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostProblem {
    #[error("unbalanced '['")]
    Unbalanced,
    /// The text after the host is not `:` and a port from 1 to 65535.
    #[error("bad port {0:?}")]
    BadPort(String),
    /// Inside brackets: neither a host name nor an address.
    #[error("{0:?} is neither a host name nor an IP address")]
    BadBracketed(String),
    /// An IPv6 address followed by a port, which only brackets can tell apart.
    #[error("{0:?} is neither a host name nor an IP address")]
    NeedsBrackets(String),
    /// A name where only an address will do.
    #[error("{0} is not an IP address")]
    NotAnAddress(Domain),
    /// Neither a host name nor an address; the reason the name was refused.
    #[error("{:?} is neither a host name nor an IP address", .0.input)]
    BadHost(AddressError),
}

impl HostPort {
    /// Parses one of the forms above, exactly as given (no spaces around it).
    pub fn parse(input: &str) -> Result<HostPort, HostError> {
        let refuse = |problem| HostError {
            input: input.to_string(),
            problem,
        };
        if let Some(rest) = input.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| refuse(HostProblem::Unbalanced))?;
            let host = bracketed_host(inside)
                .ok_or_else(|| refuse(HostProblem::BadBracketed(inside.to_string())))?;
            let port = match after {
                "" => None,
                tail => {
                    let digits = tail.strip_prefix(':').unwrap_or(tail);
                    match tail.strip_prefix(':').and_then(port) {
                        Some(port) => Some(port),
                        None => return Err(refuse(HostProblem::BadPort(digits.to_string()))),
                    }
                }
            };
            return Ok(HostPort {
                host,
                port,
                bracketed: true,
            });
        }
        if let Some(ip) = address(input) {
            return Ok(HostPort {
                host: Host::Ip(ip),
                port: None,
                bracketed: false,
            });
        }
        let (host, port) = match input.rsplit_once(':') {
            Some((host, digits)) => (
                host,
                Some(port(digits).ok_or_else(|| refuse(HostProblem::BadPort(digits.to_string())))?),
            ),
            None => (input, None),
        };
        let host = match address(host) {
            Some(ip) => Host::Ip(ip),
            None if host.contains(':') => {
                return Err(refuse(HostProblem::NeedsBrackets(host.to_string())));
            }
            // Not bracketed, so never a literal.
            None => Host::Name(Domain::parse(host).map_err(|e| refuse(HostProblem::BadHost(e)))?),
        };
        Ok(HostPort {
            host,
            port,
            bracketed: false,
        })
    }
}

/// A port from 1 to 65535: port 0 reaches nothing.
fn port(digits: &str) -> Option<u16> {
    digits.parse().ok().filter(|&port| port > 0)
}

/// An address, with or without the closing dot of a fully qualified name.
fn address(text: &str) -> Option<IpAddr> {
    text.strip_suffix('.').unwrap_or(text).parse().ok()
}

/// What brackets may hold: an address (tagged or not, with or without a closing dot) or a host
/// name.
fn bracketed_host(inside: &str) -> Option<Host> {
    if let Some((ip, _)) = literal_ip(inside.strip_suffix('.').unwrap_or(inside)) {
        return Some(Host::Ip(ip));
    }
    match Domain::parse(inside) {
        Ok(name @ Domain::Name(_)) => Some(Host::Name(name)),
        _ => None,
    }
}

/// The address inside an address literal's brackets, and whether it carried the `IPv6:` tag
/// (in any case, RFC 5321 §4.1.3); after the tag only an IPv6 address is taken.
pub(super) fn literal_ip(inner: &str) -> Option<(IpAddr, bool)> {
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| (IpAddr::V6(ip), true)),
        _ => inner.parse().ok().map(|ip| (ip, false)),
    }
}

/// A name server: an address (a name would need a name server to find it) and a port, 53
/// unless given.
pub fn parse_nameserver(input: &str) -> Result<std::net::SocketAddr, HostError> {
    match HostPort::parse(input)? {
        HostPort {
            host: Host::Ip(ip),
            port,
            ..
        } => Ok(std::net::SocketAddr::new(ip, port.unwrap_or(53))),
        HostPort {
            host: Host::Name(name),
            ..
        } => Err(HostError {
            input: input.to_string(),
            problem: HostProblem::NotAnAddress(name),
        }),
    }
}
