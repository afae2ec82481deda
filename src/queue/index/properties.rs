//! Property tests of the index format: what the writer writes the reader reads, and a damaged
//! index, or any bytes after a good header, is read in part or refused, without a panic and in
//! memory in proportion to its size.

use super::*;
use crate::properties::{bytes, config, mutated, peak};
use crate::queue::envelope::{Envelope, Recipient};
use proptest::prelude::*;

fn stamp() -> impl Strategy<Value = DirStamp> {
    (
        any::<u64>(),
        any::<i64>(),
        0..1_000_000_000i64,
        any::<i64>(),
        0..1_000_000_000i64,
    )
        .prop_map(|(inode, ms, mn, cs, cn)| DirStamp {
            inode,
            modified: (ms, mn),
            changed: (cs, cn),
        })
}

fn stamps() -> impl Strategy<Value = Stamps> {
    (stamp(), stamp(), stamp()).prop_map(|(active, held, data)| Stamps { active, held, data })
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![Just(Place::Active), Just(Place::Held)]
}

/// A table in listing order, each message with its envelope's bytes.
fn messages() -> impl Strategy<Value = Vec<(Entry, Vec<u8>)>> {
    proptest::collection::btree_map(
        ("[0-9A-Za-z]{14}", place()),
        (any::<u64>(), "[ -~]{0,30}"),
        0..8,
    )
    .prop_map(|messages| {
        messages
            .into_iter()
            .map(|((id, place), (data_inode, sender))| {
                let id = QueueId::parse(&id).unwrap();
                let envelope = Envelope {
                    id,
                    arrival: 0,
                    size: data_inode,
                    sender,
                    notify: None,
                    ret: None,
                    envid: None,
                    warned: None,
                    recipients: vec![Recipient::new("u@customer.example".into())],
                };
                let entry = Entry {
                    id,
                    place,
                    data_inode,
                };
                (entry, envelope.to_bytes())
            })
            .collect()
    })
}

fn written(stamps: &Stamps, messages: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut writer =
        IndexWriter::new(std::io::Cursor::new(Vec::new()), stamps, messages.len()).unwrap();
    for (entry, envelope) in messages {
        writer.add(entry, envelope).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Reads an index as a listing does: the table, then the records. No panic; the table costs one
/// line's memory whatever its length, and each record at most one envelope; a table in order and
/// records no longer than an envelope may be.
fn read_checked(input: &[u8], stamps: &Stamps) -> Option<(Vec<Entry>, Vec<Record>)> {
    let (layout, most) = peak(|| read_table(&mut &input[..], stamps, |_| {}));
    assert!(
        most <= 2 * MAX_LINE as usize + 1024,
        "{most} bytes for the table"
    );
    let records_at = layout?.records_at as usize;
    assert!(records_at <= input.len());
    let mut entries = Vec::new();
    read_table(&mut &input[..], stamps, |entry| entries.push(entry))?;
    for pair in entries.windows(2) {
        assert!((pair[0].id, pair[0].place) < (pair[1].id, pair[1].place));
    }
    let mut records = Records::new(&input[records_at..]);
    let mut read = Vec::new();
    loop {
        let (record, most) = peak(|| records.next());
        assert!(
            most <= 2 * MAX_LINE as usize + MAX_RECORD + 1024,
            "{most} bytes for a record"
        );
        let Some(record) = record else { break };
        assert!(record.envelope.len() <= MAX_RECORD);
        read.push(record);
    }
    Some((entries, read))
}

proptest! {
    #![proptest_config(config(8000))]

    #[test]
    fn what_the_writer_writes_the_reader_reads(stamps in stamps(), messages in messages()) {
        let bytes = written(&stamps, &messages);
        let (table, records) = read_checked(&bytes, &stamps).unwrap();
        let entries: Vec<Entry> = messages.iter().map(|(entry, _)| *entry).collect();
        prop_assert_eq!(table, entries);
        prop_assert_eq!(records.len(), messages.len());
        for (record, (entry, envelope)) in records.iter().zip(&messages) {
            prop_assert_eq!((record.id, record.place), (entry.id, entry.place));
            prop_assert_eq!(&record.envelope, envelope);
        }
    }

    #[test]
    fn stamps_read_back_as_written(stamp in stamp()) {
        prop_assert_eq!(DirStamp::parse(&stamp.to_string()), Some(stamp));
    }

    #[test]
    fn a_damaged_index_is_read_in_part_or_refused(
        (stamps, input) in (stamps(), messages())
            .prop_flat_map(|(stamps, messages)| (Just(stamps), mutated(Just(written(&stamps, &messages)))))
    ) {
        let _ = read_checked(&input, &stamps);
    }

    #[test]
    fn any_bytes_after_a_good_header_are_read_in_part_or_refused(
        stamps in stamps(),
        count in prop_oneof![0..10usize, Just(usize::MAX)],
        rest in bytes(1500),
    ) {
        let mut input = format!(
            "{MAGIC}\t{}\t{}\t{}\t{count}\n",
            stamps.active, stamps.held, stamps.data
        )
        .into_bytes();
        input.extend_from_slice(&rest);
        let _ = read_checked(&input, &stamps);
        let _ = read_checked(&rest, &stamps);
    }
}
