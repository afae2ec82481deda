//! Per-domain policy end to end: queue lifetimes per domain, over a real queue and real runs.

mod support;

use support::daemon::free_port;
use support::site::{SENDER, Site, message};

const DAY: i64 = 86400;

/// A backup MX holding customer.test for 30 days (its own ETRN domain) and everything else for
/// the global 5; every route goes to a port where nobody listens, so runs defer.
fn backup_mx(extra: &str) -> Site {
    let route = format!("[127.0.0.1]:{}", free_port());
    Site::new(&format!(
        "relay_domains = [\"customer.test\"]\n\
         hold_domains = [\"customer.test\"]\n\
         {extra}\n\
         [queue_lifetimes]\n\
         \"customer.test\" = \"30d\"\n\
         [routes]\n\
         \"customer.test\" = {route:?}\n\
         \"other.test\" = {route:?}\n\
         \"sender.test\" = {route:?}\n"
    ))
}

fn enqueue(site: &Site, recipients: &[&str], subject: &str) -> String {
    let mut args = vec!["-f", SENDER];
    args.extend_from_slice(recipients);
    site.enqueue(&args, &message(subject, "body\n"))
}

/// The notices in the queue (sender `<>`), with their text.
fn notices(site: &Site) -> Vec<String> {
    site.ids()
        .iter()
        .map(|id| site.message(id))
        .filter(|m| m.envelope.sender.is_empty())
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect()
}

#[test]
fn a_held_domain_with_thirty_days_outlives_the_global_five() {
    let site = backup_mx("");
    let site_mail = enqueue(&site, &["u@customer.test"], "for the site");
    let elsewhere = enqueue(&site, &["v@other.test"], "elsewhere");
    let both = enqueue(&site, &["w@customer.test", "x@other.test"], "both");
    for id in [&site_mail, &elsewhere, &both] {
        site.age(id, 6 * DAY);
    }
    site.run(&[]);
    let ids = site.ids();
    assert!(ids.contains(&site_mail), "30 days for the site's mail");
    assert!(!ids.contains(&elsewhere), "5 days for the rest");
    let both_now = site.message(&both).envelope;
    assert_eq!(
        both_now
            .rcpts
            .iter()
            .map(|r| (r.address.as_str(), r.status.as_str()))
            .collect::<Vec<_>>(),
        [("w@customer.test", "pending"), ("x@other.test", "failed")],
        "each recipient by its own domain's lifetime"
    );
    let sent = notices(&site);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|n| n.contains("message expired after 5d in the queue"))
    );
    assert!(
        sent.iter()
            .any(|n| n.contains("Final-Recipient: rfc822; x@other.test"))
    );
    assert!(!sent.iter().any(|n| n.contains("customer.test")));

    // -R and ETRN runs keep to the same lifetimes; a day short of 30 nothing more goes.
    for id in [&site_mail, &both] {
        site.age(id, 23 * DAY);
    }
    site.run(&["-R", "customer.test"]);
    assert_eq!(notices(&site).len(), 2);
    assert!(site.ids().contains(&site_mail) && site.ids().contains(&both));

    for id in [&site_mail, &both] {
        site.age(id, 2 * DAY);
    }
    site.run(&[]);
    let ids = site.ids();
    assert!(!ids.contains(&site_mail) && !ids.contains(&both), "{ids:?}");
    let sent = notices(&site);
    assert_eq!(sent.len(), 4, "one notice per expiry: {sent:?}");
    let late: Vec<&String> = sent
        .iter()
        .filter(|n| n.contains("message expired after 30d in the queue"))
        .collect();
    assert_eq!(late.len(), 2, "{sent:?}");
    assert!(
        late.iter()
            .any(|n| n.contains("Final-Recipient: rfc822; w@customer.test"))
    );
}

