//! Submission: one message from a local program into the queue, as `sendmail -odq` does it.
//!
//! The message is read from a stream (standard input), its header section examined, and the
//! whole written to a queue draft in one pass: the headers a submission agent adds when missing
//! (`Received:` always, exactly one; `Date:`, `From:`, `Message-ID:` when absent) at the top, the
//! submitted header fields as they were except `Bcc:`, then the body byte for byte. Memory is
//! bounded whatever the input: the header section is held up to
//! [`crate::header::MAX_HEADER_SECTION`] (a larger one is refused, as sendmail refuses headers
//! over its `MaxHeadersLength`), input is read in pieces of at most 64 KiB however long its
//! lines, and the body streams to disk.
//!
//! Promises: nothing is left in the queue unless everything succeeded; every refusal (no
//! recipients, a malformed address, too large, a header section too large, too many hops,
//! unreadable input, free space below `queue_min_free`, a full disk) is a typed error with its
//! sysexits status. The free-space reserve is checked before the message is read and again
//! before it is committed, so the queue's file system keeps room for delivery state and bounces. Line endings are kept as submitted; added headers use
//! the line ending of the first line of input. A leading mbox `From ` line is dropped, as
//! Postfix's sendmail does, since it is not a header and would push the real headers into the
//! body.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};

use mail_parser::{HeaderName, MessageParser};

use crate::address::{Address, AddressError, Domain, ReversePath};
use crate::config::Config;
use crate::header::{
    HeaderError, HeaderSection, LeadingFrom, Lines, MAX_HEADER_SECTION, Received,
    exceeds_hop_limit, rfc5322_date,
};
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{Queue, QueueError, QueueId};
use crate::sysexits::{Status, Sysexit};

/// What the submitting program asked for (sendmail's argv, already parsed).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `-f`/`-r`: the envelope sender; the invoking user when absent.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` header we add.
    pub full_name: Option<String>,
    /// Recipients named as arguments.
    pub recipients: Vec<String>,
    /// `-t`: also take recipients from `To:`, `Cc:` and `Bcc:`.
    pub recipients_from_headers: bool,
    /// False with `-i`/`-oi`: a line holding a lone `.` no longer ends the input.
    pub dot_ends_input: bool,
    /// `-N`: DSN NOTIFY.
    pub notify: Option<String>,
    /// `-R`: DSN RET.
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("no recipients: name them as arguments or use -t")]
    NoRecipients,
    #[error("no recipient addresses found in the To:, Cc: or Bcc: headers")]
    NoHeaderRecipients,
    #[error("bad recipient {0}")]
    BadRecipient(AddressError),
    #[error("bad sender {0}")]
    BadSender(AddressError),
    #[error("bad address in {header}: header: {source}")]
    BadHeaderAddress {
        header: &'static str,
        source: AddressError,
    },
    #[error("{0}")]
    BadOption(String),
    #[error("cannot determine the sender: no user name for uid {0}; use -f")]
    UnknownUser(u32),
    #[error("message exceeds the size limit of {limit} bytes")]
    TooBig { limit: u64 },
    #[error("the header section exceeds {limit} bytes")]
    HeaderTooBig { limit: usize },
    #[error(
        "the queue file system has {free} bytes free, less than queue_min_free ({reserve}); try again later"
    )]
    LowOnSpace { free: u64, reserve: u64 },
    #[error(
        "too many hops: the message already has {count} Received: headers (limit {limit}); a mail loop?"
    )]
    TooManyHops { count: usize, limit: u32 },
    #[error("cannot read the message: {0}")]
    Input(io::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Sysexit for SubmissionError {
    fn status(&self) -> Status {
        match self {
            SubmissionError::NoRecipients
            | SubmissionError::BadRecipient(_)
            | SubmissionError::BadSender(_)
            | SubmissionError::BadOption(_) => Status::Usage,
            SubmissionError::NoHeaderRecipients
            | SubmissionError::BadHeaderAddress { .. }
            | SubmissionError::TooBig { .. }
            | SubmissionError::HeaderTooBig { .. }
            | SubmissionError::TooManyHops { .. } => Status::DataErr,
            SubmissionError::LowOnSpace { .. } => Status::TempFail,
            SubmissionError::UnknownUser(_) => Status::NoUser,
            SubmissionError::Input(_) => Status::NoInput,
            SubmissionError::Queue(e) => e.status(),
        }
    }
}

/// Reads one message from `input` and queues it. Returns its queue id.
pub fn submit(
    queue: &Queue,
    config: &Config,
    request: &Request,
    input: impl Read,
) -> Result<QueueId, SubmissionError> {
    let here = config.primary_hostname();
    validate_dsn(request)?;
    let sender = envelope_sender(request, &here)?;
    let mut recipients = RecipientList::default();
    for raw in &request.recipients {
        let address = Address::parse(raw, &here).map_err(SubmissionError::BadRecipient)?;
        recipients.add(address);
    }
    if recipients.is_empty() && !request.recipients_from_headers {
        return Err(SubmissionError::NoRecipients);
    }
    check_reserve(queue, config)?;

    // One byte past the limit is enough to know the message is too big.
    let mut reader = Input::new(
        BufReader::with_capacity(64 * 1024, input.take(config.max_message_size + 1)),
        request.dot_ends_input,
    );
    let header = HeaderSection::read(&mut reader, LeadingFrom::Drop, MAX_HEADER_SECTION).map_err(
        |e| match e {
            HeaderError::Input(e) => e,
            HeaderError::TooLarge => SubmissionError::HeaderTooBig {
                limit: MAX_HEADER_SECTION,
            },
        },
    )?;
    let received = header.hops();
    if exceeds_hop_limit(received, config.max_hops) {
        return Err(SubmissionError::TooManyHops {
            count: received,
            limit: config.max_hops,
        });
    }
    if request.recipients_from_headers {
        for address in header_recipients(&header, &here)? {
            recipients.add(address);
        }
        if recipients.is_empty() {
            return Err(SubmissionError::NoHeaderRecipients);
        }
    }

    let mut draft = queue.draft()?;
    let id = draft.id();
    let now = chrono::Local::now();
    let added = added_headers(&header, id, &here, &sender, request, &now);
    let mut written = 0u64;
    let mut emit =
        |draft: &mut crate::queue::Draft<'_>, bytes: &[u8]| -> Result<(), SubmissionError> {
            written += bytes.len() as u64;
            if written > config.max_message_size {
                return Err(SubmissionError::TooBig {
                    limit: config.max_message_size,
                });
            }
            draft.write_all(bytes).map_err(|e| {
                SubmissionError::Queue(QueueError::Io {
                    action: "cannot write",
                    path: queue.root().join("tmp"),
                    source: e,
                })
            })
        };
    emit(&mut draft, added.as_bytes())?;
    for field in header.fields().filter(|f| !f.is("bcc")) {
        emit(&mut draft, field.raw)?;
    }
    if header.is_empty() && header.separator.is_empty() {
        // Submitted text without a header section: keep it out of the headers we added.
        emit(&mut draft, header.line_ending.as_bytes())?;
    } else {
        emit(&mut draft, &header.separator)?;
    }
    emit(&mut draft, &header.first_body_line)?;
    while let Some(line) = reader.next_line()? {
        emit(&mut draft, line)?;
    }

    let envelope = Envelope {
        id,
        arrival: now.timestamp(),
        size: written,
        sender: sender.to_string(),
        notify: request.notify.clone(),
        ret: request.ret.clone(),
        envid: request.envid.clone(),
        recipients: recipients
            .into_vec()
            .into_iter()
            .map(|a| Recipient::new(a.to_string()))
            .collect(),
    };
    // Writing the message took space too: what is left must still hold the reserve.
    check_reserve(queue, config)?;
    Ok(draft.commit(&envelope)?)
}

