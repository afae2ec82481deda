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

#[test]
fn the_ipv6_tag_is_read_in_any_case() {
    for text in [
        "[IPv6:2001:db8::1]",
        "[ipv6:2001:db8::1]",
        "[IPV6:2001:DB8::1]",
    ] {
        let domain = Domain::parse(text).unwrap();
        assert_eq!(
            domain.literal(),
            Some("2001:db8::1".parse().unwrap()),
            "{text}"
        );
        assert_eq!(domain.as_str(), text);
        let host = HostPort::parse(text).unwrap();
        assert_eq!(
            host.host,
            Host::Ip("2001:db8::1".parse().unwrap()),
            "{text}"
        );
    }
    assert!(Domain::parse("[IPv6:192.0.2.1]").is_err());
    assert!(HostPort::parse("[IPv6:192.0.2.1]").is_err());
}

#[test]
fn host_forms() {
    let ip = |text: &str| Host::Ip(text.parse().unwrap());
    let name = |text: &str| Host::Name(Domain::parse(text).unwrap());
    for (text, host, port, bracketed) in [
        ("mail.isp.example", name("mail.isp.example"), None, false),
        (
            "mail.isp.example:2525",
            name("mail.isp.example"),
            Some(2525),
            false,
        ),
        (
            "[mail.isp.example]:26",
            name("mail.isp.example"),
            Some(26),
            true,
        ),
        ("192.0.2.1", ip("192.0.2.1"), None, false),
        ("192.0.2.1.", ip("192.0.2.1"), None, false),
        ("192.0.2.1:26", ip("192.0.2.1"), Some(26), false),
        ("[192.0.2.1.]:26", ip("192.0.2.1"), Some(26), true),
        ("2001:db8::1", ip("2001:db8::1"), None, false),
        ("[2001:db8::1]", ip("2001:db8::1"), None, true),
        ("[IPv6:::1]:25", ip("::1"), Some(25), true),
    ] {
        let parsed = HostPort::parse(text).unwrap();
        assert_eq!(
            (parsed.host, parsed.port, parsed.bracketed),
            (host, port, bracketed),
            "{text}"
        );
    }
    for (bad, problem) in [
        ("[::1", "unbalanced '['"),
        ("[::1]25", "bad port \"25\""),
        ("[::1]:0", "bad port \"0\""),
        ("host:65536", "bad port \"65536\""),
        (
            "[bad host]",
            "\"bad host\" is neither a host name nor an IP address",
        ),
        ("2001:db8::1:x", "bad port \"x\""),
        ("a:b:25", "\"a:b\" is neither a host name nor an IP address"),
        ("a;b", "\"a;b\" is neither a host name nor an IP address"),
        ("", "\"\" is neither a host name nor an IP address"),
    ] {
        let err = HostPort::parse(bad).unwrap_err();
        assert_eq!(err.to_string(), format!("{bad:?}: {problem}"));
    }
}

#[test]
fn name_servers_are_addresses() {
    assert_eq!(
        parse_nameserver("::1").unwrap(),
        "[::1]:53".parse().unwrap()
    );
    assert_eq!(
        parse_nameserver("[192.0.2.1]").unwrap(),
        "192.0.2.1:53".parse().unwrap()
    );
    assert_eq!(
        parse_nameserver("[::1]:5353").unwrap(),
        "[::1]:5353".parse().unwrap()
    );
    assert!(matches!(
        parse_nameserver("localhost").unwrap_err().problem,
        HostProblem::NotAnAddress(_)
    ));
}
