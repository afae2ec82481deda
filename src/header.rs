//! The header section of an arriving message, and the one trace field etrnq adds to it.
//!
//! Both ways into the queue, local submission (`queue-enqueue`) and SMTP (`queue-smtpd`), read
//! the header section the same way: field by field, continuation lines kept with their field,
//! raw bytes kept as they came so that what is queued is what was sent. The section ends at the
//! empty line, or at the first line that is not a header field (that line is the first line of
//! the body). Local submission drops a leading mbox `From ` line ([`LeadingFrom::Drop`]), since
//! it is not a header and would push the real headers into the body; over SMTP such a line is
//! the sender's text and is kept ([`LeadingFrom::Keep`]).
//!
//! Both count `Received:` fields the same way to stop mail loops ([`exceeds_hop_limit`]), and
//! both write their `Received:` field through [`Received`], so the queue holds one trace format.
//!
//! Memory: the header section is held, and bounded: at most [`MAX_HEADER_SECTION`] octets of
//! field text (Postfix's `header_size_limit`) and one 4-octet index entry per field, so never
//! more than about 500 KB whatever the message size limit. A larger header section is refused
//! ([`HeaderError::TooLarge`]), not cut: a relay that dropped header fields would change the
//! message it was trusted to pass on (a signature, a `Received:` trail), and one that kept
//! them without a bound would give each client as much memory as it cares to send. The body
//! is never read here.
//!
//! Lines may arrive in pieces: a piece that does not end in LF is continued by the next one,
//! so a reader of unbounded local input can hand over a very long line without holding it.

use crate::queue::QueueId;

/// The most header field text one message may carry, line endings included: 100 KiB, as
/// Postfix's `header_size_limit`.
pub const MAX_HEADER_SECTION: usize = 100 * 1024;

/// A source of lines, each with its line ending (the last may have none). A piece without a
/// line ending that is not the last is continued by the next piece; the first piece of a line
/// must hold the line's first 1000 octets (a field name, an mbox `From `), or all of it.
pub trait Lines {
    type Error;
    fn next_line(&mut self) -> Result<Option<&[u8]>, Self::Error>;
}

/// What to do with a first line that starts with `From ` (an mbox separator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadingFrom {
    Drop,
    Keep,
}

/// Why a header section could not be read.
#[derive(Debug)]
pub enum HeaderError<E> {
    /// The source of the lines failed.
    Input(E),
    /// More than [`MAX_HEADER_SECTION`] octets of header fields; nothing more was kept.
    TooLarge,
}

/// One header field: its name as written and its raw lines, continuation lines included.
#[derive(Debug, Clone, Copy)]
pub struct Field<'h> {
    pub name: &'h str,
    pub raw: &'h [u8],
}

impl Field<'_> {
    /// True when the field is called `name`, compared without case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// The header section of a message: its fields' raw text back to back, and where each ends.
#[derive(Debug)]
pub struct HeaderSection {
    text: Vec<u8>,
    /// The end of each field in `text`; a field starts where the one before it ends.
    ends: Vec<u32>,
    /// The empty line that ended the section, when there was one.
    pub separator: Vec<u8>,
    /// A line read past the header section that was not a header: the first line of the body
    /// (or its first piece; the rest follows from the same source).
    pub first_body_line: Vec<u8>,
    /// The line ending of the first line, for the fields a caller adds.
    pub line_ending: &'static str,
}

impl HeaderSection {
    /// Reads lines up to and including the end of the header section, holding at most `limit`
    /// octets of fields.
    pub fn read<L: Lines>(
        input: &mut L,
        leading_from: LeadingFrom,
        limit: usize,
    ) -> Result<HeaderSection, HeaderError<L::Error>> {
        let mut section = HeaderSection {
            text: Vec::new(),
            ends: Vec::new(),
            separator: Vec::new(),
            first_body_line: Vec::new(),
            line_ending: "\n",
        };
        let mut first = true;
        let mut at_line_start = true;
        let mut dropping = false;
        while let Some(piece) = input.next_line().map_err(HeaderError::Input)? {
            let continues = !at_line_start;
            at_line_start = piece.ends_with(b"\n");
            if continues {
                if !dropping {
                    section.extend_last(piece, limit)?;
                }
                continue;
            }
            dropping = false;
            if first {
                first = false;
                if piece.ends_with(b"\r\n") {
                    section.line_ending = "\r\n";
                }
                if leading_from == LeadingFrom::Drop && piece.starts_with(b"From ") {
                    dropping = true;
                    continue;
                }
            }
            if piece == b"\n" || piece == b"\r\n" {
                section.separator = piece.to_vec();
                break;
            }
            let continuation = matches!(piece.first(), Some(b' ' | b'\t'));
            if continuation && !section.ends.is_empty() {
                section.extend_last(piece, limit)?;
            } else if field_name(piece).is_some() {
                section.ends.push(0);
                section.extend_last(piece, limit)?;
            } else {
                section.first_body_line = piece.to_vec();
                break;
            }
        }
        Ok(section)
    }

