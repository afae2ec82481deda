//! Which messages a listing or a queue run is about: `-R domain`, `-R @domain`, `-S sender`,
//! `-I id`, in sendmail's and RFC 1985's sense.
//!
//! `-R customer.example` selects recipients whose domain is exactly `customer.example`, compared
//! without case; `-R @customer.example` also selects its subdomains (RFC 1985's `@` form). This
//! differs on purpose from sendmail, whose `-qR` is a substring match (`-qRcustomer` selects
//! `xcustomer.test` too): a flush started for one site must never send another site's mail.
//! `-S` is sendmail's: a case-insensitive substring of the sender. `-I` is a substring of the
//! queue id, case-sensitive as ids are.
//!
//! Several values of one kind widen the selection (any of them); different kinds narrow it (all
//! of them), as with sendmail.

use crate::address::{AddressError, Domain};
use crate::queue::Place;
use crate::queue::envelope::{Envelope, Recipient};

/// One `-R` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// `customer.example`: that domain only.
    Exact(Domain),
    /// `@customer.example`: that domain and every domain below it.
    WithSubdomains(Domain),
}

impl DomainPattern {
    pub fn parse(text: &str) -> Result<DomainPattern, AddressError> {
        match text.strip_prefix('@') {
            Some(domain) => Domain::parse(domain).map(DomainPattern::WithSubdomains),
            None => Domain::parse(text).map(DomainPattern::Exact),
        }
    }

    pub fn matches(&self, domain: &str) -> bool {
        let Ok(domain) = Domain::parse(domain) else {
            return false;
        };
        match self {
            DomainPattern::Exact(wanted) => &domain == wanted,
            DomainPattern::WithSubdomains(parent) => domain.is_within(parent),
        }
    }
}

impl std::fmt::Display for DomainPattern {
    /// The form `-R` and ETRN take: `customer.example` or `@customer.example`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Exact(domain) => domain.fmt(f),
            DomainPattern::WithSubdomains(domain) => write!(f, "@{domain}"),
        }
    }
}

/// The messages (and, for `-R`, the recipients) a command is about. Empty selects everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub domains: Vec<DomainPattern>,
    pub senders: Vec<String>,
    pub ids: Vec<String>,
    /// Only messages on administrative hold: `mailq --held`, sendmail's `-qQ`. No run sets it,
    /// since no run attempts held mail.
    pub held: bool,
}

impl Selection {
    pub fn is_everything(&self) -> bool {
        self.domains.is_empty() && self.senders.is_empty() && self.ids.is_empty() && !self.held
    }

    /// True when a message in `place` may be selected: anywhere, or on hold with `--held`.
    pub fn selects_place(&self, place: Place) -> bool {
        !self.held || place == Place::Held
    }

    /// True when a recipient's domain is selected (always, without `-R`).
    pub fn selects_recipient(&self, recipient: &Recipient) -> bool {
        self.domains.is_empty() || self.domains.iter().any(|p| p.matches(recipient.domain()))
    }

    /// True when the message is selected: its id, its sender and at least one recipient still
    /// owed a delivery.
    pub fn selects(&self, envelope: &Envelope) -> bool {
        self.selects_message(envelope)
            && envelope
                .open_recipients()
                .any(|r| self.selects_recipient(r))
    }

    /// True when `-I` takes a message with this queue id: all that can be asked of a message
    /// whose envelope cannot be read.
    pub fn selects_id(&self, id: &str) -> bool {
        self.ids.is_empty() || self.ids.iter().any(|wanted| id.contains(wanted.as_str()))
    }