#[test]
fn a_held_message_does_not_expire_and_is_returned_once_released() {
    let site = backup_mx("");
    let id = enqueue(&site, &["v@other.test"], "on hold");
    let held = site
        .command("queue-admin")
        .args(["hold", &id])
        .output()
        .expect("queue-admin");
    assert!(held.status.success(), "{held:?}");
    // Aged in hold/: the envelope is there while held.
    let path = site.queue_dir().join("hold").join(&id);
    let text = std::fs::read_to_string(&path).expect("held envelope");
    let aged: String = text
        .lines()
        .map(|l| match l.strip_prefix("arrival\t") {
            Some(t) => format!(
                "arrival\t{}\n",
                t.parse::<i64>().expect("arrival") - 6 * DAY
            ),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, aged).expect("age it");
    site.run(&["-f"]);
    site.run(&["-I", &id]);
    assert_eq!(
        site.files("hold"),
        std::slice::from_ref(&id),
        "held mail does not expire"
    );
    assert!(notices(&site).is_empty());

    let out = site
        .command("queue-admin")
        .args(["release", &id])
        .output()
        .expect("queue-admin");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!(
            "{id}: released; older than its queue lifetime, so the next run returns it to its sender"
        )
    );
    site.run(&[]);
    assert!(!site.ids().contains(&id));
    assert_eq!(notices(&site).len(), 1);
}

/// The delay warnings in the queue: notices whose report says `Action: delayed`.
fn warnings(site: &Site) -> Vec<String> {
    notices(site)
        .into_iter()
        .filter(|n| n.contains("Action: delayed"))
        .collect()
}

#[test]
fn one_delay_warning_per_late_message_and_none_for_held_domains_or_the_null_sender() {
    let site = backup_mx("delay_warning = \"4h\"");
    let late = enqueue(&site, &["v@other.test"], "late");
    let mixed = enqueue(&site, &["w@customer.test", "x@other.test"], "mixed");
    let site_only = enqueue(&site, &["u@customer.test"], "for the site");
    let from_nobody = site.enqueue(&["-f", "", "y@other.test"], &message("nobody", "b\n"));
    let no_delay = enqueue(
        &site,
        &["-N", "failure", "z@other.test"],
        "no delay notices",
    );
    let early = enqueue(&site, &["e@other.test"], "early");
    for id in [&late, &mixed, &site_only, &from_nobody, &no_delay] {
        site.age(id, 5 * 3600);
    }
    site.age(&early, 3 * 3600);
    site.run(&[]);
    let sent = warnings(&site);
    assert_eq!(sent.len(), 2, "late and mixed: {sent:?}");
    for text in &sent {
        assert!(
            text.contains("Subject: Delayed Mail (still being retried)"),
            "{text}"
        );
        assert!(text.contains("Will-Retry-Until: "), "{text}");
        assert!(
            !text.contains("Final-Recipient: rfc822; w@customer.test"),
            "{text}"
        );
        assert!(
            !text.contains("Final-Recipient: rfc822; u@customer.test"),
            "{text}"
        );
    }
    assert!(
        sent.iter()
            .any(|t| t.contains("Final-Recipient: rfc822; x@other.test"))
    );
    assert!(
        sent.iter()
            .any(|t| t.contains("Final-Recipient: rfc822; v@other.test"))
    );
    for id in [&late, &mixed] {
        assert!(
            site.message(id).envelope.warned.is_some(),
            "recorded in {id}"
        );
    }
    assert!(site.message(&site_only).envelope.warned.is_none());

    // Later runs of every kind warn no more, however late the mail gets.
    for id in [&late, &mixed, &site_only, &from_nobody, &no_delay, &early] {
        site.age(id, 2 * 3600);
    }
    site.run(&[]);
    site.run(&["-f"]);
    site.run(&["-R", "customer.test"]);
    let sent = warnings(&site);
    assert_eq!(sent.len(), 3, "only the early one is new now: {sent:?}");
    assert!(
        sent.iter()
            .any(|t| t.contains("Final-Recipient: rfc822; e@other.test"))
    );
    let log = site.log();
    assert_eq!(log.matches("sender delay notification").count(), 3, "{log}");
}

#[test]
fn delay_warnings_are_off_by_default() {
    let site = backup_mx("");
    let id = enqueue(&site, &["v@other.test"], "late");
    site.age(&id, 4 * DAY);
    site.run(&[]);
    site.run(&["-f"]);
    assert!(warnings(&site).is_empty());
    assert!(site.message(&id).envelope.warned.is_none());
}
