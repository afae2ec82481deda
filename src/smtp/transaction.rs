//! Mail transactions over one connection: MAIL, RCPT, DATA and the message data, pipelined
//! when the server offers PIPELINING, or whole transactions back to back with `BDAT LAST` when
//! it offers CHUNKING too ([`chunked`]), with one verdict per recipient.
//!
//! # Promises
//!
//! - Only a 2xx to the end of the data, after a 354 to DATA (or a 2xx to `BDAT LAST`), accepts
//!   a recipient. A reply with no place after its command (2xx to DATA, 3xx to MAIL, RCPT, BDAT
//!   or the final dot, anything but 2xx to RSET) ends the connection at once: the server's
//!   state is unknown, so no further line can be trusted to mean what it says, and the message
//!   under way is told the connection failed, never that it was delivered or refused.
//! - When the connection fails, each message in flight is told exactly how far it got
//!   ([`Attempt`]): the one whose transaction was under way, and every other the server may
//!   have something of, with what of it went out ([`Sent`]); the ones whose data never went
//!   out, as stranded.
//! - A message has at most [`Connection::limit_recipients`] recipients per transaction (50 by
//!   default, as Postfix's `smtp_destination_recipient_limit`); recipients the server refuses
//!   for its own limit (452 after it accepted others, RFC 5321 §4.5.3.1.10) go in another
//!   transaction at once, on the same connection.
//! - Each message is dropped, its body included, before its outcome is reported.
//!
//! # Limits
//!
//! BDAT is used only with PIPELINING, where it saves round trips; BINARYMIME is not used, as
//! the queue holds text messages whose lines end in CRLF on the wire either way.

use std::fmt;
use std::io::{BufRead, Seek};

use super::capabilities::Capabilities;
use super::command::{Command, Parameter};
use super::connection::Connection;
use super::error::SmtpError;
use super::reply::{Reply, ReplyCode};
use crate::address::{Address, ReversePath};

mod chunked;
mod data;
mod ledger;

use data::Framing;
use ledger::{Ending, Flight, Ledger, Transaction};

/// The stored message: read from its start once for each transaction that carries it.
pub trait Body: BufRead + Seek + Send {}

impl<T: BufRead + Seek + Send> Body for T {}

/// One message for [`Connection::deliver_all`], owning its envelope and its data.
pub struct Message {
    pub from: ReversePath,
    /// At least one; a message without recipients is reported answered, having sent nothing.
    pub recipients: Vec<Address>,
    /// Announced with `SIZE=` when the server takes SIZE.
    pub size: Option<u64>,
    /// Announced with `BODY=8BITMIME` when the server takes 8BITMIME.
    pub eight_bit: bool,
    /// The message as stored; sent with CRLF line ends and dot-stuffing.
    pub body: Box<dyn Body>,
}

/// The command a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Mail,
    Rcpt,
    Data,
    /// The final dot of the message data.
    EndOfData,
    /// A BDAT chunk (RFC 3030); the reply to `BDAT LAST` decides the recipients.
    Bdat,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
            Stage::Bdat => "BDAT",
        })
    }
}

/// What the server decided for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The server took the message for this recipient: its 2xx to the end of the data.
    Accepted(Reply),
    /// A 4xx or 5xx, and the command it answered.
    Refused { stage: Stage, reply: Reply },
}

impl Verdict {
    pub fn reply(&self) -> &Reply {
        match self {
            Verdict::Accepted(reply) | Verdict::Refused { reply, .. } => reply,
        }
    }
}

/// What the server said about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// One per recipient of the message, in order; `None` for one the server had not decided
    /// when the connection failed.
    pub verdicts: Vec<Option<Verdict>>,
}

/// How far the transaction under way got before the connection failed, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sent {
    /// Commands only (MAIL, RCPT, DATA, RSET): the server cannot have taken the message.
    Envelope,
    /// Some message data but not the final dot: the server cannot have taken it either.
    SomeData,
    /// The final dot, or `BDAT LAST` with its data: the server may have taken the message, and
    /// its answer was lost.
    EndOfData,
}

/// What became of one message an [`Outbox`] handed out.
#[derive(Debug)]
pub enum Attempt<'e> {
    /// Every recipient has its verdict.
    Answered(Delivery),
    /// The connection failed while this message's transaction was under way: this is the
    /// message that may have broken it. Recipients with a verdict had it before; `sent` says
    /// how far the transaction under way got.
    Broken {
        delivery: Delivery,
        sent: Sent,
        error: &'e SmtpError,
    },
    /// The connection failed during an earlier message's transaction. At most this message's
    /// envelope went out, none of its data: the server cannot have it.
    Stranded { error: &'e SmtpError },
}

