//! BDAT (RFC 3030 CHUNKING): a message in chunks of counted octets, each chunk answered, the
//! last one answered only once the message is committed.
//!
//! ```text
//!   C: MAIL FROM:<a@sender.example>      C: RCPT TO:<u@customer.example>
//!   C: BDAT 1000                          (1000 octets)
//!   C: BDAT 20 LAST                       (20 octets)
//!   S: 250 2.1.0 Ok   S: 250 2.1.5 Ok   S: 250 2.0.0 1000 octets received
//!   S: 250 2.0.0 Ok: 1020 octets received, queued as ...
//! ```
//!
//! The message goes through the same reading, judging and commit as after DATA
//! ([`super::message`]): the same size limit, line rules and header limit, the same commit
//! before the final 250. A chunk's octets are read whatever its command's fate, so a refused
//! BDAT (no transaction, no recipient, no draft) still consumes its chunk, and a pipelining
//! client's later chunks are read and refused with 503 in turn (§4.2). A transaction whose BDAT
//! is refused is over: the client starts the next with MAIL, as it would after RSET. DATA and
//! BDAT do not mix: DATA between two chunks is refused and ends the message, and a BDAT after
//! DATA finds no transaction.
//!
//! Between chunks only BDAT goes on with the message and NOOP is answered; any other command
//! abandons it (nothing is kept) and is then answered as in a session without a transaction.

use std::io;
use std::time::Duration;

use crate::smtp::Reply;

use super::super::request::{self, Request};
use super::super::wire::{Channel, Chunk, CommandLine};
use super::message::{Body, Outcome};
use super::phase::OutOfSequence;
use super::{Flow, Session};

impl Session<'_> {
    pub(super) fn bdat(&mut self, chunk: Chunk) -> io::Result<Flow> {
        self.last = "BDAT";
        let limits = &self.server.limits;
        self.channel
            .expect_data(limits.data_timeout, limits.min_data_rate);
        let (hello, transaction) = match self.phase.finish() {
            Ok(finished) => finished,
            Err(wrong) => {
                self.channel.discard(chunk.size)?;
                if wrong == OutOfSequence::NoRecipients {
                    self.phase.reset();
                }
                return self.error(wrong.reply());
            }
        };
        let draft = match self.server.queue.draft() {
            Ok(draft) => draft,
            Err(e) => {
                self.channel.discard(chunk.size)?;
                self.server
                    .log
                    .warning(&format!("cannot start a queue file: {e}"));
                return self.reply(Reply::new(451, "4.3.0 Error: queue file write error"));
            }
        };
        let reply = match self.receive(draft, &hello, &transaction, Body::Chunks(chunk))? {
            Outcome::Queued(id) => {
                self.messages += 1;
                Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
            }
            Outcome::Refused(refusal) => {
                self.server.log.info(&format!(
                    "reject: BDAT from {}: {refusal}; from=<{}>",
                    self.client, transaction.sender
                ));
                refusal
            }
            Outcome::Abandoned(line) => {
                self.server.log.info(&format!(
                    "BDAT from {}: message abandoned by a command between chunks; from=<{}>",
                    self.client, transaction.sender
                ));
                return self.abandoned_by(line);
            }
        };
        self.reply(reply)
    }

    /// Answers the command that came between chunks instead of a BDAT. DATA and MAIL are
    /// refused: they came inside a transaction, whatever is left of it now.
    fn abandoned_by(&mut self, line: CommandLine) -> io::Result<Flow> {
        if let Ok(bytes) = &line {
            match request::parse(bytes) {
                Ok(Request::Data) => {
                    self.last = "DATA";
                    return self.error(Reply::new(
                        503,
                        "5.5.1 Error: DATA inside a BDAT transaction; message discarded",
                    ));
                }
                Ok(Request::Mail { .. }) => {
                    self.last = "MAIL";
                    return self.error(Reply::new(
                        503,
                        "5.5.1 Error: MAIL inside a BDAT transaction; message discarded",
                    ));
                }
                _ => {}
            }
        }
        self.command(line)
    }
}

/// Between two chunks: answers the chunk of `size` octets just read and reads the next command.
/// The next chunk when it is a BDAT; `None`, with the command line kept in `instead`, when it is
/// anything but BDAT or NOOP.
pub(super) fn next_chunk(
    channel: &mut Channel,
    size: u64,
    command_timeout: Duration,
    (window, rate): (Duration, u64),
    instead: &mut Option<CommandLine>,
) -> io::Result<Option<Chunk>> {
    channel.reply(&Reply::new(250, format!("2.0.0 {size} octets received")))?;
    loop {
        channel.expect_command(command_timeout);
        let Some(line) = channel.read_command()? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed between BDAT chunks",
            ));
        };
        if let Ok(bytes) = &line {
            match request::parse(bytes) {
                Ok(Request::Bdat(chunk)) => {
                    channel.expect_data(window, rate);
                    return Ok(Some(chunk));
                }
                Ok(Request::Noop) => {
                    channel.reply(&Reply::new(250, "2.0.0 Ok"))?;
                    continue;
                }
                _ => {}
            }
        }
        *instead = Some(line);
        return Ok(None);
    }
}
