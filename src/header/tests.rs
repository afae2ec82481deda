use super::*;
use crate::queue::QueueId;

/// Lines of a byte string, as `Lines` gives them (and as the readers of standard input and of
/// SMTP data hand them over), each cut into pieces of at most `piece` octets.
pub(super) struct Text<'a> {
    pub(super) rest: &'a [u8],
    pub(super) piece: usize,
}

impl Lines for Text<'_> {
    type Error = std::convert::Infallible;
    fn next_line(&mut self) -> Result<Option<&[u8]>, Self::Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1)
            .min(self.piece);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(Some(line))
    }
}

fn read_with(
    text: &[u8],
    leading_from: LeadingFrom,
    piece: usize,
    limit: usize,
) -> Result<HeaderSection, HeaderError<std::convert::Infallible>> {
    HeaderSection::read(&mut Text { rest: text, piece }, leading_from, limit)
}

fn read(text: &str, leading_from: LeadingFrom) -> HeaderSection {
    read_with(
        text.as_bytes(),
        leading_from,
        usize::MAX,
        MAX_HEADER_SECTION,
    )
    .expect("a small header section")
}

fn section(text: &str) -> HeaderSection {
    read(text, LeadingFrom::Drop)
}

fn raws(h: &HeaderSection) -> Vec<&[u8]> {
    h.fields().map(|f| f.raw).collect()
}

#[test]
fn header_fields_and_continuations() {
    let h = section("Received: a\n\tb\nSubject: x\nreceived: c\n\nbody\n");
    assert_eq!(h.fields().count(), 3);
    assert_eq!(h.hops(), 2);
    assert_eq!(raws(&h)[0], b"Received: a\n\tb\n");
    assert_eq!(h.fields().nth(1).map(|f| f.name), Some("Subject"));
    assert!(h.has("SUBJECT"));
    assert_eq!(h.raw(), b"Received: a\n\tb\nSubject: x\nreceived: c\n");
    assert_eq!(h.separator, b"\n");
}

#[test]
fn lines_in_pieces_read_as_whole_lines() {
    let text = b"From someone Mon Nov 23\nSubject: a long subject line\n continued here\n\nbody";
    for piece in [8, 9, 11, 13, 1000] {
        let h = read_with(text, LeadingFrom::Drop, piece, MAX_HEADER_SECTION).unwrap();
        assert_eq!(
            raws(&h),
            [&b"Subject: a long subject line\n continued here\n"[..]],
            "pieces of {piece}"
        );
        assert_eq!(h.separator, b"\n");
    }
    let h = read_with(b"Subject: x\nno header here\n", LeadingFrom::Keep, 13, 1000).unwrap();
    assert_eq!(
        h.first_body_line, b"no header her",
        "the first piece; the rest is body"
    );
}

#[test]
fn a_header_section_over_the_limit_is_refused_and_not_held() {
    let mut flood = b"a: b\r\n".repeat(200_000);
    flood.extend_from_slice(b"\r\nbody\r\n");
    let mut source = Text {
        rest: &flood,
        piece: usize::MAX,
    };
    let result = HeaderSection::read(&mut source, LeadingFrom::Keep, MAX_HEADER_SECTION);
    assert!(matches!(result, Err(HeaderError::TooLarge)));
    // Reading stopped at the limit: the rest is still to be read by the caller.
    let consumed = flood.len() - source.rest.len();
    assert!(consumed <= MAX_HEADER_SECTION + 6, "read {consumed}");
    // One long field that crosses the limit, in pieces.
    let long = [b"X-Long: ".as_slice(), &vec![b'x'; 200_000], b"\n\n"].concat();
    assert!(matches!(
        read_with(&long, LeadingFrom::Drop, 64 * 1024, MAX_HEADER_SECTION),
        Err(HeaderError::TooLarge)
    ));
    // Exactly at the limit is fine.
    let exact = [b"X: ".as_slice(), &[b'y'; 96], b"\n\n"].concat();
    assert!(read_with(&exact, LeadingFrom::Drop, 7, 100).is_ok());
    assert!(read_with(&exact, LeadingFrom::Drop, 7, 99).is_err());
}

#[test]
fn text_without_headers_is_all_body() {
    let h = section("hello world\nsecond\n");
    assert!(h.is_empty());
    assert_eq!(h.first_body_line, b"hello world\n");
}

#[test]
fn crlf_input_gets_crlf_headers() {
    assert_eq!(section("Subject: x\r\n\r\n").line_ending, "\r\n");
}

#[test]
fn mbox_from_line_is_dropped_only_when_asked() {
    let text = "From alice Mon Nov 23 06:27:00 2026\nSubject: x\n\n";
    assert_eq!(section(text).fields().count(), 1);
    let kept = read(text, LeadingFrom::Keep);
    assert!(kept.is_empty());
    assert_eq!(
        kept.first_body_line,
        b"From alice Mon Nov 23 06:27:00 2026\n"
    );
}

#[test]
fn hop_limit_counts_the_field_we_add() {
    assert!(!exceeds_hop_limit(24, 25));
    assert!(exceeds_hop_limit(25, 25));
}

#[test]
fn received_layouts() {
    let id = QueueId::parse("1mZx3k0a9B2cQz").unwrap();
    let local = Received {
        from: None,
        by: "mx.example (etrnq, from userid 0)",
        with: None,
        id,
        for_recipient: None,
        date: "Mon, 23 Nov 2026 07:00:00 +0000",
    };
    assert_eq!(
        local.render("\n"),
        "Received: by mx.example (etrnq, from userid 0)\n\tid 1mZx3k0a9B2cQz; Mon, 23 Nov 2026 07:00:00 +0000\n"
    );
    let network = Received {
        from: Some("client.example ([127.0.0.1])"),
        with: Some("ESMTP"),
        for_recipient: Some("u@customer.example"),
        by: "mx.example (etrnq)",
        ..local
    };
    assert_eq!(
        network.render("\r\n"),
        "Received: from client.example ([127.0.0.1])\r\n\tby mx.example (etrnq) with ESMTP\r\n\
         \tid 1mZx3k0a9B2cQz for <u@customer.example>; Mon, 23 Nov 2026 07:00:00 +0000\r\n"
    );
}
