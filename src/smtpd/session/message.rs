//! A message, after DATA or in BDAT chunks: read from the client into a queue draft, judged once
//! all of it is in, and committed before the 250.
//!
//! Receiving runs in four steps: the `Received:` field this server adds
//! ([`Session::received_field`]), the copy of the data into the draft
//! ([`Session::copy_message`]), the judgement of what arrived ([`Session::judge`]), and the
//! commit with its log lines ([`Session::commit`]).
//!
//! The client is answered only after the end of its data, whatever was wrong with it, so the
//! session stays in step: the data is read to its end even when it is refused on its first
//! line. Only the header section is held in memory, and at most [`MAX_HEADER_SECTION`] of it;
//! the body streams to the draft. A refused message is never committed, so it leaves nothing in
//! the queue; a committed one has been fsynced and renamed into it before the 250 goes out.

use std::io;

use chrono::{DateTime, Local};

use crate::header::{
    HeaderError, HeaderSection, LeadingFrom, Lines, MAX_HEADER_SECTION, Received,
    exceeds_hop_limit, rfc5322_date,
};
use crate::queue::envelope::{Envelope, Recipient};
use crate::queue::{Draft, QueueId};
use crate::smtp::Reply;

use super::super::wire::{Channel, Chunk, CommandLine, DataFault, LineFault};
use super::Session;
use super::bdat::next_chunk;
use super::phase::{Hello, Transaction};

/// How the message comes: after DATA, or in BDAT chunks from the first one.
pub(super) enum Body {
    Data,
    Chunks(Chunk),
}

/// What became of a message.
pub(super) enum Outcome {
    /// Committed to the queue.
    Queued(QueueId),
    /// Read to its end and refused with this reply; nothing kept.
    Refused(Reply),
    /// The client sent this command line between chunks instead of the next BDAT: nothing
    /// kept, and the command is still to be answered.
    Abandoned(CommandLine),
}

/// What the copy of the data left to judge.
struct Copied {
    /// `None` when the header section was over its limit: the data was read, nothing kept.
    header: Option<HeaderSection>,
    /// Octets written to the draft.
    written: u64,
    write_error: Option<io::Error>,
    fault: Option<DataFault>,
}

