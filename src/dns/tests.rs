use super::resolver::classify;
use super::*;
use crate::address::Domain;
use hickory_resolver::net::{DnsError as WireError, NetError};
use hickory_resolver::proto::op::ResponseCode;

fn mx(preference: u16, exchange: &str) -> MxRecord {
    MxRecord {
        preference,
        exchange: exchange.to_string(),
    }
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

fn names(ordered: &Ordered) -> Vec<(u16, String)> {
    match ordered {
        Ordered::Hosts(hosts) => hosts
            .iter()
            .map(|mx| (mx.preference, mx.host.to_string()))
            .collect(),
        other => panic!("expected hosts, got {other:?}"),
    }
}

#[test]
fn sorted_by_preference() {
    let records = [
        mx(30, "c.example"),
        mx(10, "a.example"),
        mx(20, "b.example"),
    ];
    let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
    assert_eq!(
        names(&ordered),
        [
            (10, "a.example".to_string()),
            (20, "b.example".to_string()),
            (30, "c.example".to_string())
        ]
    );
}

#[test]
fn equal_preferences_are_shuffled_within_their_group_only() {
    let records = [
        mx(20, "b1.example"),
        mx(20, "b2.example"),
        mx(20, "b3.example"),
        mx(10, "a.example"),
        mx(30, "c.example"),
    ];
    let mut seen_first_of_group = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(seed));
        let hosts = names(&ordered);
        assert_eq!(hosts[0], (10, "a.example".to_string()));
        assert_eq!(hosts[4], (30, "c.example".to_string()));
        assert!(hosts[1..4].iter().all(|(p, _)| *p == 20));
        seen_first_of_group.insert(hosts[1].1.clone());
    }
    assert_eq!(
        seen_first_of_group.len(),
        3,
        "equal preferences never shuffled"
    );
}

#[test]
fn same_seed_same_order() {
    let records = [
        mx(10, "a.example"),
        mx(10, "b.example"),
        mx(10, "c.example"),
    ];
    let first = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(7));
    let again = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(7));
    assert_eq!(first, again);
}

#[test]
fn null_mx_is_its_own_outcome() {
    let ordered = order_exchangers(&[mx(0, ".")], &[], &mut fastrand::Rng::with_seed(1));
    assert_eq!(ordered, Ordered::NullMx);
}

#[test]
fn a_root_target_among_others_is_skipped() {
    let records = [mx(0, "."), mx(10, "a.example")];
    let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
    assert_eq!(names(&ordered), [(10, "a.example".to_string())]);
}

#[test]
fn backup_mx_keeps_only_strictly_better_hosts() {
    let records = [
        mx(10, "mx.customer.example"),
        mx(20, "MX2.isp.example"),
        mx(20, "mx3.isp.example"),
        mx(30, "mx4.isp.example"),
    ];
    let ours = [domain("mx2.isp.example")];
    let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
    assert_eq!(names(&ordered), [(10, "mx.customer.example".to_string())]);
}

#[test]
fn our_lowest_entry_counts_when_listed_twice() {
    let records = [
        mx(5, "other.example"),
        mx(10, "mx2.isp.example"),
        mx(50, "mx2.isp.example"),
    ];
    let ours = [domain("mx2.isp.example")];
    let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
    assert_eq!(names(&ordered), [(5, "other.example".to_string())]);
}

#[test]
fn best_mx_is_a_distinct_outcome() {
    let records = [mx(10, "mx.customer.example"), mx(10, "peer.example")];
    let ours = [domain("alias.example"), domain("mx.customer.example")];
    let ordered = order_exchangers(&records, &ours, &mut fastrand::Rng::with_seed(1));
    assert_eq!(ordered, Ordered::ThisHostIsBest { preference: 10 });
}

#[test]
fn unusable_targets_are_dropped() {
    let records = [mx(10, "bad name.example"), mx(20, "good.example")];
    let ordered = order_exchangers(&records, &[], &mut fastrand::Rng::with_seed(1));
    assert_eq!(names(&ordered), [(20, "good.example".to_string())]);
}

#[test]
fn mx_list_hosts() {
    assert!(MxList::NullMx.hosts().is_empty());
    assert!(MxList::ThisHostIsBest { preference: 10 }.hosts().is_empty());
    let implicit = MxList::Implicit(MailExchanger {
        preference: 0,
        host: domain("customer.example"),
    });
    assert_eq!(implicit.hosts().len(), 1);
}

#[test]
fn error_classes() {
    let servfail = DnsError::ServFail {
        name: "x.example".into(),
        query: Query::Mx,
    };
    let nx = DnsError::NxDomain {
        name: "x.example".into(),
        query: Query::Mx,
    };
    assert!(servfail.is_transient());
    assert!(!nx.is_transient());
    assert_eq!(servfail.status(), Status::TempFail);
    assert_eq!(nx.status(), Status::NoHost);
    assert_eq!(nx.to_string(), "x.example: no such domain (NXDOMAIN)");
    assert_ne!(servfail.kind(), nx.kind());
}

#[test]
fn wire_errors_are_classified() {
    let timeout = Duration::from_secs(1);
    let servfail = NetError::Dns(WireError::ResponseCode(ResponseCode::ServFail));
    assert_eq!(
        classify(servfail, "x.example", Query::Mx, timeout).kind(),
        "servfail"
    );
    let refused = NetError::Dns(WireError::ResponseCode(ResponseCode::Refused));
    assert_eq!(
        classify(refused, "x.example", Query::Mx, timeout).kind(),
        "error"
    );
    assert_eq!(
        classify(NetError::Timeout, "x.example", Query::A, timeout).kind(),
        "timeout"
    );
}