/// Where [`Connection::deliver_all`] takes messages from and reports their outcomes to.
pub trait Outbox {
    /// The next message to send, given what the server offers; `None` when there is no more.
    fn next(&mut self, capabilities: &Capabilities) -> Option<Message>;
    /// What became of the oldest message handed out and not yet reported. The connection has
    /// dropped that message, its body included, by then.
    fn done(&mut self, attempt: Attempt<'_>);
}

impl Connection {
    /// Delivers every message `outbox` hands out over this connection and reports each one's
    /// [`Attempt`] to `outbox.done`, in order. With PIPELINING the end of each transaction goes
    /// out in one write with the next transaction's MAIL, RCPT and DATA (RFC 2920 lets message
    /// content open a group), so over a long round trip each message costs about one round
    /// trip instead of two. On a failure the messages in flight are told how far they got and
    /// the error is returned: the connection is then unusable.
    pub fn deliver_all(&mut self, outbox: &mut dyn Outbox) -> Result<(), SmtpError> {
        let mut ledger = Ledger::new(outbox);
        let capabilities = self.capabilities();
        let delivered = if capabilities.pipelining() && capabilities.chunking() {
            self.chunked(&mut ledger)
        } else if capabilities.pipelining() {
            self.pipelined(&mut ledger)
        } else {
            self.lockstep(&mut ledger)
        };
        match delivered {
            Ok(()) => {
                ledger.retire();
                Ok(())
            }
            Err(error) => {
                ledger.fail(&error);
                Err(error)
            }
        }
    }

    fn pipelined(&mut self, ledger: &mut Ledger<'_>) -> Result<(), SmtpError> {
        let limit = self.recipient_limit();
        let Some(mut current) = ledger.next_transaction(limit, self.capabilities()) else {
            return Ok(());
        };
        self.send_envelope(&current)?;
        self.flush()?;
        loop {
            // The transaction under way is always the oldest message's: every message before
            // it has been reported.
            let Some(flight) = ledger.flights.front_mut() else {
                return Ok(());
            };
            let ending = self.answer_envelope(flight, &current)?;
            let next = ledger.next_transaction(limit, self.capabilities());
            if let Some(next) = &next {
                self.send_envelope(next)?;
            }
            self.end_transaction(ledger, ending)?;
            match next {
                Some(next) => current = next,
                None => return Ok(()),
            }
        }
    }

    fn lockstep(&mut self, ledger: &mut Ledger<'_>) -> Result<(), SmtpError> {
        let limit = self.recipient_limit();
        while let Some(transaction) = ledger.next_transaction(limit, self.capabilities()) {
            // Without pipelining one message is in flight at a time: the newest is the oldest.
            let Some(flight) = ledger.flights.front_mut() else {
                return Ok(());
            };
            flight.sent = Sent::Envelope;
            let mail_reply = self.checked_command(&transaction.mail, Stage::Mail)?;
            if !mail_reply.is_positive() {
                flight.settle(&transaction.recipients, &mail_reply, &[], None);
                ledger.retire();
                continue;
            }
            let mut rcpts = Vec::with_capacity(transaction.recipients.len());
            for rcpt in &transaction.rcpts {
                rcpts.push(self.checked_command(rcpt, Stage::Rcpt)?);
            }
            let data = if rcpts.iter().any(Reply::is_positive) {
                let reply = self.command(&Command::Data)?;
                Some(self.check_data(reply)?)
            } else {
                None
            };
            let accepted =
                flight.settle(&transaction.recipients, &mail_reply, &rcpts, data.as_ref());
            let ending = if accepted.is_empty() {
                self.send(&Command::Rset)?;
                Ending::Close {
                    dot: false,
                    reset: true,
                }
            } else {
                self.queue_data(flight)?;
                Ending::Data(accepted)
            };
            self.end_transaction(ledger, ending)?;
        }
        Ok(())
    }

