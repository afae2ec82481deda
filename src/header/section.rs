//! Reading a header section: field by field, continuation lines kept with their field, raw
//! bytes kept as they came, and never more than a given number of octets held.

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
