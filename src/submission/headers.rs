//! The header section in a submission: the recipients `-t` takes from it, and the fields a
//! submission agent adds when they are missing.

use mail_parser::{HeaderName, MessageParser};

use crate::address::{Address, Domain, ReversePath};
use crate::header::{HeaderSection, Received, rfc5322_date};
use crate::queue::QueueId;

use super::{Request, SubmissionError};

/// The addresses of `To:`, `Cc:` and `Bcc:`, as `-t` takes them.
pub(super) fn header_recipients(
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

pub(super) fn added_headers(
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
pub(super) fn display_name(name: &str) -> String {
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