    /// Reads the replies to the current transaction's envelope and queues what ends it: the
    /// message data and its dot, or a reset. Nothing is flushed but full blocks of data.
    fn answer_envelope(
        &mut self,
        flight: &mut Flight,
        transaction: &Transaction,
    ) -> Result<Ending, SmtpError> {
        flight.sent = Sent::Envelope;
        let mail = self.checked_reply(Stage::Mail)?;
        let mut rcpts = Vec::with_capacity(transaction.recipients.len());
        for _ in &transaction.recipients {
            rcpts.push(self.checked_reply(Stage::Rcpt)?);
        }
        let data = self.read_reply()?;
        let data = self.check_data(data)?;
        let accepted = flight.settle(&transaction.recipients, &mail, &rcpts, Some(&data));
        if !accepted.is_empty() {
            self.queue_data(flight)?;
            return Ok(Ending::Data(accepted));
        }
        let dot = data.code == ReplyCode::START_DATA;
        if dot {
            self.queue_dot();
        }
        let reset = mail.is_positive();
        if reset {
            self.send(&Command::Rset)?;
        }
        Ok(Ending::Close { dot, reset })
    }

    /// Queues the message's data and its final dot, from the start of the message.
    fn queue_data(&mut self, flight: &mut Flight) -> Result<(), SmtpError> {
        let body = flight.message.body.as_mut();
        body.rewind().map_err(SmtpError::MessageRead)?;
        self.write_body(body, &mut flight.sent, Framing::DotStuffed, None)?;
        self.queue_dot();
        Ok(())
    }

    /// Writes what is queued and reads the replies that end the oldest message's transaction.
    fn end_transaction(
        &mut self,
        ledger: &mut Ledger<'_>,
        ending: Ending,
    ) -> Result<(), SmtpError> {
        match ending {
            Ending::Data(accepted) => {
                if let Some(flight) = ledger.flights.front_mut() {
                    flight.sent = Sent::EndOfData;
                }
                self.flush_data()?;
                let reply = self.checked_reply(Stage::EndOfData)?;
                if let Some(flight) = ledger.flights.front_mut() {
                    flight.conclude(&accepted, &reply);
                }
            }
            Ending::Close { dot, reset } => {
                self.flush()?;
                if dot {
                    self.checked_reply(Stage::EndOfData)?;
                }
                if reset {
                    let reply = self.read_reply()?;
                    if !reply.is_positive() {
                        // A server that will not reset may still hold the transaction open.
                        return Err(self.unexpected("RSET", reply));
                    }
                }
            }
        }
        ledger.retire();
        Ok(())
    }

    /// Queues MAIL, the RCPTs and DATA, unflushed.
    fn send_envelope(&mut self, transaction: &Transaction) -> Result<(), SmtpError> {
        self.send(&transaction.mail)?;
        for rcpt in &transaction.rcpts {
            self.send(rcpt)?;
        }
        self.send(&Command::Data)
    }

    fn checked_command(&mut self, command: &Command, stage: Stage) -> Result<Reply, SmtpError> {
        self.send(command)?;
        self.flush()?;
        self.checked_reply(stage)
    }

    /// The next reply, which answers `stage`: MAIL, RCPT and the end of the data are answered
    /// with 2xx, 4xx or 5xx. A 3xx ends the connection: the server may now be reading message
    /// data, so whatever is written next (commands, the next message) could become the
    /// content of a message it delivers.
    fn checked_reply(&mut self, stage: Stage) -> Result<Reply, SmtpError> {
        let reply = self.read_reply()?;
        if reply.is_intermediate() {
            return Err(self.unexpected(stage.verb(), reply));
        }
        Ok(reply)
    }

    /// DATA is answered with 354, 4xx or 5xx. Anything else ends the connection: a 2xx claims
    /// a message that was never sent, and whether the server then waits for data or for the
    /// next command cannot be told, so neither the data nor a reset can safely follow.
    fn check_data(&self, reply: Reply) -> Result<Reply, SmtpError> {
        if reply.code == ReplyCode::START_DATA || reply.is_transient() || reply.is_permanent() {
            return Ok(reply);
        }
        Err(self.unexpected("DATA", reply))
    }
}

impl Stage {
    pub(super) fn verb(self) -> &'static str {
        match self {
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "the end of the message data",
            Stage::Bdat => "BDAT",
        }
    }
}

pub(super) fn mail_command(message: &Message, capabilities: &Capabilities) -> Command {
    let mut parameters = Vec::new();
    if let Some(size) = message.size.filter(|_| capabilities.has("SIZE")) {
        parameters.push(Parameter::size(size));
    }
    if message.eight_bit && capabilities.eight_bit_mime() {
        parameters.push(Parameter::body_8bitmime());
    }
    Command::Mail {
        from: message.from.clone(),
        parameters,
    }
}

pub(super) fn rcpt_command(to: &Address) -> Command {
    Command::Rcpt {
        to: to.clone(),
        parameters: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
