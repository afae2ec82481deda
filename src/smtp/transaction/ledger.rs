//! The account of the messages on one connection: for each message in flight, one verdict per
//! recipient as the replies arrive, the recipients still waiting for a transaction, and how far
//! the transaction under way got.
//!
//! The ledger decides what a reply means for a recipient (a refused sender refuses every
//! recipient of the message, a 452 for the server's own limit sends the recipient again in
//! another transaction) and reports messages to the [`Outbox`] in the order they were handed
//! out, each dropped before it is reported. It writes nothing to the wire.
//!
//! Messages are numbered in the order they were handed out, so a transaction names its
//! message even when several messages have transactions outstanding (CHUNKING); a message's
//! recipients sent back for the server's limit go in the next transaction, ahead of newer
//! messages.

use std::collections::VecDeque;

use super::{Attempt, Delivery, Message, Outbox, Sent, Stage, Verdict, mail_command, rcpt_command};
use crate::smtp::capabilities::Capabilities;
use crate::smtp::command::Command;
use crate::smtp::error::SmtpError;
use crate::smtp::reply::{EnhancedCode, Reply, ReplyCode};

/// A message on the connection.
pub(super) struct Flight {
    pub(super) message: Message,
    verdicts: Vec<Option<Verdict>>,
    /// Recipients (indices into `message.recipients`) in no transaction yet, in order.
    waiting: VecDeque<usize>,
    /// How far this message's transaction under way got.
    pub(super) sent: Sent,
}

impl Flight {
    pub(super) fn new(message: Message) -> Flight {
        let count = message.recipients.len();
        Flight {
            message,
            verdicts: vec![None; count],
            waiting: (0..count).collect(),
            sent: Sent::Envelope,
        }
    }

    /// The recipients of this message's next transaction.
    pub(super) fn next_transaction(&mut self, limit: usize) -> Option<Vec<usize>> {
        if self.waiting.is_empty() {
            return None;
        }
        let take = limit.min(self.waiting.len());
        Some(self.waiting.drain(..take).collect())
    }

    /// True when the server may have something of this message: a verdict came, or data went.
    fn touched(&self) -> bool {
        self.sent != Sent::Envelope || self.verdicts.iter().any(Option::is_some)
    }

    /// True when every recipient has its verdict.
    pub(super) fn is_answered(&self) -> bool {
        self.waiting.is_empty() && self.verdicts.iter().all(Option::is_some)
    }

    fn refuse(&mut self, recipient: usize, stage: Stage, reply: &Reply) {
        self.verdicts[recipient] = Some(Verdict::Refused {
            stage,
            reply: reply.clone(),
        });
    }

