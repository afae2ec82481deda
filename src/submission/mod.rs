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
//!
//! The argv side is in `request`, standard input read as lines in `input`, the header fields
//! taken and added in `headers`, the refusals in `error`.

mod error;
mod headers;
mod input;
mod request;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};

use crate::address::Address;
use crate::config::Config;
use crate::header::{
    HeaderError, HeaderSection, LeadingFrom, Lines, MAX_HEADER_SECTION, exceeds_hop_limit,
};
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{Queue, QueueError, QueueId};

pub use error::SubmissionError;
use headers::{added_headers, header_recipients};
use input::Input;
pub use request::Request;
use request::{envelope_sender, validate_dsn};

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
        warned: None,
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
