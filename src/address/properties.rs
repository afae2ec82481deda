use super::*;
use crate::properties::{config, mutated_text, peak, text};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

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
                    let hops: Vec<String> = hops.iter().map(|h| format!("@{h}.example")).collect();
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