/// Refuses new mail while the queue's file system has less free space than `queue_min_free`.
fn check_reserve(queue: &Queue, config: &Config) -> Result<(), SubmissionError> {
    let reserve = config.queue_min_free();
    if reserve == 0 {
        return Ok(());
    }
    let free = queue.free_space()?;
    if free < reserve {
        return Err(SubmissionError::LowOnSpace { free, reserve });
    }
    Ok(())
}

fn validate_dsn(request: &Request) -> Result<(), SubmissionError> {
    if let Some(notify) = &request.notify {
        let words: Vec<String> = notify
            .split(',')
            .map(|w| w.trim().to_ascii_lowercase())
            .collect();
        let valid = words == ["never"]
            || words
                .iter()
                .all(|w| matches!(w.as_str(), "success" | "failure" | "delay"));
        if !valid {
            return Err(SubmissionError::BadOption(format!(
                "-N {notify:?}: expected never, or a list of success, failure, delay"
            )));
        }
    }
    if let Some(ret) = &request.ret
        && !ret.eq_ignore_ascii_case("full")
        && !ret.eq_ignore_ascii_case("hdrs")
    {
        return Err(SubmissionError::BadOption(format!(
            "-R {ret:?}: expected full or hdrs"
        )));
    }
    if let Some(envid) = &request.envid
        && (envid.len() > 100 || !envid.bytes().all(|b| (b'!'..=b'~').contains(&b)))
    {
        return Err(SubmissionError::BadOption(format!(
            "-V {envid:?}: at most 100 printable characters without spaces"
        )));
    }
    Ok(())
}

fn envelope_sender(request: &Request, here: &Domain) -> Result<ReversePath, SubmissionError> {
    if let Some(raw) = &request.sender {
        return ReversePath::parse(raw, here).map_err(SubmissionError::BadSender);
    }
    let uid = nix::unistd::Uid::from_raw(crate::queue::invoking_uid());
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .ok_or(SubmissionError::UnknownUser(uid.as_raw()))?;
    Address::parse(&name, here)
        .map(ReversePath::Mailbox)
        .map_err(SubmissionError::BadSender)
}

