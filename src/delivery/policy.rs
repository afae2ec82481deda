//! The rules of one run: which recipients it attempts now, and where each one's mail goes.
//!
//! The same rules decide twice: when the run plans, from envelopes read without a lock, and
//! again once a message is locked and its envelope read afresh, so that what another run moved
//! on in between is not attempted on a stale view.
//!
//! A recipient is attempted when it is still owed a delivery and has not expired, the run's selection (`-R`, `-S`,
//! `-I`) takes it and its message, and either the run names what it wants (a selection or `-f`)
//! or its next attempt is due. A held domain is attempted only by a run that names domains with
//! `-R`. Mail goes by the static route for its domain (matched exactly, without case), else by
//! the smart host, else to the MX hosts of its domain.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::address::Domain;
use crate::config::Config;
use crate::queue::QueueId;
use crate::queue::envelope::Envelope;
use crate::route::RelayTarget;
use crate::smtp::TlsClient;

use super::{RunOptions, retry};

/// Where a recipient's mail goes next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Destination {
    /// A static route or the smart host.
    Relay(String),
    /// The MX hosts of a domain.
    Domain(String),
    /// The connection of an ODMR customer (see `turnaround`).
    Turnaround,
}

/// The rules of this run, applied the same way when planning and after locking.
pub(super) struct Policy<'a> {
    pub(super) config: &'a Config,
    pub(super) options: &'a RunOptions,
    pub(super) now: i64,
    pub(super) here: Domain,
    /// How every session of the run checks certificates: not at all, as TLS here encrypts
    /// without authenticating the server. One client for the run reads the trust store once.
    pub(super) tls: TlsClient,
    /// Messages that were under way when a connection failed: for the rest of the run each is
    /// sent alone, on its own connection after the others, so it cannot take them down again.
    pub(super) alone: Mutex<HashSet<QueueId>>,
}

