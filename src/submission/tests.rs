use super::headers::display_name;
use super::input::PIECE;
use super::*;
use crate::address::Domain;

fn section(text: &str) -> HeaderSection {
    let mut input = Input::new(text.as_bytes(), true);
    HeaderSection::read(&mut input, LeadingFrom::Drop, MAX_HEADER_SECTION).unwrap()
}

#[test]
fn header_recipients_include_groups_and_bcc() {
    let h = section(
        "To: A <a@customer.example>, b@customer.example\nCc: team: c@other.example;\nBcc: d@other.example\n\n",
    );
    let here = Domain::parse("mx.example").unwrap();
    let got: Vec<String> = header_recipients(&h, &here)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "a@customer.example",
            "b@customer.example",
            "c@other.example",
            "d@other.example"
        ]
    );
}

#[test]
fn dot_line_ends_input_only_without_i() {
    let mut with_dot = Input::new(&b"a\n.\nb\n"[..], true);
    assert_eq!(with_dot.next_line().unwrap(), Some(&b"a\n"[..]));
    assert_eq!(with_dot.next_line().unwrap(), None);
    let mut literal = Input::new(&b"a\n.\nb\n"[..], false);
    literal.next_line().unwrap();
    assert_eq!(literal.next_line().unwrap(), Some(&b".\n"[..]));
}

#[test]
fn long_lines_come_in_pieces_and_only_a_whole_lone_dot_ends_input() {
    let mut text = vec![b'a'; PIECE + 10];
    text.extend_from_slice(b"\n.\nafter\n");
    let mut input = Input::new(&text[..], true);
    assert_eq!(input.next_line().unwrap().map(<[u8]>::len), Some(PIECE));
    assert_eq!(input.next_line().unwrap().map(<[u8]>::len), Some(11));
    assert_eq!(input.next_line().unwrap(), None);
    // A dot that ends a long line is not a line of its own.
    let mut text = vec![b'b'; PIECE];
    text.extend_from_slice(b".\nz\n");
    let mut input = Input::new(&text[..], true);
    input.next_line().unwrap();
    assert_eq!(input.next_line().unwrap(), Some(&b".\n"[..]));
    assert_eq!(input.next_line().unwrap(), Some(&b"z\n"[..]));
}

#[test]
fn display_names_are_quoted_when_needed() {
    assert_eq!(display_name("Alice Smith"), "Alice Smith");
    assert_eq!(display_name("Smith, Alice"), "\"Smith, Alice\"");
    assert_eq!(display_name("A \"B\""), "\"A \\\"B\\\"\"");
}
