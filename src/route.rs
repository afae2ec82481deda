//! Where mail for a domain goes: the relay targets written in the configuration.
//!
//! A target is written as sendmail's mailertable and Postfix's transport maps write it:
//! `host`, `host:port`, `[host]` or `[host]:port`. Square brackets mean "this host exactly, no MX
//! lookup"; without them the name is looked up as a mail domain (MX first). An address is never
//! looked up, bracketed or not. The forms are [`HostPort`]'s, shared with etrn-send and the name
//! servers; an IPv6 address with a port must be bracketed (`[::1]:2526`).
//!
//! Limits: one host per target; a list of fallback hosts is written as MX records, not here.

use std::fmt;

pub use crate::address::Host as RelayHost;
use crate::address::{HostError, HostPort};

/// The SMTP port, used when a target names none.
pub const SMTP_PORT: u16 = 25;

/// A static route or smart host: `[relay.isp.example]:25`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    pub host: RelayHost,
    pub port: u16,
    /// False for bracketed targets: connect to the host's own addresses, never its MX.
    pub mx_lookup: bool,
}

impl RelayTarget {
    /// Parses a target; spaces around it are ignored, and an error quotes it as written.
    pub fn parse(input: &str) -> Result<RelayTarget, HostError> {
        let HostPort {
            host,
            port,
            bracketed,
        } = HostPort::parse(input.trim()).map_err(|e| HostError {
            input: input.to_string(),
            ..e
        })?;
        let mx_lookup = !bracketed && matches!(host, RelayHost::Name(_));
        Ok(RelayTarget {
            host,
            port: port.unwrap_or(SMTP_PORT),
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
    fn an_ipv6_address_alone_is_that_address() {
        let t = RelayTarget::parse("::1").unwrap();
        assert_eq!(
            (t.to_string(), t.mx_lookup),
            ("[::1]:25".to_string(), false)
        );
        let t = RelayTarget::parse("[ipv6:::1]:2526").unwrap();
        assert_eq!(t.to_string(), "[::1]:2526");
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