impl Session<'_> {
    /// Reads the message into `draft` and commits it. The outer error is the connection's; the
    /// inner outcome says whether the message was queued, refused after all of it was read, or
    /// abandoned between chunks.
    pub(super) fn receive(
        &mut self,
        mut draft: Draft<'_>,
        hello: &Hello,
        transaction: &Transaction,
        body: Body,
    ) -> io::Result<Outcome> {
        let now = Local::now();
        let received = self.received_field(draft.id(), &now, hello, transaction);
        let limit = self.server.limits.max_message_size;
        let copied = match body {
            Body::Data => {
                let mut data = self.channel.data(limit);
                let mut copied = copy_message(&mut data, &mut draft, &received)?;
                copied.fault = data.fault();
                copied
            }
            Body::Chunks(first) => {
                let limits = &self.server.limits;
                let (command, data_timeout, rate) = (
                    limits.command_timeout,
                    limits.data_timeout,
                    limits.min_data_rate,
                );
                let mut instead = None;
                let next = |channel: &mut Channel, size: u64| {
                    next_chunk(channel, size, command, (data_timeout, rate), &mut instead)
                };
                let mut chunks = self.channel.chunks(limit, first, next);
                let mut copied = copy_message(&mut chunks, &mut draft, &received)?;
                copied.fault = chunks.fault();
                drop(chunks);
                if let Some(line) = instead {
                    return Ok(Outcome::Abandoned(line));
                }
                copied
            }
        };
        if let Err(refusal) = self.judge(draft.id(), &copied) {
            return Ok(Outcome::Refused(refusal));
        }
        Ok(
            match self.commit(draft, &now, copied.written, hello, transaction) {
                Ok(id) => Outcome::Queued(id),
                Err(refusal) => Outcome::Refused(refusal),
            },
        )
    }

    /// The `Received:` field that opens the queued message.
    fn received_field(
        &self,
        id: QueueId,
        now: &DateTime<Local>,
        hello: &Hello,
        transaction: &Transaction,
    ) -> String {
        let from = format!("{} ({})", hello.name, self.client.literal());
        let by = format!("{} (etrnq)", self.server.hostname);
        let only = match &transaction.recipients[..] {
            [one] => Some(one.to_string()),
            _ => None,
        };
        Received {
            from: Some(&from),
            by: &by,
            // RFC 3848: ESMTPS is ESMTP with STARTTLS.
            with: Some(match (hello.extended, self.channel.is_tls()) {
                (true, true) => "ESMTPS",
                (true, false) => "ESMTP",
                (false, _) => "SMTP",
            }),
            id,
            for_recipient: only.as_deref(),
            date: &rfc5322_date(now),
        }
        .render("\r\n")
    }

    /// The reply that refuses what arrived, if anything does: a fault in the data, a header
    /// section over its limit, too many hops, a write that failed, or too little room left.
    fn judge(&mut self, id: QueueId, copied: &Copied) -> Result<(), Reply> {
        let server = self.server;
        let limit = server.limits.max_message_size;
        match copied.fault {
            Some(DataFault::TooBig) => {
                return Err(Reply::new(
                    552,
                    format!(
                        "5.3.4 Error: message exceeds fixed maximum message size of {limit} octets"
                    ),
                ));
            }
            Some(DataFault::Line(LineFault::TooLong)) => {
                return Err(Reply::new(
                    550,
                    "5.5.2 Error: message line longer than 1000 octets; message refused",
                ));
            }
            Some(DataFault::Line(LineFault::BareCrOrLf)) => {
                self.errors += 1;
                return Err(Reply::new(
                    550,
                    "5.5.2 Error: bare <CR> or <LF> in message data; message refused",
                ));
            }
            None => {}
        }
        let Some(header) = &copied.header else {
            return Err(Reply::new(
                552,
                format!(
                    "5.3.4 Error: header section exceeds fixed maximum of {MAX_HEADER_SECTION} octets; message refused"
                ),
            ));
        };
        let hops = header.hops();
        if exceeds_hop_limit(hops, server.config.max_hops) {
            return Err(Reply::new(
                554,
                format!(
                    "5.4.6 Error: too many hops ({hops} Received: header fields, limit {})",
                    server.config.max_hops
                ),
            ));
        }
        if let Some(e) = &copied.write_error {
            server
                .log
                .warning(&format!("{id}: cannot write the queue file: {e}"));
            return Err(Reply::new(451, "4.3.0 Error: queue file write error"));
        }
        // The message took space too: what is left must still hold the reserve.
        if let Some(refusal) = self.short_of_space(0) {
            return Err(refusal);
        }
        Ok(())
    }

    /// Commits the draft with its envelope and logs the message and each recipient.
    fn commit(
        &self,
        draft: Draft<'_>,
        now: &DateTime<Local>,
        written: u64,
        hello: &Hello,
        transaction: &Transaction,
    ) -> Result<QueueId, Reply> {
        let server = self.server;
        let id = draft.id();
        let envelope = Envelope {
            id,
            arrival: now.timestamp(),
            size: written,
            sender: transaction.sender.to_string(),
            notify: None,
            ret: None,
            envid: None,
            warned: None,
            recipients: transaction
                .recipients
                .iter()
                .map(|r| Recipient::new(r.to_string()))
                .collect(),
        };
        if let Err(e) = draft.commit(&envelope) {
            server.log.warning(&format!("{id}: not queued: {e}"));
            return Err(Reply::new(451, "4.3.0 Error: queue file write error"));
        }
        server.log.info(&format!(
            "{id}: client={}, helo={}, from=<{}>, size={written}, nrcpt={}",
            self.client,
            hello.name,
            transaction.sender,
            transaction.recipients.len()
        ));
        for recipient in &transaction.recipients {
            server
                .log
                .info(&format!("{id}: to=<{recipient}>, status=queued"));
        }
        Ok(id)
    }
}

/// Copies the data to its end into `draft`, after `received`: the header section, then the body
/// line by line. A header section over its limit is read and dropped with the rest.
fn copy_message<L: Lines<Error = io::Error>>(
    data: &mut L,
    draft: &mut Draft<'_>,
    received: &str,
) -> io::Result<Copied> {
    let mut out = Output::new(draft);
    out.write(received.as_bytes());
    let header = match HeaderSection::read(data, LeadingFrom::Keep, MAX_HEADER_SECTION) {
        Ok(header) => Some(header),
        Err(HeaderError::Input(e)) => return Err(e),
        Err(HeaderError::TooLarge) => None,
    };
    if let Some(header) = &header {
        out.write(header.raw());
        if header.is_empty() && header.separator.is_empty() {
            // Data without a header section: keep its first line out of our Received field.
            out.write(b"\r\n");
        } else {
            out.write(&header.separator);
        }
        out.write(&header.first_body_line);
        while let Some(line) = data.next_line()? {
            out.write(line);
        }
    } else {
        // Read to its end, kept nowhere: the client is answered only after the data.
        while data.next_line()?.is_some() {}
    }
    Ok(Copied {
        header,
        written: out.written,
        write_error: out.error,
        fault: None,
    })
}

/// Writes the message to its draft, counting octets; a write error is kept for after the data
/// has been read, since the client must be read to its end before it can be answered.
struct Output<'d, 'q> {
    draft: &'d mut Draft<'q>,
    written: u64,
    error: Option<io::Error>,
}

impl<'d, 'q> Output<'d, 'q> {
    fn new(draft: &'d mut Draft<'q>) -> Self {
        Output {
            draft,
            written: 0,
            error: None,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        use std::io::Write;
        match self.draft.write_all(bytes) {
            Ok(()) => self.written += bytes.len() as u64,
            Err(e) => self.error = Some(e),
        }
    }
}