/// Recipients in the order given, each once (domains compare without case).
#[derive(Default)]
struct RecipientList {
    seen: HashSet<(String, String)>,
    list: Vec<Address>,
}

impl RecipientList {
    fn add(&mut self, address: Address) {
        let key = (
            address.local_part().to_string(),
            address.domain().to_lowercase(),
        );
        if self.seen.insert(key) {
            self.list.push(address);
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_vec(self) -> Vec<Address> {
        self.list
    }
}

/// The longest piece of a line [`Input`] holds: a longer line is handed on in pieces.
const PIECE: usize = 64 * 1024;

/// The input, line by line, ending at EOF or (unless `-i`) at a line holding a lone dot. A line
/// longer than [`PIECE`] comes in pieces, each but the last without a line ending.
struct Input<R> {
    reader: R,
    dot_ends_input: bool,
    line: Vec<u8>,
    /// The next piece starts a line (the last one ended in LF).
    at_line_start: bool,
    done: bool,
}

impl<R: BufRead> Input<R> {
    fn new(reader: R, dot_ends_input: bool) -> Input<R> {
        Input {
            reader,
            dot_ends_input,
            line: Vec::with_capacity(1024),
            at_line_start: true,
            done: false,
        }
    }

    /// Reads up to the next LF, or [`PIECE`] octets, or the end of input.
    fn read_piece(&mut self) -> io::Result<()> {
        self.line.clear();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(());
            }
            let room = PIECE - self.line.len();
            let window = &available[..available.len().min(room)];
            let (take, found) = match window.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (window.len(), false),
            };
            self.line.extend_from_slice(&window[..take]);
            self.reader.consume(take);
            if found || self.line.len() == PIECE {
                return Ok(());
            }
        }
    }
}

impl<R: BufRead> Lines for Input<R> {
    type Error = SubmissionError;

    /// The next line (or piece of one) with its line ending (the last may have none).
    fn next_line(&mut self) -> Result<Option<&[u8]>, SubmissionError> {
        if self.done {
            return Ok(None);
        }
        self.read_piece().map_err(SubmissionError::Input)?;
        let starts_line = self.at_line_start;
        self.at_line_start = self.line.ends_with(b"\n");
        let lone_dot = starts_line
            && self.dot_ends_input
            && matches!(&self.line[..], b".\n" | b".\r\n" | b".");
        if self.line.is_empty() || lone_dot {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(&self.line))
    }
}

/// The addresses of `To:`, `Cc:` and `Bcc:`, as `-t` takes them.
fn header_recipients(
    header: &HeaderSection,
    here: &Domain,
) -> Result<Vec<Address>, SubmissionError> {
    let mut raw = Vec::new();
    for field in header
        .fields()
        .filter(|f| f.is("to") || f.is("cc") || f.is("bcc"))
    {
        raw.extend_from_slice(field.raw);
    }
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    raw.extend_from_slice(b"\n");
    let Some(message) = MessageParser::new().parse_headers(&raw) else {
        return Ok(Vec::new());
    };
    let mut addresses = Vec::new();
    for (header, name) in [
        (HeaderName::To, "To"),
        (HeaderName::Cc, "Cc"),
        (HeaderName::Bcc, "Bcc"),
    ] {
        for value in message.header_values(header) {
            let Some(list) = value.as_address() else {
                continue;
            };
            for addr in list.iter() {
                let Some(text) = addr.address() else { continue };
                let address = Address::parse(text, here).map_err(|source| {
                    SubmissionError::BadHeaderAddress {
                        header: name,
                        source,
                    }
                })?;
                addresses.push(address);
            }
        }
    }
    Ok(addresses)
}

fn added_headers(
    header: &HeaderSection,
    id: QueueId,
    here: &Domain,
    sender: &ReversePath,
    request: &Request,
    now: &chrono::DateTime<chrono::Local>,
) -> String {
    let eol = header.line_ending;
    let date = rfc5322_date(now);
    let uid = crate::queue::invoking_uid();
    let by = format!("{here} (etrnq, from userid {uid})");
    let mut out = Received {
        from: None,
        by: &by,
        with: None,
        id,
        for_recipient: None,
        date: &date,
    }
    .render(eol);
    if !header.has("date") {
        out.push_str(&format!("Date: {date}{eol}"));
    }
    if !header.has("from") {
        let mailbox = match sender {
            ReversePath::Mailbox(address) => address.to_string(),
            ReversePath::Null => format!("MAILER-DAEMON@{here}"),
        };
        match request.full_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => {
                out.push_str(&format!("From: {} <{mailbox}>{eol}", display_name(name)))
            }
            _ => out.push_str(&format!("From: {mailbox}{eol}")),
        }
    }
    if !header.has("message-id") {
        out.push_str(&format!("Message-ID: <{id}@{here}>{eol}"));
    }
    out
}

/// A display name as an RFC 5322 phrase: left alone when it is plain words, quoted otherwise.
fn display_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        return name.to_string();
    }
    let escaped: String = name
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
