//! The dns module against a real authoritative server on loopback.
//!
//! What queue-run's MX routing will get for each kind of domain: preference order, the backup
//! MX's better hosts, null and implicit MX, and errors told apart.

mod support;

use std::time::Duration;

use etrnq::address::Domain;
use etrnq::dns::{DnsError, MxList, Query, Resolver};

use support::dns::{DnsServer, SilentDns};

fn resolver(dns: &DnsServer) -> Resolver {
    let addr = dns.addr_text.parse().expect("server address");
    Resolver::with_nameservers(&[addr], Duration::from_secs(2)).expect("resolver")
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).expect("domain")
}

fn route(resolver: &Resolver, name: &str, ours: &[&str]) -> Result<MxList, DnsError> {
    let ours: Vec<Domain> = ours.iter().map(|n| domain(n)).collect();
    resolver.mail_exchangers(&domain(name), &ours, &mut fastrand::Rng::with_seed(5))
}

fn hosts(list: &MxList) -> Vec<(u16, String)> {
    list.hosts()
        .iter()
        .map(|mx| (mx.preference, mx.host.to_string()))
        .collect()
}

#[test]
fn mx_records_in_preference_order() {
    let dns = DnsServer::start();
    let resolver = resolver(&dns);
    let list = route(&resolver, "customer.example", &[]).expect("route");
    let found = hosts(&list);
    assert_eq!(found[0], (10, "mx.customer.example".to_string()));
    let mut backups: Vec<String> = found[1..].iter().map(|(_, h)| h.clone()).collect();
    backups.sort();
    assert_eq!(backups, ["mx2.isp.example", "mx3.isp.example"]);
    assert!(matches!(list, MxList::Exchangers(_)));
}

#[test]
fn backup_mx_relays_only_to_better_hosts() {
    let dns = DnsServer::start();
    let resolver = resolver(&dns);
    let list = route(&resolver, "customer.example", &["mx3.isp.example"]).expect("route");
    assert_eq!(hosts(&list), [(10, "mx.customer.example".to_string())]);
    let best = route(&resolver, "customer.example", &["mx.customer.example"]).expect("route");
    assert_eq!(best, MxList::ThisHostIsBest { preference: 10 });
}

#[test]
fn null_mx_implicit_mx_and_nothing() {
    let dns = DnsServer::start();
    let resolver = resolver(&dns);
    assert_eq!(route(&resolver, "nullmx.example", &[]), Ok(MxList::NullMx));
    let implicit = route(&resolver, "implicit.example", &[]).expect("route");
    assert!(matches!(&implicit, MxList::Implicit(mx) if mx.host == domain("implicit.example")));
    let nothing = route(&resolver, "nothing.example", &[]).unwrap_err();
    assert_eq!(nothing.kind(), "nodata", "{nothing}");
    assert!(!nothing.is_transient());
}

#[test]
fn errors_are_told_apart() {
    let dns = DnsServer::start();
    let resolver = resolver(&dns);
    let nx = route(&resolver, "no-such-domain.example", &[]).unwrap_err();
    assert!(
        matches!(
            nx,
            DnsError::NxDomain {
                query: Query::Mx,
                ..
            }
        ),
        "{nx}"
    );
    let servfail = route(&resolver, "servfail.example", &[]).unwrap_err();
    assert!(matches!(servfail, DnsError::ServFail { .. }), "{servfail}");
    assert!(servfail.is_transient());

    let silent = SilentDns::start();
    let quiet = Resolver::with_nameservers(&[silent.addr], Duration::from_millis(300)).unwrap();
    let timeout = quiet.mx(&domain("customer.example")).unwrap_err();
    assert!(matches!(timeout, DnsError::Timeout { .. }), "{timeout}");
}

#[test]
fn addresses_aliases_and_reverse_names() {
    let dns = DnsServer::start();
    let resolver = resolver(&dns);
    assert_eq!(
        resolver.ipv4("mx2.isp.example").unwrap(),
        ["192.0.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        resolver.ipv6("mx.customer.example").unwrap(),
        [std::net::Ipv6Addr::LOCALHOST]
    );
    assert_eq!(
        resolver.cname("alias.aliased.example").unwrap().as_deref(),
        Some("mx.customer.example")
    );
    assert_eq!(resolver.cname("mx.customer.example").unwrap(), None);
    assert_eq!(
        resolver.reverse("192.0.2.3".parse().unwrap()).unwrap(),
        ["mx2.isp.example"]
    );
}
