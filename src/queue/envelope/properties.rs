//! Property tests of the envelope format: what is written reads back as written, every cut is
//! refused, and any input, however damaged or large, parses or fails without a panic and in
//! memory and time in proportion to its size.

use super::*;
use crate::properties::{bytes, config, mutated, peak};
use proptest::prelude::*;

/// Values as the queue stores them: any text without control characters.
fn value(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        any::<char>().prop_map(|c| if c.is_control() { '?' } else { c }),
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn status() -> impl Strategy<Value = RecipientStatus> {
    prop_oneof![
        Just(RecipientStatus::Pending),
        Just(RecipientStatus::Deferred),
        Just(RecipientStatus::Sent),
        Just(RecipientStatus::Failed),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (status(), any::<u32>(), any::<i64>(), value(30), value(80)).prop_map(
        |(status, attempts, next_attempt, address, reason)| Recipient {
            address: format!("{address}@d"),
            status,
            attempts,
            next_attempt,
            reason,
        },
    )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        "[0-9A-Za-z]{14}",
        any::<i64>(),
        any::<u64>(),
        value(40),
        proptest::option::of(value(20)),
        proptest::option::of(value(20)),
        proptest::option::of(value(20)),
        (
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(recipient(), 1..6),
        ),
    )
        .prop_map(
            |(id, arrival, size, sender, notify, ret, envid, (warned, recipients))| Envelope {
                id: QueueId::parse(&id).unwrap(),
                arrival,
                size,
                sender,
                notify,
                ret,
                envid,
                warned,
                recipients,
            },
        )
}

/// Parses `bytes`: no panic, memory in proportion to the file, and what parses is stable:
/// written again, it reads back as itself.
fn parse_checked(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let (result, most) = peak(|| Envelope::parse(bytes));
    // A recipient's record is at least 17 octets and its parsed form 64 bytes, in a vector
    // that may have doubled; its strings are copies of the record's text.
    let bound = 10 * bytes.len() + 1024;
    assert!(most <= bound, "{most} bytes for {} octets", bytes.len());
    match &result {
        // What the writer writes (a long reason cut, a control character flattened) it
        // reads back exactly.
        Ok(envelope) => {
            let written = envelope.to_bytes();
            assert_eq!(Envelope::parse(&written).unwrap().to_bytes(), written);
        }
        Err(e) => assert!(e.line <= bytes.len() + 1, "{e}"),
    }
    result
}

proptest! {
    #![proptest_config(config(6000))]

    #[test]
    fn any_bytes_are_an_envelope_or_an_error(input in bytes(2000)) {
        let _ = parse_checked(&input);
    }

    #[test]
    fn damaged_envelopes_are_envelopes_or_errors(input in mutated(envelope().prop_map(|e| e.to_bytes()))) {
        let _ = parse_checked(&input);
    }

    #[test]
    fn envelopes_read_back_as_written(envelope in envelope()) {
        prop_assert_eq!(parse_checked(&envelope.to_bytes()), Ok(envelope));
    }

    #[test]
    fn every_cut_of_an_envelope_is_refused(envelope in envelope(), cut in any::<usize>()) {
        let bytes = envelope.to_bytes();
        prop_assert!(parse_checked(&bytes[..cut % bytes.len()]).is_err());
    }
}

#[test]
fn sixteen_megabytes_of_anything_parse_in_proportion() {
    let max = MAX_BYTES as usize;
    let head = "etrnq-envelope 1\nid\t1mZx3k0a9B2cQz\narrival\t0\nsize\t0\nsender\t\n";
    let mut tabs = format!("{head}rcpt\t").into_bytes();
    tabs.resize(max - 5, b'\t');
    tabs.extend_from_slice(b"\nend\n");
    let mut small = head.as_bytes().to_vec();
    while small.len() < max - 30 {
        small.extend_from_slice(b"rcpt\tsent\t0\t0\tx\t\n");
    }
    small.extend_from_slice(b"end\n");
    let mut long = format!("{head}rcpt\tsent\t0\t0\tx\t").into_bytes();
    long.resize(max - 5, b'x');
    long.extend_from_slice(b"\nend\n");
    for file in [tabs, small, long] {
        let _ = parse_checked(&file);
    }
}

#[test]
fn a_record_of_sixteen_megabytes_of_tabs_costs_no_more_than_its_size() {
    let mut file = b"etrnq-envelope 1\nid\t1mZx3k0a9B2cQz\nrcpt\t".to_vec();
    file.resize(MAX_BYTES as usize - 5, b'\t');
    file.extend_from_slice(b"\nend\n");
    let (result, most) = peak(|| Envelope::parse(&file));
    assert_eq!(result.unwrap_err().reason, "rcpt: expected 5 fields");
    assert!(most <= 1024, "{most} bytes held");
}
