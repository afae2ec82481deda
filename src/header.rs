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
//! Memory: the header section is held whole (it is bounded by the caller's size limit); the body
//! is never read here.

use crate::queue::QueueId;

/// A source of lines, each with its line ending (the last may have none).
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

/// One header field: its lower-case name and its raw lines, continuation lines included.
#[derive(Debug)]
pub struct Field {
    pub name: String,
    pub raw: Vec<u8>,
}

impl Field {
    pub fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// The header section of a message, split into fields.
#[derive(Debug)]
pub struct HeaderSection {
    pub fields: Vec<Field>,
    /// The empty line that ended the section, when there was one.
    pub separator: Vec<u8>,
    /// A line read past the header section that was not a header: the first line of the body.
    pub first_body_line: Vec<u8>,
    /// The line ending of the first line, for the fields a caller adds.
    pub line_ending: &'static str,
}

impl HeaderSection {
    /// Reads lines up to and including the end of the header section.
    pub fn read<L: Lines>(
        input: &mut L,
        leading_from: LeadingFrom,
    ) -> Result<HeaderSection, L::Error> {
        let mut section = HeaderSection {
            fields: Vec::new(),
            separator: Vec::new(),
            first_body_line: Vec::new(),
            line_ending: "\n",
        };
        let mut first = true;
        while let Some(line) = input.next_line()? {
            if first {
                first = false;
                if line.ends_with(b"\r\n") {
                    section.line_ending = "\r\n";
                }
                if leading_from == LeadingFrom::Drop && line.starts_with(b"From ") {
                    continue;
                }
            }
            if line == b"\n" || line == b"\r\n" {
                section.separator = line.to_vec();
                break;
            }
            let continuation = matches!(line.first(), Some(b' ' | b'\t'));
            match section.fields.last_mut() {
                Some(field) if continuation => field.raw.extend_from_slice(line),
                _ => match field_name(line) {
                    Some(name) => section.fields.push(Field {
                        name,
                        raw: line.to_vec(),
                    }),
                    None => {
                        section.first_body_line = line.to_vec();
                        break;
                    }
                },
            }
        }
        Ok(section)
    }

    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|f| f.is(name)).count()
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
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

/// The lower-case field name when `line` starts a header field (`name:` with printable ASCII and
/// no spaces before the colon).
pub fn field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
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

    /// Lines of a byte string, as `Lines` gives them.
    struct Text<'a> {
        rest: &'a [u8],
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
                .map_or(self.rest.len(), |i| i + 1);
            let (line, rest) = self.rest.split_at(end);
            self.rest = rest;
            Ok(Some(line))
        }
    }

    fn read(text: &str, leading_from: LeadingFrom) -> HeaderSection {
        let Ok(section) = HeaderSection::read(
            &mut Text {
                rest: text.as_bytes(),
            },
            leading_from,
        );
        section
    }

    fn section(text: &str) -> HeaderSection {
        read(text, LeadingFrom::Drop)
    }

    #[test]
    fn header_fields_and_continuations() {
        let h = section("Received: a\n\tb\nSubject: x\nreceived: c\n\nbody\n");
        assert_eq!(h.fields.len(), 3);
        assert_eq!(h.hops(), 2);
        assert_eq!(h.fields[0].raw, b"Received: a\n\tb\n");
        assert_eq!(h.separator, b"\n");
    }

    #[test]
    fn text_without_headers_is_all_body() {
        let h = section("hello world\nsecond\n");
        assert!(h.fields.is_empty());
        assert_eq!(h.first_body_line, b"hello world\n");
    }

    #[test]
    fn crlf_input_gets_crlf_headers() {
        assert_eq!(section("Subject: x\r\n\r\n").line_ending, "\r\n");
    }

    #[test]
    fn mbox_from_line_is_dropped_only_when_asked() {
        let text = "From alice Mon Nov 23 06:27:00 2026\nSubject: x\n\n";
        assert_eq!(section(text).fields.len(), 1);
        let kept = read(text, LeadingFrom::Keep);
        assert!(kept.fields.is_empty());
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