impl Policy<'_> {
    pub(super) fn sends_alone(&self, id: QueueId) -> bool {
        self.alone.lock().is_ok_and(|alone| alone.contains(&id))
    }

    pub(super) fn send_alone(&self, id: QueueId) {
        if let Ok(mut alone) = self.alone.lock() {
            alone.insert(id);
        }
    }

    /// True when this run attempts `domain`'s recipient now.
    pub(super) fn wants(&self, envelope: &Envelope, index: usize) -> bool {
        let recipient = &envelope.recipients[index];
        let selection = &self.options.selection;
        if !recipient.status.is_open()
            || !selection.selects_recipient(recipient)
            || !selection.selects_message(envelope)
        {
            return false;
        }
        let lifetime = self.config.lifetime_of(recipient.domain());
        if retry::is_expired(lifetime, envelope.arrival, self.now) {
            return false;
        }
        let held = Domain::parse(recipient.domain()).is_ok_and(|d| self.config.is_held(&d));
        if held && self.options.selection.domains.is_empty() {
            return false;
        }
        let named = !self.options.selection.is_everything() || self.options.force;
        named || recipient.next_attempt <= self.now
    }

    pub(super) fn size_selected(&self, envelope: &Envelope) -> bool {
        self.options.max_size.is_none_or(|max| envelope.size <= max)
            && self.options.min_size.is_none_or(|min| envelope.size >= min)
    }

    /// The static route for `domain`, else the smart host, else its MX hosts; everything goes
    /// down the connection of a run that has one.
    pub(super) fn destination(&self, domain: &str) -> (Destination, Option<&RelayTarget>) {
        if self.options.turnaround.is_some() {
            return (Destination::Turnaround, None);
        }
        let key = domain.to_ascii_lowercase();
        if let Some((_, target)) = self.config.routes.get(&key) {
            return (Destination::Relay(target.to_string()), Some(target));
        }
        if let Some(target) = &self.config.smarthost {
            return (Destination::Relay(target.to_string()), Some(target));
        }
        (Destination::Domain(key), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testing::{envelope, policy};
    use crate::queue::envelope::{Recipient, RecipientStatus};
    use crate::queue::selection::{DomainPattern, Selection};

    const NOW: i64 = 1_000_000;

    fn recipient(address: &str, status: RecipientStatus, next_attempt: i64) -> Recipient {
        Recipient {
            status,
            next_attempt,
            ..Recipient::new(address.into())
        }
    }

    fn domains(patterns: &[&str]) -> Selection {
        Selection {
            domains: patterns
                .iter()
                .map(|p| DomainPattern::parse(p).unwrap())
                .collect(),
            ..Selection::default()
        }
    }

    #[test]
    fn wants_what_is_open_selected_and_due_or_named() {
        use RecipientStatus::{Deferred, Failed, Pending, Sent};
        let senders = |s: &str| Selection {
            senders: vec![s.into()],
            ..Selection::default()
        };
        let ids = |s: &str| Selection {
            ids: vec![s.into()],
            ..Selection::default()
        };
        let all = Selection::default;
        let later = NOW + 1;
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, RecipientStatus, i64, Selection, bool, bool)> = vec![
            // (why, recipient, status, next attempt, selection, -f, wanted)
            ("pending and due", "u@customer.test", Pending, 0, all(), false, true),
            ("deferred, due this second", "u@customer.test", Deferred, NOW, all(), false, true),
            ("deferred, not yet due", "u@customer.test", Deferred, later, all(), false, false),
            ("not yet due, forced", "u@customer.test", Deferred, later, all(), true, true),
            ("sent", "u@customer.test", Sent, 0, all(), false, false),
            ("failed", "u@customer.test", Failed, 0, all(), true, false),
            ("-R names its domain", "u@customer.test", Deferred, later, domains(&["customer.test"]), false, true),
            ("-R names another domain", "u@customer.test", Pending, 0, domains(&["other.test"]), false, false),
            ("-R exact, a subdomain", "u@a.customer.test", Pending, 0, domains(&["customer.test"]), false, false),
            ("-R @domain, a subdomain", "u@a.customer.test", Pending, 0, domains(&["@customer.test"]), false, true),
            ("-S names its sender", "u@customer.test", Deferred, later, senders("FRANK@"), false, true),
            ("-S names another sender", "u@customer.test", Pending, 0, senders("eve@"), false, false),
            ("-I names its id", "u@customer.test", Deferred, later, ids("zklW"), false, true),
            ("-I names another id", "u@customer.test", Pending, 0, ids("nothere"), false, false),
            ("held, plain run", "u@held.test", Pending, 0, all(), false, false),
            ("held, forced", "u@held.test", Pending, 0, all(), true, false),
            ("held below, plain run", "u@a.held.test", Pending, 0, all(), false, false),
            ("held, -S", "u@held.test", Pending, 0, senders("frank@"), false, false),
            ("held, -R names it", "u@held.test", Deferred, later, domains(&["held.test"]), false, true),
            ("held, -R @parent", "u@a.held.test", Pending, 0, domains(&["@held.test"]), false, true),
            ("a domain that does not parse is not held", "u@bad..test", Pending, 0, all(), false, true),
        ];
        let config = Config {
            hold_domains: vec![Domain::parse("held.test").unwrap()].into(),
            ..Config::default()
        };
        for (why, address, status, next_attempt, selection, force, wanted) in cases {
            let options = RunOptions {
                selection,
                force,
                ..RunOptions::default()
            };
            let mut envelope = envelope(
                "frank@sender.test",
                vec![
                    recipient("first@elsewhere.test", Sent, 0),
                    recipient(address, status, next_attempt),
                ],
            );
            envelope.arrival = NOW - 60;
            let policy = policy(&config, &options, NOW);
            assert_eq!(policy.wants(&envelope, 1), wanted, "{why}");
            // Past its domain's lifetime, nothing is wanted, however it is named.
            envelope.arrival = NOW
                - config
                    .lifetime_of(envelope.recipients[1].domain())
                    .as_secs() as i64;
            assert!(!policy.wants(&envelope, 1), "{why}, expired");
        }
    }

    #[test]
    fn a_longer_lifetime_keeps_its_domain_wanted() {
        let config = Config {
            queue_lifetimes: [(
                "slow.test".to_string(),
                (
                    Domain::parse("slow.test").unwrap(),
                    std::time::Duration::from_secs(30 * 86400),
                ),
            )]
            .into(),
            ..Config::default()
        };
        let options = RunOptions::default();
        let mut envelope = envelope(
            "frank@sender.test",
            vec![
                recipient("u@slow.test", RecipientStatus::Pending, 0),
                recipient("u@fast.test", RecipientStatus::Pending, 0),
            ],
        );
        envelope.arrival = NOW - 6 * 86400;
        let policy = policy(&config, &options, NOW);
        assert!(policy.wants(&envelope, 0), "30 days for slow.test");
        assert!(!policy.wants(&envelope, 1), "5 days for the rest");
    }

    #[test]
    fn size_limits_are_inclusive() {
        let cases = [
            (None, None, 17, true),
            (Some(17), None, 17, true),
            (Some(16), None, 17, false),
            (None, Some(17), 17, true),
            (None, Some(18), 17, false),
            (Some(20), Some(10), 17, true),
            (Some(20), Some(18), 17, false),
        ];
        let config = Config::default();
        for (max_size, min_size, size, selected) in cases {
            let options = RunOptions {
                max_size,
                min_size,
                ..RunOptions::default()
            };
            let envelope = crate::queue::envelope::Envelope {
                size,
                ..envelope("frank@sender.test", Vec::new())
            };
            assert_eq!(
                policy(&config, &options, NOW).size_selected(&envelope),
                selected,
                "max {max_size:?}, min {min_size:?}, size {size}"
            );
        }
    }

    #[test]
    fn a_route_comes_before_the_smart_host_and_the_smart_host_before_mx() {
        let route = RelayTarget::parse("[192.0.2.7]:2525").unwrap();
        let smarthost = RelayTarget::parse("relay.isp.test").unwrap();
        let routed = Config {
            routes: [(
                "customer.test".to_string(),
                (Domain::parse("customer.test").unwrap(), route.clone()),
            )]
            .into(),
            ..Config::default()
        };
        let relayed = Config {
            smarthost: Some(smarthost.clone()),
            ..routed.clone()
        };
        let direct = Config::default();
        let relay = |text: &str| Destination::Relay(text.into());
        let mx = |text: &str| Destination::Domain(text.into());
        let cases = [
            (
                &routed,
                "customer.test",
                relay("[192.0.2.7]:2525"),
                Some(&route),
            ),
            (
                &routed,
                "Customer.TEST",
                relay("[192.0.2.7]:2525"),
                Some(&route),
            ),
            (&routed, "a.customer.test", mx("a.customer.test"), None),
            (&routed, "Other.Test", mx("other.test"), None),
            (
                &relayed,
                "customer.test",
                relay("[192.0.2.7]:2525"),
                Some(&route),
            ),
            (
                &relayed,
                "other.test",
                relay("relay.isp.test:25"),
                Some(&smarthost),
            ),
            (&direct, "[192.0.2.1]", mx("[192.0.2.1]"), None),
        ];
        let options = RunOptions::default();
        for (config, domain, destination, relay) in cases {
            let policy = policy(config, &options, NOW);
            assert_eq!(policy.destination(domain), (destination, relay), "{domain}");
        }
    }

    #[test]
    fn a_message_sent_alone_stays_alone() {
        let config = Config::default();
        let options = RunOptions::default();
        let policy = policy(&config, &options, NOW);
        let id = QueueId::parse("1xWNve3zklWKyw").unwrap();
        let other = QueueId::parse("1xWNvf000000AA").unwrap();
        assert!(!policy.sends_alone(id));
        policy.send_alone(id);
        policy.send_alone(id);
        assert!(policy.sends_alone(id));
        assert!(!policy.sends_alone(other));
    }
}