    /// Appends `bytes` to the last field.
    fn extend_last<E>(&mut self, bytes: &[u8], limit: usize) -> Result<(), HeaderError<E>> {
        let end = self.text.len() + bytes.len();
        let (Some(last), true) = (self.ends.last_mut(), end <= limit) else {
            return Err(HeaderError::TooLarge);
        };
        *last = u32::try_from(end).map_err(|_| HeaderError::TooLarge)?;
        self.text.extend_from_slice(bytes);
        Ok(())
    }

    /// The fields in order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let raw = &self.text[start..end as usize];
            start = end as usize;
            Field {
                name: field_name(raw).unwrap_or_default(),
                raw,
            }
        })
    }

    /// Every field's raw text, as it came.
    pub fn raw(&self) -> &[u8] {
        &self.text
    }

    /// True when the input had no header field at all.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn count(&self, name: &str) -> usize {
        self.fields().filter(|f| f.is(name)).count()
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields().any(|f| f.is(name))
    }

    /// The hops the message has made so far: its `Received:` fields.
    pub fn hops(&self) -> usize {
        self.count("received")
    }
}

/// True when a message that has made `hops` hops must be refused: the `Received:` field we add
/// would take it past `max_hops`.
pub fn exceeds_hop_limit(hops: usize, max_hops: u32) -> bool {
    hops >= max_hops as usize
}

/// The field name, as written, when `line` starts a header field (`name:` with printable ASCII
/// and no spaces before the colon).
pub fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        return None;
    }
    std::str::from_utf8(name).ok()
}

/// An RFC 5322 date, as the added `Date:` and `Received:` fields write it.
pub fn rfc5322_date(now: &chrono::DateTime<chrono::Local>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The `Received:` field etrnq adds (RFC 5321 §4.4), laid out as
///
/// ```text
/// Received: from HELO-NAME (CLIENT)        <- only for mail received over the network
///         by THIS-HOST (COMMENT) with ESMTP
///         id QUEUE-ID for <RCPT>; DATE
/// ```
///
/// Without `from`, `by` opens the first line.
pub struct Received<'a> {
    /// `helo-name (client address)`, for mail received over the network.
    pub from: Option<&'a str>,
    /// This host and a comment: `mx2.isp.example (etrnq)`.
    pub by: &'a str,
    /// The protocol: `ESMTP` or `SMTP`.
    pub with: Option<&'a str>,
    pub id: QueueId,
    /// The recipient, when there is exactly one (naming more would disclose Bcc recipients).
    pub for_recipient: Option<&'a str>,
    pub date: &'a str,
}

impl Received<'_> {
    /// The field, with `eol` after each of its lines.
    pub fn render(&self, eol: &str) -> String {
        let by = match self.with {
            Some(with) => format!("by {} with {with}", self.by),
            None => format!("by {}", self.by),
        };
        let mut out = match self.from {
            Some(from) => format!("Received: from {from}{eol}\t{by}{eol}"),
            None => format!("Received: {by}{eol}"),
        };
        out.push_str(&format!("\tid {}", self.id));
        if let Some(rcpt) = self.for_recipient {
            out.push_str(&format!(" for <{rcpt}>"));
        }
        out.push_str(&format!("; {}{eol}", self.date));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of a byte string, as `Lines` gives them, each cut into pieces of at most `piece`
    /// octets.
    struct Text<'a> {
        rest: &'a [u8],
        piece: usize,
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
        let text =
            b"From someone Mon Nov 23\nSubject: a long subject line\n continued here\n\nbody";
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{bytes, config, mutated, peak};
    use proptest::prelude::*;

    /// Lines of `rest`, each cut into pieces of at most `piece` octets, as the readers of
    /// standard input and of SMTP data hand them over.
    struct Pieces<'a> {
        rest: &'a [u8],
        piece: usize,
    }

    impl Lines for Pieces<'_> {
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
}
