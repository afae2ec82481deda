//! Mail addresses and domains, parsed once at the edge and typed from then on.
//!
//! A [`Domain`] is a host name of letter-digit-hyphen labels or an address literal (`[192.0.2.1]`,
//! `[IPv6:2001:db8::1]`); it is what `-R`, ETRN and routing speak, and it can never carry a space,
//! a shell metacharacter or a path separator. An [`Address`] is `local-part@domain` (RFC 5321
//! `Mailbox`) or the null reverse path `<>`. Domains keep the case they were written in, because
//! mail administrators expect to see addresses as submitted, and compare case-insensitively.
//!
//! Limits: internationalised (UTF-8) addresses are refused; an unqualified name is qualified with
//! the domain the caller supplies (this host's first name), as sendmail and Postfix do.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::sysexits::{Status, Sysexit};

/// Why an address or a domain was refused.
#[derive(Debug, thiserror::Error)]
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

/// A mail domain: a host name or an address literal, validated, compared case-insensitively.
#[derive(Debug, Clone, Eq)]
pub struct Domain(String);

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
        Ok(Domain(text.to_string()))
    }

    fn parse_literal(input: &str, text: &str) -> Result<Domain, AddressError> {
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or_else(|| refuse(input, "unbalanced '[' in address literal"))?;
        let valid = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                inner[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
        if !valid {
            return Err(refuse(input, "not an IPv4 or IPv6 address literal"));
        }
        Ok(Domain(text.to_string()))
    }

    /// `localhost`: the name of last resort for a host that has no usable name.
    pub fn localhost() -> Domain {
        Domain("localhost".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case form, for matching and for file and log keys.
    pub fn to_lowercase(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// True for `[192.0.2.1]`-style literals, which are never looked up in DNS.
    pub fn is_literal(&self) -> bool {
        self.0.starts_with('[')
    }

    /// True when `self` is `other` or lies below it (`a.b.example` is within `example`).
    pub fn is_within(&self, other: &Domain) -> bool {
        if self == other {
            return true;
        }
        let own = self.0.as_bytes();
        let parent = other.0.as_bytes();
        own.len() > parent.len() + 1
            && own[own.len() - parent.len() - 1] == b'.'
            && own[own.len() - parent.len()..].eq_ignore_ascii_case(parent)
    }
}

impl PartialEq for Domain {
    fn eq(&self, other: &Domain) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl std::hash::Hash for Domain {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Domain, AddressError> {
        Domain::parse(s)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Domain {
        Domain::parse("mx2.isp.example").unwrap()
    }

    #[test]
    fn plain_bracketed_and_routed_addresses() {
        let a = Address::parse("user@Customer.Example", &here()).unwrap();
        assert_eq!(a.to_string(), "user@Customer.Example");
        assert_eq!(a.domain(), &Domain::parse("customer.example").unwrap());
        let b = Address::parse(" <user@customer.example> ", &here()).unwrap();
        assert_eq!(b.local_part(), "user");
        let c = Address::parse("<@relay.example:user@customer.example>", &here()).unwrap();
        assert_eq!(c.to_string(), "user@customer.example");
    }

    #[test]
    fn quoted_local_part_may_hold_at_and_space() {
        let a = Address::parse("\"john doe@home\"@customer.example", &here()).unwrap();
        assert_eq!(a.local_part(), "\"john doe@home\"");
        assert_eq!(a.domain().as_str(), "customer.example");
    }

    #[test]
    fn unqualified_names_take_the_default_domain() {
        let a = Address::parse("root", &here()).unwrap();
        assert_eq!(a.to_string(), "root@mx2.isp.example");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "foo@@bar",
            "<unbalanced@customer.example",
            "a b@customer.example",
            "user@",
            "@customer.example",
            "user@-bad.example",
            "user@bad..example",
            ".user@customer.example",
            "user@[300.1.1.1]",
            "user@exa mple",
            "us;er@customer.example",
        ] {
            assert!(Address::parse(bad, &here()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn onward_routing_in_the_local_part() {
        for routed in [
            "user%evil.example@customer.example",
            "evil.example!user@customer.example",
            "\"user@evil.example\"@customer.example",
            "\"user\\@evil.example\"@customer.example",
            "\"a%b\"@customer.example",
        ] {
            let a = Address::parse_qualified(routed).unwrap();
            assert!(a.routes_onward(), "{routed}");
        }
        for plain in [
            "user@customer.example",
            "\"john doe\"@customer.example",
            "first.last+tag@customer.example",
        ] {
            let a = Address::parse_qualified(plain).unwrap();
            assert!(!a.routes_onward(), "{plain}");
        }
        assert!(!Address::postmaster(&Domain::parse("mx.example").unwrap()).routes_onward());
    }

    #[test]
    fn address_literals() {
        assert!(Domain::parse("[192.0.2.1]").unwrap().is_literal());
        assert!(Domain::parse("[IPv6:2001:db8::1]").is_ok());
        assert!(Domain::parse("[2001:db8::1]").is_err());
    }

    #[test]
    fn null_sender() {
        assert_eq!(
            ReversePath::parse("<>", &here()).unwrap(),
            ReversePath::Null
        );
        assert_eq!(ReversePath::parse("", &here()).unwrap(), ReversePath::Null);
    }

    #[test]
    fn subdomain_matching_is_by_whole_labels() {
        let parent = Domain::parse("customer.example").unwrap();
        assert!(
            Domain::parse("sub.CUSTOMER.example")
                .unwrap()
                .is_within(&parent)
        );
        assert!(
            Domain::parse("customer.example")
                .unwrap()
                .is_within(&parent)
        );
        assert!(
            !Domain::parse("xcustomer.example")
                .unwrap()
                .is_within(&parent)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9_-]{0,10}[a-zA-Z0-9])?"
    }

    /// Host names and address literals of both kinds, with or without the closing dot.
    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (proptest::collection::vec(label(), 1..5), any::<bool>())
                .prop_map(|(labels, dot)| labels.join(".") + if dot { "." } else { "" }),
            1 => any::<[u8; 4]>().prop_map(|o| format!("[{}]", Ipv4Addr::from(o))),
            1 => any::<u128>().prop_map(|a| format!("[IPv6:{}]", Ipv6Addr::from(a))),
        ]
    }

    /// Dot-atoms (with the routing characters `%` and `!` among the rest) and quoted strings
    /// with escapes, spaces, `@` and nested quotes.
    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}){0,2}",
            2 => "\"([ !#-\\[\\]-~]|\\\\[ -~]){0,20}\"",
        ]
    }

    /// An address as a command line, an envelope or an SMTP path may write it: bare or in
    /// angle brackets, with or without a source route.
    fn address() -> impl Strategy<Value = String> {
        (
            local_part(),
            domain(),
            proptest::option::of(proptest::collection::vec(label(), 1..3)),
            any::<bool>(),
        )
            .prop_map(|(local, domain, route, brackets)| {
                let route = route
                    .map(|hops| {
                        let hops: Vec<String> =
                            hops.iter().map(|h| format!("@{h}.example")).collect();
                        hops.join(",") + ":"
                    })
                    .unwrap_or_default();
                let path = format!("{route}{local}@{domain}");
                if brackets || !route.is_empty() {
                    format!("<{path}>")
                } else {
                    path
                }
            })
    }

    /// Quoted local parts with quotes inside them, escaped or not, and `@` on either side.
    fn nested_quotes() -> impl Strategy<Value = String> {
        (
            "\"([a-z@ ]{0,4}(\\\\?\"|\\\\\\\\)){1,4}[a-z@]{0,4}\"?",
            domain(),
            any::<bool>(),
        )
            .prop_map(|(local, domain, brackets)| {
                let path = format!("{local}@{domain}");
                if brackets { format!("<{path}>") } else { path }
            })
    }

    fn here() -> Domain {
        Domain::parse("mx.example").unwrap()
    }

    /// Everything an accepted address promises: its parts are valid on their own and it reads
    /// back from its own text as itself.
    fn check_accepted(address: &Address) {
        validate_local(address.local_part()).unwrap();
        assert_eq!(
            &Domain::parse(address.domain().as_str()).unwrap(),
            address.domain()
        );
        let again = Address::parse_qualified(&address.to_string()).unwrap();
        assert_eq!(&again, address);
        assert_eq!(again.local_part(), address.local_part());
        assert_eq!(again.domain().as_str(), address.domain().as_str());
        assert_eq!(again.routes_onward(), address.routes_onward());
    }

    /// Every parser on one input: no panic, and whatever is accepted holds its promises.
    fn parse_everything(input: &str) {
        let (results, most) = peak(|| {
            (
                Domain::parse(input),
                Address::parse(input, &here()),
                Address::parse_qualified(input),
                ReversePath::parse(input, &here()),
                validate_local(input),
            )
        });
        // Each result copies at most the input (an error names it): five of them, and the
        // reasons are static.
        assert!(
            most <= 6 * input.len() + 1024,
            "{most} bytes for {} octets",
            input.len()
        );
        let (domain, address, qualified, reverse, _) = results;
        if let Ok(domain) = domain {
            assert_eq!(
                Domain::parse(domain.as_str()).unwrap().as_str(),
                domain.as_str()
            );
        }
        if let Ok(address) = &address {
            check_accepted(address);
        }
        if let Ok(qualified) = &qualified {
            check_accepted(qualified);
            assert_eq!(address.as_ref().ok(), Some(qualified), "{input:?}");
        }
        if let Ok(ReversePath::Mailbox(address)) = reverse {
            check_accepted(&address);
        }
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn any_text_is_parsed_or_refused(input in text(200)) {
            parse_everything(&input);
        }

        #[test]
        fn near_valid_addresses_are_parsed_or_refused(
            input in prop_oneof![mutated_text(address()), nested_quotes()]
        ) {
            parse_everything(&input);
        }

        #[test]
        fn valid_addresses_are_accepted_and_read_back(input in address()) {
            let address = Address::parse_qualified(&input).unwrap();
            check_accepted(&address);
            let quoted_at = address.local_part().starts_with('"')
                && address.local_part().contains('@');
            if quoted_at {
                prop_assert!(address.routes_onward());
            }
        }

        #[test]
        fn domains_compare_and_hash_without_case(input in domain()) {
            use std::hash::BuildHasher;
            let domain = Domain::parse(&input).unwrap();
            let upper = Domain::parse(&input.to_ascii_uppercase()).unwrap();
            prop_assert_eq!(&domain, &upper);
            let hasher = std::collections::hash_map::RandomState::new();
            prop_assert_eq!(hasher.hash_one(&domain), hasher.hash_one(&upper));
            prop_assert!(domain.is_within(&upper));
        }
    }

    #[test]
    fn a_ten_megabyte_address_costs_its_copy_in_the_error() {
        let input = format!("{}@{}", "a".repeat(10 << 20), "b.example");
        let (result, most) = peak(|| Address::parse_qualified(&input));
        assert!(result.is_err());
        assert!(most <= input.len() + 1024, "{most}");
    }
}