    /// True when the message's id and sender are selected (`-I`, `-S`), whatever its recipients.
    pub fn selects_message(&self, envelope: &Envelope) -> bool {
        let sender = envelope.sender.to_ascii_lowercase();
        self.selects_id(envelope.id.as_str())
            && (self.senders.is_empty()
                || self
                    .senders
                    .iter()
                    .any(|wanted| sender.contains(&wanted.to_ascii_lowercase())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueId;

    fn envelope(sender: &str, recipients: &[&str]) -> Envelope {
        Envelope {
            id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
            arrival: 0,
            size: 0,
            sender: sender.into(),
            notify: None,
            ret: None,
            envid: None,
            warned: None,
            recipients: recipients
                .iter()
                .map(|r| Recipient::new(r.to_string()))
                .collect(),
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
    fn exact_domain_is_exact_and_caseless() {
        let s = domains(&["customer.test"]);
        assert!(s.selects(&envelope("a@x", &["User@CUSTOMER.TEST"])));
        assert!(!s.selects(&envelope("a@x", &["user@xcustomer.test"])));
        assert!(!s.selects(&envelope("a@x", &["user@sub.customer.test"])));
    }

    #[test]
    fn at_form_adds_subdomains() {
        let s = domains(&["@customer.test"]);
        assert!(s.selects(&envelope("a@x", &["user@sub.customer.test"])));
        assert!(s.selects(&envelope("a@x", &["user@customer.test"])));
        assert!(!s.selects(&envelope("a@x", &["user@xcustomer.test"])));
    }

    #[test]
    fn kinds_narrow_values_widen() {
        let mut s = domains(&["customer.test", "other.test"]);
        assert!(s.selects(&envelope("frank@example.test", &["d@other.test"])));
        s.senders = vec!["FRANK".into()];
        assert!(s.selects(&envelope("frank@example.test", &["d@other.test"])));
        assert!(!s.selects(&envelope("bob@example.test", &["d@other.test"])));
        s.ids = vec!["nomatch".into()];
        assert!(!s.selects(&envelope("frank@example.test", &["d@other.test"])));
        s.ids = vec!["1xWNve".into()];
        assert!(s.selects(&envelope("frank@example.test", &["d@other.test"])));
    }

    #[test]
    fn finished_recipients_do_not_select() {
        let mut e = envelope("a@x", &["u@customer.test", "v@other.test"]);
        e.recipients[0].status = crate::queue::envelope::RecipientStatus::Sent;
        assert!(!domains(&["customer.test"]).selects(&e));
        assert!(domains(&["other.test"]).selects(&e));
    }

    #[test]
    fn patterns_display_as_written() {
        for text in ["customer.test", "@customer.test"] {
            assert_eq!(DomainPattern::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn patterns_must_be_domains() {
        assert!(DomainPattern::parse("customer test").is_err());
        assert!(DomainPattern::parse("@").is_err());
        assert!(DomainPattern::parse("$(reboot)").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn pattern() -> impl Strategy<Value = String> {
        "@?[a-zA-Z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-zA-Z0-9]{1,6}){0,3}\\.?"
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn patterns_read_back_and_match_their_own_domain(
            input in prop_oneof![text(60), mutated_text(pattern())],
            other in prop_oneof![text(40), pattern()],
        ) {
            let (parsed, most) = peak(|| DomainPattern::parse(&input));
            prop_assert!(most <= 2 * input.len() + 256, "{} bytes", most);
            let Ok(pattern) = parsed else { return Ok(()) };
            prop_assert_eq!(DomainPattern::parse(&pattern.to_string()).ok(), Some(pattern.clone()));
            let (DomainPattern::Exact(domain) | DomainPattern::WithSubdomains(domain)) = &pattern;
            prop_assert!(pattern.matches(domain.as_str()));
            prop_assert!(pattern.matches(&domain.as_str().to_ascii_uppercase()));
            let sub = format!("sub.{domain}");
            let subdomain_matches = pattern.matches(&sub);
            prop_assert_eq!(
                subdomain_matches,
                matches!(pattern, DomainPattern::WithSubdomains(_))
                    && !domain.is_literal()
                    && sub.len() <= 253
            );
            let _ = pattern.matches(&other);
        }
    }
}
