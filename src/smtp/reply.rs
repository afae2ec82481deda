//! Server replies (RFC 5321 §4.2), parsed once into a code, an optional enhanced status code
//! (RFC 3463) and the text lines.
//!
//! The text of a [`Reply`] never holds a control character: whatever the server sent is made
//! printable here, once, so every log line, listing, queue file and bounce that quotes a reply
//! is safe to show on a terminal and to store as one field.

use std::borrow::Cow;
use std::fmt;

/// A three-digit reply code whose first digit is 2, 3, 4 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

impl ReplyCode {
    pub const SERVICE_READY: ReplyCode = ReplyCode(220);
    pub const OK: ReplyCode = ReplyCode(250);
    pub const START_DATA: ReplyCode = ReplyCode(354);
    pub const SERVICE_UNAVAILABLE: ReplyCode = ReplyCode(421);
    /// RFC 5321 §4.5.3.1.10: among other things, "too many recipients" for this transaction.
    pub const INSUFFICIENT_STORAGE: ReplyCode = ReplyCode(452);

    /// Parses the three digits that open a reply line.
    pub fn parse(digits: &[u8]) -> Option<ReplyCode> {
        match digits {
            [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9'] => Some(ReplyCode(
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
            )),
            _ => None,
        }
    }

    pub fn value(self) -> u16 {
        self.0
    }

    /// The first digit: 2 success, 3 intermediate, 4 transient failure, 5 permanent failure.
    pub fn class(self) -> u8 {
        (self.0 / 100) as u8
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An RFC 3463 enhanced status code such as `2.0.0` or `4.7.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    /// Parses `class.subject.detail` as it opens the text of a reply line.
    pub fn parse(word: &str) -> Option<EnhancedCode> {
        let mut parts = word.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() || !matches!(class, "2" | "4" | "5") {
            return None;
        }
        let number = |part: &str| -> Option<u16> {
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        Some(EnhancedCode {
            class: class.as_bytes()[0] - b'0',
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply, single- or multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    /// Present when the first line's text opens with an enhanced status code of the same class.
    pub enhanced: Option<EnhancedCode>,
    /// The text after `NNN-` or `NNN ` of each line (the enhanced code included), made
    /// printable: see [`printable`].
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a reply from raw lines without their line ends, checking every line's syntax: all
    /// lines carry the same code, every line but the last has `-` after it, the last has a space or
    /// nothing. The syntax is checked on the line as received; the text kept is made printable.
    pub fn from_lines<S: AsRef<str>>(raw: &[S]) -> Result<Reply, String> {
        let Some((last, _)) = raw.split_last() else {
            return Err("empty reply".to_string());
        };
        let mut code = None;
        let mut lines = Vec::with_capacity(raw.len());
        for (index, line) in raw.iter().enumerate() {
            let line = line.as_ref();
            let (line_code, continued, text) = split_line(line)?;
            if *code.get_or_insert(line_code) != line_code {
                return Err(format!("reply code changes within a reply: {line:?}"));
            }
            let is_last = index + 1 == raw.len();
            if continued == is_last {
                return Err(format!("badly continued reply line: {line:?}"));
            }
            lines.push(printable(text).into_owned());
        }
        let code = code.ok_or_else(|| format!("no reply code in {:?}", last.as_ref()))?;
        let enhanced = lines
            .first()
            .and_then(|text| text.split_whitespace().next())
            .and_then(EnhancedCode::parse)
            .filter(|e| e.class == code.class());
        Ok(Reply {
            code,
            enhanced,
            lines,
        })
    }

    pub fn is_positive(&self) -> bool {
        self.code.class() == 2
    }

    pub fn is_intermediate(&self) -> bool {
        self.code.class() == 3
    }

    pub fn is_transient(&self) -> bool {
        self.code.class() == 4
    }

    pub fn is_permanent(&self) -> bool {
        self.code.class() == 5
    }

    /// All lines' text joined by single spaces: the reply as one log or report line.
    pub fn message(&self) -> String {
        self.lines
            .iter()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Reply {
    /// `250 2.0.0 Queuing started`: the code and the text of every line on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message();
        if message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, message)
        }
    }
}

/// `text` with every control character replaced: a TAB by a space, any other (C0 controls such as
/// NUL, a bare CR or ESC, DEL, and the C1 controls) by `?`, as Postfix shows untrusted text.
/// Replies reach logs, `mailq`, queue files and bounces; none of them may carry a character that
/// moves a terminal's cursor, ends a record or a line, or cuts a string short.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect::<String>()
        .into()
}

/// Splits `250-text`, `250 text` or `250` into its code, whether more lines follow, and the text.
pub(crate) fn split_line(line: &str) -> Result<(ReplyCode, bool, &str), String> {
    let bytes = line.as_bytes();
    let code = bytes
        .get(..3)
        .and_then(ReplyCode::parse)
        .ok_or_else(|| format!("malformed reply line: {line:?}"))?;
    match bytes.get(3) {
        None => Ok((code, false, "")),
        Some(b' ') => Ok((code, false, &line[4..])),
        Some(b'-') => Ok((code, true, &line[4..])),
        Some(_) => Err(format!("malformed reply line: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let reply =
            Reply::from_lines(&["250 2.0.0 Queuing for node customer.test started"]).unwrap();
        assert_eq!(reply.code.value(), 250);
        assert_eq!(reply.enhanced.unwrap().to_string(), "2.0.0");
        assert!(reply.is_positive());
        assert_eq!(
            reply.to_string(),
            "250 2.0.0 Queuing for node customer.test started"
        );
    }

    #[test]
    fn postfix_replies_have_no_enhanced_code() {
        let reply = Reply::from_lines(&["459 <unknown.test>: service unavailable"]).unwrap();
        assert!(reply.is_transient());
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.message(), "<unknown.test>: service unavailable");
    }

    #[test]
    fn multi_line() {
        let reply =
            Reply::from_lines(&["250-mta.example.test", "250-PIPELINING", "250 ETRN"]).unwrap();
        assert_eq!(reply.lines, ["mta.example.test", "PIPELINING", "ETRN"]);
        assert_eq!(reply.to_string(), "250 mta.example.test PIPELINING ETRN");
    }

    #[test]
    fn bare_code_is_a_reply() {
        let reply = Reply::from_lines(&["250"]).unwrap();
        assert_eq!(reply.lines, [""]);
        assert_eq!(reply.to_string(), "250");
    }

    #[test]
    fn enhanced_code_of_another_class_is_ignored() {
        let reply = Reply::from_lines(&["550 2.0.0 odd"]).unwrap();
        assert_eq!(reply.enhanced, None);
        assert!(reply.is_permanent());
    }

    #[test]
    fn malformed_replies_are_refused() {
        let bad: &[&[&str]] = &[
            &[],
            &["25"],
            &["2500 x"],
            &["650 x"],
            &["1xx x"],
            &["250_x"],
            &["abc def"],
            &["250-first", "251 second"],
            &["250-first"],
            &["250 first", "250 second"],
            &["270 x"],
        ];
        for lines in bad {
            assert!(Reply::from_lines(lines).is_err(), "{lines:?} was accepted");
        }
    }

    #[test]
    fn control_characters_never_reach_the_text() {
        let reply = Reply::from_lines(&[
            "450-4.2.0 \u{1b}[2J\u{7}busy\0now\rreally",
            "450 4.2.0 tab\there\u{7f}\u{9b}31m",
        ])
        .unwrap();
        assert_eq!(
            reply.lines,
            ["4.2.0 ?[2J?busy?now?really", "4.2.0 tab here??31m"]
        );
        assert_eq!(reply.enhanced.unwrap().to_string(), "4.2.0");
        assert!(!reply.to_string().chars().any(char::is_control), "{reply}");
        assert_eq!(printable("plain text"), Cow::Borrowed("plain text"));
    }

    #[test]
    fn a_control_character_in_the_code_or_the_separator_is_malformed() {
        for line in ["2\u{0}0 x", "250\rx", "250\0x"] {
            assert!(Reply::from_lines(&[line]).is_err(), "{line:?} was accepted");
        }
    }

    #[test]
    fn enhanced_code_syntax() {
        assert!(EnhancedCode::parse("4.7.1").is_some());
        assert!(EnhancedCode::parse("5.1.10").is_some());
        assert!(EnhancedCode::parse("3.0.0").is_none());
        assert!(EnhancedCode::parse("4.7").is_none());
        assert!(EnhancedCode::parse("4.7.1.2").is_none());
        assert!(EnhancedCode::parse("4.x.1").is_none());
        assert!(EnhancedCode::parse("4.1000.1").is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated, peak, text};
    use proptest::prelude::*;

    /// Reply text as servers write it: printable, the enhanced code first now and then.
    fn reply_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[ -~]{0,60}",
            1 => ("[245]\\.[0-9]{1,3}\\.[0-9]{1,3}", "[ -~]{0,40}")
                .prop_map(|(code, text)| format!("{code} {text}")),
        ]
    }

    fn code() -> impl Strategy<Value = u16> {
        (2..=5u16, 0..=5u16, 0..=9u16).prop_map(|(a, b, c)| a * 100 + b * 10 + c)
    }

    /// A reply on the wire: every line `NNN-text` but the last, `NNN text`.
    fn wire(code: u16, texts: &[String]) -> Vec<String> {
        let last = texts.len() - 1;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| format!("{code}{}{text}", if i == last { ' ' } else { '-' }))
            .collect()
    }

    /// Parses lines: no panic, and a reply only when every line holds the promises.
    fn parse(lines: &[String]) -> Result<Reply, String> {
        let total: usize = lines.iter().map(|l| l.len() + 32).sum();
        let (result, most) = peak(|| Reply::from_lines(lines));
        // The lines' text copied once, and an error that quotes a line escaped (up to six
        // octets for each).
        assert!(most <= 8 * total + 1024, "{most} bytes for {total}");
        if let Ok(reply) = &result {
            assert_eq!(reply.lines.len(), lines.len());
            for (i, line) in lines.iter().enumerate() {
                let (code, continued, text) = split_line(line).unwrap();
                assert_eq!(code, reply.code);
                assert_eq!(continued, i + 1 < lines.len());
                assert_eq!(printable(text), reply.lines[i]);
                assert!(!reply.lines[i].chars().any(char::is_control));
            }
            if let Some(enhanced) = reply.enhanced {
                assert_eq!(enhanced.class, reply.code.class());
            }
        }
        result
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn any_line_splits_or_is_refused(line in text(80)) {
            if let Ok((code, _, rest)) = split_line(&line) {
                prop_assert!(line.starts_with(&code.to_string()));
                prop_assert!(line.ends_with(rest));
                prop_assert!((200..600).contains(&code.value()));
            }
        }

        #[test]
        fn any_lines_are_a_reply_or_refused(lines in proptest::collection::vec(text(40), 0..6)) {
            let _ = parse(&lines);
        }

        #[test]
        fn near_valid_replies_are_a_reply_or_refused(
            lines in (code(), proptest::collection::vec(reply_text(), 1..6))
                .prop_flat_map(|(code, texts)| mutated(Just(wire(code, &texts).join("\n").into_bytes())))
                .prop_map(|bytes| {
                    String::from_utf8_lossy(&bytes).split('\n').map(str::to_string).collect::<Vec<_>>()
                })
        ) {
            let _ = parse(&lines);
        }

        #[test]
        fn what_a_server_writes_the_client_reads(
            code in code(),
            texts in proptest::collection::vec(reply_text(), 1..8),
        ) {
            let reply = parse(&wire(code, &texts)).unwrap();
            prop_assert_eq!(reply.code.value(), code);
            prop_assert_eq!(&reply.lines, &texts);
            let first_word = texts[0].split_whitespace().next().unwrap_or_default();
            let enhanced = EnhancedCode::parse(first_word).filter(|e| e.class == reply.code.class());
            prop_assert_eq!(reply.enhanced, enhanced);
            // The one-line form a log shows reads back as the same reply.
            let again = parse(&[reply.to_string()]).unwrap();
            prop_assert_eq!(again.code, reply.code);
            prop_assert_eq!(again.message(), reply.message());
        }

        #[test]
        fn a_wrong_continuation_is_refused(
            code in code(),
            texts in proptest::collection::vec(reply_text(), 2..8),
            flip in any::<usize>(),
        ) {
            let mut lines = wire(code, &texts);
            let at = flip % lines.len();
            let mark = if at + 1 == lines.len() { "-" } else { " " };
            lines[at].replace_range(3..4, mark);
            prop_assert!(parse(&lines).is_err());
            let mut mixed = wire(code, &texts);
            let other = if code % 10 == 9 { code - 1 } else { code + 1 };
            mixed[at].replace_range(0..3, &other.to_string());
            prop_assert!(parse(&mixed).is_err());
        }
    }
}

/// Replies as a server writes them: built from its own code and text, put on the wire by
/// [`Reply::write_to`] alone.
impl Reply {
    /// The server's reply `code` (2xx to 5xx) with `text`, one line for each `\n` in it. A TAB
    /// stays, as RFC 5321 allows it in reply text and a client's argument quoted back may hold
    /// one; any other control character becomes `?`, so no line can end early or break the
    /// reply. The enhanced status code is read from the text as a client reads it.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        debug_assert!((200..600).contains(&code), "reply code {code}");
        let code = ReplyCode(code);
        let unsafe_char = |c: char| c.is_control() && c != '\t';
        let clean = |line: &str| -> String {
            line.chars()
                .map(|c| if unsafe_char(c) { '?' } else { c })
                .collect()
        };
        let text = text.into();
        let lines: Vec<String> = if text.contains('\n') {
            text.split('\n').map(clean).collect()
        } else if text.contains(unsafe_char) {
            vec![clean(&text)]
        } else {
            vec![text]
        };
        let enhanced = lines
            .first()
            .and_then(|text| text.split_whitespace().next())
            .and_then(EnhancedCode::parse)
            .filter(|e| e.class == code.class());
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// Writes the reply as RFC 5321 §4.2 has it on the wire: `NNN-text` for every line but the
    /// last, `NNN text` for the last, each ending in CRLF.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let last = self.lines.len().saturating_sub(1);
        for (index, line) in self.lines.iter().enumerate() {
            let mark = if index < last { '-' } else { ' ' };
            write!(out, "{}{mark}{line}\r\n", self.code)?;
        }
        Ok(())
    }
}
