//! Where mail for a domain goes: the relay targets written in the configuration.
//!
//! A target is written as sendmail's mailertable and Postfix's transport maps write it:
//! `host`, `host:port`, `[host]` or `[host]:port`. Square brackets mean "this host exactly, no MX
//! lookup"; without them the name is looked up as a mail domain (MX first). An IPv6 address must be
//! bracketed (`[::1]:2526`).

use std::fmt;
use std::net::IpAddr;

use crate::address::Domain;

/// The SMTP port, used when a target names none.
pub const SMTP_PORT: u16 = 25;

/// A host to relay through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayHost {
    Name(Domain),
    Ip(IpAddr),
}

impl fmt::Display for RelayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayHost::Name(name) => name.fmt(f),
            RelayHost::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A static route or smart host: `[relay.isp.example]:25`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    pub host: RelayHost,
    pub port: u16,
    /// False for bracketed targets: connect to the host's own addresses, never its MX.
    pub mx_lookup: bool,
}

impl RelayTarget {
    pub fn parse(input: &str) -> Result<RelayTarget, String> {
        let text = input.trim();
        if let Some(rest) = text.strip_prefix('[') {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("{input:?}: unbalanced '['"))?;
            let host = parse_host(&rest[..close], input)?;
            let port = match &rest[close + 1..] {
                "" => SMTP_PORT,
                tail => parse_port(tail.strip_prefix(':').unwrap_or("x"), input)?,
            };
            return Ok(RelayTarget {
                host,
                port,
                mx_lookup: false,
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port, input)?),
            None => (text, SMTP_PORT),
        };
        let host = parse_host(host, input)?;
        let mx_lookup = matches!(host, RelayHost::Name(_));
        Ok(RelayTarget {
            host,
            port,
            mx_lookup,
        })
    }
}

impl fmt::Display for RelayTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mx_lookup {
            write!(f, "{}:{}", self.host, self.port)
        } else {
            write!(f, "[{}]:{}", self.host, self.port)
        }
    }
}

fn parse_host(text: &str, input: &str) -> Result<RelayHost, String> {
    // The closing dot of a fully qualified name does not make an address a name.
    if let Ok(ip) = text.strip_suffix('.').unwrap_or(text).parse::<IpAddr>() {
        return Ok(RelayHost::Ip(ip));
    }
    Domain::parse(text)
        .ok()
        .filter(|d| !d.is_literal())
        .map(RelayHost::Name)
        .ok_or_else(|| format!("{input:?}: {text:?} is neither a host name nor an IP address"))
}

fn parse_port(text: &str, input: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{input:?}: bad port {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        let t = RelayTarget::parse("[127.0.0.1]:2526").unwrap();
        assert_eq!(t.host, RelayHost::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!((t.port, t.mx_lookup), (2526, false));
        let t = RelayTarget::parse("relay.isp.example").unwrap();
        assert_eq!((t.port, t.mx_lookup), (25, true));
        let t = RelayTarget::parse("[relay.isp.example]").unwrap();
        assert_eq!((t.port, t.mx_lookup), (25, false));
        let t = RelayTarget::parse("[::1]:2526").unwrap();
        assert_eq!(t.to_string(), "[::1]:2526");
    }

    #[test]
    fn an_address_with_a_closing_dot_is_that_address() {
        for (text, shown) in [
            ("127.0.0.1.", "[127.0.0.1]:25"),
            ("[192.0.2.1.]:2526", "[192.0.2.1]:2526"),
        ] {
            let t = RelayTarget::parse(text).unwrap();
            assert!(matches!(t.host, RelayHost::Ip(_)), "{text}");
            assert_eq!(t.to_string(), shown);
            assert_eq!(RelayTarget::parse(shown).unwrap(), t);
        }
    }

    #[test]
    fn bad_targets() {
        for bad in [
            "[127.0.0.1",
            "host:0",
            "host:port",
            "[::1]x",
            "bad host",
            "",
        ] {
            assert!(RelayTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn target() -> impl Strategy<Value = String> {
        let name = "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,6}){0,3}";
        prop_oneof![
            name,
            (name, any::<u16>()).prop_map(|(n, p)| format!("{n}:{p}")),
            (name, any::<u16>()).prop_map(|(n, p)| format!("[{n}]:{p}")),
            (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, p)| format!("[{ip}]:{p}")),
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        ]
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn targets_read_back_as_written(input in prop_oneof![text(60), mutated_text(target())]) {
            let (parsed, most) = peak(|| RelayTarget::parse(&input));
            // An error quotes the input twice, escaped: up to six octets for each.
            prop_assert!(most <= 32 * input.len() + 512, "{} bytes", most);
            let Ok(target) = parsed else { return Ok(()) };
            prop_assert!(target.port > 0);
            let again = RelayTarget::parse(&target.to_string()).unwrap();
            prop_assert_eq!(
                (&again.host, again.port, again.mx_lookup),
                (&target.host, target.port, target.mx_lookup)
            );
        }
    }
}
