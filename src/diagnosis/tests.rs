use super::lookup::{describe_better, place_this_host};
use super::*;

fn diagnosis_with(exchangers: Vec<(u16, &str, bool)>) -> Diagnosis {
    Diagnosis {
        domain: "customer.example".into(),
        nameservers: vec![],
        routing: Routing::Mx,
        mx_error: None,
        exchangers: exchangers
            .into_iter()
            .map(|(preference, host, this_host)| Exchanger {
                preference,
                host: host.into(),
                implicit: false,
                this_host,
                cname: None,
                ip_literal: false,
                addresses: vec![],
                lookup_errors: vec![],
            })
            .collect(),
        this_host: None,
        findings: vec![],
    }
}

#[test]
fn this_host_place_names_the_better_hosts() {
    let mut d = diagnosis_with(vec![
        (10, "mx.customer.example", false),
        (20, "mx2.isp.example", true),
        (20, "mx3.isp.example", false),
    ]);
    place_this_host(&mut d);
    assert_eq!(
        d.findings[0].message,
        "this host is MX 20; 10 is mx.customer.example"
    );
    assert!(!d.this_host.unwrap().best);
}

#[test]
fn this_host_as_best_mx() {
    let mut d = diagnosis_with(vec![
        (10, "mx.customer.example", true),
        (20, "b.example", false),
    ]);
    place_this_host(&mut d);
    assert!(d.this_host.unwrap().best);
    assert!(d.findings[0].message.contains("best MX (10)"));
}

#[test]
fn better_hosts_are_grouped_by_preference() {
    let better = vec![
        (5, "a.example".to_string()),
        (10, "b.example".to_string()),
        (10, "c.example".to_string()),
    ];
    assert_eq!(
        describe_better(&better),
        "5 is a.example; 10 are b.example, c.example"
    );
}

#[test]
fn verdict_ranks_critical_over_unknown_over_warning() {
    let mut d = diagnosis_with(vec![]);
    assert_eq!(d.verdict(), Verdict::Ok);
    d.add(Severity::Note, None, "n");
    assert_eq!(d.verdict(), Verdict::Ok);
    d.add(Severity::Warning, None, "w");
    assert_eq!(d.verdict(), Verdict::Warning);
    d.add(Severity::Unknown, None, "u");
    assert_eq!(d.verdict(), Verdict::Unknown);
    d.add(Severity::Critical, None, "c");
    assert_eq!(d.verdict(), Verdict::Critical);
    assert_eq!(d.verdict().exit_code(), 2);
}
