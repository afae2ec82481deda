use super::*;
use crate::properties::{bytes, config, mutated, peak};
use proptest::prelude::*;

use super::tests::Text as Pieces;

/// Reads `input`, checks every promise of the result, and gives the fields' raw text.
fn read_checked(
    input: &[u8],
    leading_from: LeadingFrom,
    piece: usize,
    limit: usize,
) -> Option<HeaderSection> {
    let mut source = Pieces { rest: input, piece };
    let (result, most) = peak(|| HeaderSection::read(&mut source, leading_from, limit));
    // The fields' text and one index entry per field of at least 3 octets, each in a
    // vector that may have doubled, and the first body line's first piece.
    let bound = 4 * limit + piece.min(input.len()) + 1024;
    assert!(most <= bound, "{most} bytes held, bound {bound}");
    let section = match result {
        Ok(section) => section,
        Err(HeaderError::TooLarge) => {
            assert!(input.len() > limit);
            return None;
        }
    };
    assert!(section.raw().len() <= limit);
    let mut joined = Vec::new();
    for field in section.fields() {
        assert_eq!(field_name(field.raw), Some(field.name));
        joined.extend_from_slice(field.raw);
    }
    assert_eq!(joined, section.raw());
    // Nothing is invented or reordered: what was read is the input, less a dropped mbox
    // `From ` line.
    // (A line's first piece must hold its first 1000 octets; pieces too short to hold
    // `From ` break that promise, and then the line is not recognised, hence kept.)
    let kept = match leading_from {
        LeadingFrom::Drop if input.starts_with(b"From ") && piece >= 5 => input
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&input[input.len()..], |end| &input[end + 1..]),
        _ => input,
    };
    let read = [section.raw(), &section.separator, &section.first_body_line].concat();
    assert!(
        kept.starts_with(&read),
        "{read:?} is not the start of {kept:?}"
    );
    Some(section)
}

/// A header section as mail programs write it, with its body.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        "[!-9;-~]{1,20}",
        "[ -~]{0,60}",
        proptest::collection::vec("[ \t][ -~]{0,40}", 0..3),
    );
    (
        proptest::option::of("From [a-z]{1,8} Mon Nov 23 06:27:00 2026"),
        proptest::collection::vec(field, 0..12),
        prop_oneof![Just("\n"), Just("\r\n")],
        "[ -~]{0,40}",
    )
        .prop_map(|(from, fields, eol, body)| {
            let mut text = String::new();
            if let Some(from) = from {
                text.push_str(&from);
                text.push_str(eol);
            }
            for (name, value, continuations) in fields {
                text.push_str(&format!("{name}: {value}{eol}"));
                for line in continuations {
                    text.push_str(&format!("{line}{eol}"));
                }
            }
            text.push_str(eol);
            text.push_str(&body);
            text.into_bytes()
        })
}

fn leading_from() -> impl Strategy<Value = LeadingFrom> {
    prop_oneof![Just(LeadingFrom::Keep), Just(LeadingFrom::Drop)]
}

fn piece() -> impl Strategy<Value = usize> {
    prop_oneof![Just(usize::MAX), 1..2000usize]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![Just(MAX_HEADER_SECTION), 0..600usize]
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn any_bytes_read_as_a_header_section_or_too_large(
        input in bytes(1500),
        leading_from in leading_from(),
        piece in piece(),
        limit in limit(),
    ) {
        read_checked(&input, leading_from, piece, limit);
    }

    #[test]
    fn near_valid_messages_read_as_a_header_section_or_too_large(
        input in mutated(message()),
        leading_from in leading_from(),
        piece in piece(),
        limit in limit(),
    ) {
        read_checked(&input, leading_from, piece, limit);
    }

    #[test]
    fn lines_read_the_same_in_pieces_that_hold_their_start(
        input in prop_oneof![mutated(message()), bytes(3000)],
        leading_from in leading_from(),
        piece in 1000..3000usize,
    ) {
        let whole = read_checked(&input, leading_from, usize::MAX, MAX_HEADER_SECTION);
        let pieces = read_checked(&input, leading_from, piece, MAX_HEADER_SECTION);
        // A field name is recognised in its line's first piece: a colon further on (after
        // a name longer than any line RFC 5322 allows) may be read either way.
        let names_fit = input
            .split_inclusive(|&b| b == b'\n')
            .all(|line| line.iter().position(|&b| b == b':').is_none_or(|at| at < piece));
        if !names_fit {
            return Ok(());
        }
        let whole = whole.unwrap();
        let pieces = pieces.unwrap();
        prop_assert_eq!(whole.raw(), pieces.raw());
        prop_assert_eq!(whole.fields().count(), pieces.fields().count());
        prop_assert_eq!(&whole.separator, &pieces.separator);
        prop_assert!(whole.first_body_line.starts_with(&pieces.first_body_line));
    }

    #[test]
    fn whole_messages_give_every_field_and_stop_at_the_empty_line(input in message()) {
        let section = read_checked(&input, LeadingFrom::Drop, usize::MAX, MAX_HEADER_SECTION)
            .unwrap();
        let text = String::from_utf8(input).unwrap();
        let eol = section.line_ending;
        prop_assert!(section.fields().count() <= text.matches(eol).count());
        prop_assert!(section.separator == eol.as_bytes());
        prop_assert!(section.first_body_line.is_empty());
        let header_end = text.find(&format!("{eol}{eol}")).map_or(0, |at| at + eol.len());
        let header = if text.starts_with("From ") {
            &text[text.find(eol).unwrap() + eol.len()..header_end]
        } else {
            &text[..header_end]
        };
        prop_assert_eq!(section.raw(), header.as_bytes());
    }
}

#[test]
fn floods_of_ten_megabytes_are_refused_in_about_500_kilobytes() {
    let many = b"a: b\r\n".repeat((10 << 20) / 6);
    let mut long = b"X-Long: ".to_vec();
    long.resize(10 << 20, b'x');
    let short = b"a:\n".repeat((10 << 20) / 3);
    for flood in [many, long, short] {
        let mut source = Pieces {
            rest: &flood,
            piece: 64 * 1024,
        };
        let (result, most) =
            peak(|| HeaderSection::read(&mut source, LeadingFrom::Keep, MAX_HEADER_SECTION));
        assert!(matches!(result, Err(HeaderError::TooLarge)));
        assert!(most <= 512 * 1024, "{most} bytes held");
    }
}
