use super::sendmail::by_reason;
use super::summary::age_text;
use crate::queue::QueueId;
use crate::queue::envelope::{Envelope, Recipient};

#[test]
fn ages() {
    assert_eq!(age_text(45), "45s");
    assert_eq!(age_text(28 * 60 + 5), "28m");
    assert_eq!(age_text(3 * 3600 + 12 * 60), "3h12m");
    assert_eq!(age_text(4 * 86400 + 6 * 3600), "4d6h");
}

#[test]
fn reasons_group_their_recipients() {
    let mut e = Envelope {
        id: QueueId::parse("1xWNve3zklWKyw").unwrap(),
        arrival: 0,
        size: 0,
        sender: String::new(),
        notify: None,
        ret: None,
        envid: None,
        warned: None,
        recipients: ["a@x.test", "b@x.test", "c@y.test", "d@y.test"]
            .iter()
            .map(|a| Recipient::new(a.to_string()))
            .collect(),
    };
    e.recipients[0].reason = "refused".into();
    e.recipients[2].reason = "refused".into();
    let groups = by_reason(&e);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].0, "");
    assert_eq!(groups[0].1.len(), 2);
    assert_eq!(groups[1].1[1].address, "c@y.test");
}