    /// Applies the replies to a transaction's envelope: refusals become verdicts, recipients
    /// over the server's limit wait for another transaction. Returns the recipients whose
    /// verdict the end of the data will give, when the data is to be sent.
    pub(super) fn settle(
        &mut self,
        recipients: &[usize],
        mail: &Reply,
        rcpts: &[Reply],
        data: Option<&Reply>,
    ) -> Vec<usize> {
        let accepted = self.settle_envelope(recipients, mail, rcpts);
        match data {
            Some(reply) if reply.code == ReplyCode::START_DATA => accepted,
            Some(reply) => {
                for &recipient in &accepted {
                    self.refuse(recipient, Stage::Data, reply);
                }
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Applies the replies to MAIL and the RCPTs; returns the recipients the server took.
    pub(super) fn settle_envelope(
        &mut self,
        recipients: &[usize],
        mail: &Reply,
        rcpts: &[Reply],
    ) -> Vec<usize> {
        if !mail.is_positive() {
            // A refused sender is refused for every transaction of the message.
            let waiting: Vec<usize> = self.waiting.drain(..).collect();
            for &recipient in recipients.iter().chain(&waiting) {
                self.refuse(recipient, Stage::Mail, mail);
            }
            return Vec::new();
        }
        let mut accepted = Vec::new();
        let mut over_limit = Vec::new();
        for (&recipient, reply) in recipients.iter().zip(rcpts) {
            if reply.is_positive() {
                accepted.push(recipient);
            } else if !accepted.is_empty() && is_over_limit(reply) {
                over_limit.push(recipient);
            } else {
                self.refuse(recipient, Stage::Rcpt, reply);
            }
        }
        for &recipient in over_limit.iter().rev() {
            self.waiting.push_front(recipient);
        }
        accepted
    }

    /// The reply to the end of the data decides every recipient that was waiting for it.
    pub(super) fn conclude(&mut self, accepted: &[usize], reply: &Reply) {
        self.conclude_at(accepted, reply, Stage::EndOfData);
    }

    /// The reply that ends the data, to the command `stage`, decides every recipient that was
    /// waiting for it.
    pub(super) fn conclude_at(&mut self, accepted: &[usize], reply: &Reply, stage: Stage) {
        for &recipient in accepted {
            self.verdicts[recipient] = Some(if reply.is_positive() {
                Verdict::Accepted(reply.clone())
            } else {
                Verdict::Refused {
                    stage,
                    reply: reply.clone(),
                }
            });
        }
    }
}

/// RFC 5321 §4.5.3.1.10: a server out of room for recipients answers 452 to the excess. It is
/// taken for that only after the server accepted a recipient of the same transaction (so the
/// next transaction makes progress), and only when an enhanced code, if any, says 4.5.3.
fn is_over_limit(reply: &Reply) -> bool {
    const TOO_MANY_RECIPIENTS: EnhancedCode = EnhancedCode {
        class: 4,
        subject: 5,
        detail: 3,
    };
    reply.code == ReplyCode::INSUFFICIENT_STORAGE
        && reply
            .enhanced
            .is_none_or(|code| code == TOO_MANY_RECIPIENTS)
}

/// A transaction of one message: the message's number, its recipients and its envelope's
/// commands.
pub(super) struct Transaction {
    pub(super) flight: u64,
    pub(super) recipients: Vec<usize>,
    pub(super) mail: Command,
    /// One per recipient, in order.
    pub(super) rcpts: Vec<Command>,
}

/// The replies that end a transaction, still due once its envelope is answered.
pub(super) enum Ending {
    /// The final dot of the message data, whose reply decides these recipients.
    Data(Vec<usize>),
    /// A lone dot when DATA was taken with nobody to deliver to (RFC 2920 §3.1), then RSET
    /// when a transaction is open; the message is decided already.
    Close { dot: bool, reset: bool },
}

/// The account of a delivery: the messages in flight, oldest first.
pub(super) struct Ledger<'o> {
    pub(super) outbox: &'o mut dyn Outbox,
    pub(super) flights: VecDeque<Flight>,
    /// The number of the oldest message in flight: how many were reported before it.
    first: u64,
}

impl<'o> Ledger<'o> {
    pub(super) fn new(outbox: &'o mut dyn Outbox) -> Ledger<'o> {
        Ledger {
            outbox,
            flights: VecDeque::new(),
            first: 0,
        }
    }

    /// The message numbered `number`, while it is in flight.
    pub(super) fn flight(&mut self, number: u64) -> Option<&mut Flight> {
        let position = usize::try_from(number.checked_sub(self.first)?).ok()?;
        self.flights.get_mut(position)
    }

    /// Reports the messages at the front that have every verdict, in order.
    pub(super) fn retire(&mut self) {
        while self.flights.front().is_some_and(Flight::is_answered) {
            if let Some(Flight {
                message, verdicts, ..
            }) = self.flights.pop_front()
            {
                drop(message);
                self.first += 1;
                self.outbox.done(Attempt::Answered(Delivery { verdicts }));
            }
        }
    }

    /// Reports every message in flight after a failure. The oldest message, unless every
    /// recipient of it is decided already, is one that may have broken the connection, and so
    /// is every other the server may have something of (a verdict came, or data went). The
    /// others are stranded: at most their envelopes went out.
    pub(super) fn fail(self, error: &SmtpError) {
        for (position, flight) in self.flights.into_iter().enumerate() {
            let answered = flight.is_answered();
            let touched = flight.touched();
            let Flight {
                message,
                verdicts,
                sent,
                ..
            } = flight;
            drop(message);
            let delivery = Delivery { verdicts };
            self.outbox.done(match (position, answered, touched) {
                (_, true, _) => Attempt::Answered(delivery),
                (0, false, _) | (_, false, true) => Attempt::Broken {
                    delivery,
                    sent,
                    error,
                },
                (_, false, false) => Attempt::Stranded { error },
            });
        }
    }

    /// The next transaction: more recipients of a message in flight, the oldest first, or the
    /// first of the next message that has any. Messages without recipients are only queued
    /// behind, to be reported in their turn.
    pub(super) fn next_transaction(
        &mut self,
        limit: usize,
        capabilities: &Capabilities,
    ) -> Option<Transaction> {
        loop {
            for (position, flight) in self.flights.iter_mut().enumerate() {
                let Some(recipients) = flight.next_transaction(limit) else {
                    continue;
                };
                let message = &flight.message;
                let rcpts = recipients
                    .iter()
                    .map(|&recipient| rcpt_command(&message.recipients[recipient]))
                    .collect();
                return Some(Transaction {
                    flight: self.first + position as u64,
                    mail: mail_command(message, capabilities),
                    recipients,
                    rcpts,
                });
            }
            let message = self.outbox.next(capabilities)?;
            self.flights.push_back(Flight::new(message));
            // Alone, a message without recipients is answered at once. Behind another it waits:
            // the oldest message stays until the replies that end its transaction are read, so
            // a failure meanwhile is told to it as the one under way.
            if self.flights.len() == 1 {
                self.retire();
            }
        }
    }
}
