//! Transactions back to back with CHUNKING (RFC 3030) and PIPELINING (RFC 2920): MAIL, the
//! RCPTs and the whole message after `BDAT n LAST`, sent without waiting for a reply, with a
//! bounded window of transactions whose replies are outstanding.
//!
//! ```text
//!   C: MAIL FROM:<a@example.org>  RCPT TO:<u@example.net>  BDAT 1234 LAST  (1234 octets)
//!   C: RSET  MAIL FROM:<b@example.org>  RCPT TO:<v@example.net>  BDAT 987 LAST  (987 octets)
//!   S: 250 2.1.0 Ok  250 2.1.5 Ok  250 2.0.0 Ok: queued as A
//!   C: (the next transaction, as the window has room again)
//!   S: 250 2.0.0 Ok  250 2.1.0 Ok  250 2.1.5 Ok  250 2.0.0 Ok: queued as B
//! ```
//!
//! A transaction needs no reply before its data goes out, so over a long round trip the cost
//! of a message falls from a round trip toward what the link and the server take for it.
//!
//! # Promises
//!
//! - Every reply is read in the order the commands went out and matched to its command: the
//!   MAIL, each RCPT, the BDAT of each transaction in the window. Recipients get their verdicts
//!   exactly as after DATA: a refused MAIL or RCPT refuses them, and only a 2xx to
//!   `BDAT LAST` accepts those the server took.
//! - Every transaction but the connection's first opens with RSET. A server need not end a
//!   transaction whose BDAT it refused (every recipient refused, say), and the next MAIL must
//!   never find one open: the next message's recipients would join the old sender's
//!   transaction. The RSET costs a few octets and no round trip.
//! - A 3xx to any of them, anything but 2xx to RSET, or a 503 to MAIL (the server is not where
//!   the commands sent have put it) ends the connection: what the server makes of the rest
//!   cannot be known.
//! - The window holds at most [`MAX_TRANSACTIONS`] transactions and stops taking more at
//!   [`WINDOW_OCTETS`] octets of data, so a large message goes out at once but the data at risk
//!   when a connection breaks stays bounded. Its size in transactions is measured from the
//!   first one, sent alone: one transaction per [`PER_TRANSACTION`] of its round trip, so a slow
//!   link gets a deep window and a fast one a shallow one.
//! - When the connection breaks, each message is told how far it got: answered, sent and
//!   unanswered (it may have arrived), or stranded when none of its data went out, to be sent
//!   again at once on another connection.
//!
//! # Limits
//!
//! The whole message is one chunk, sized by a first pass over the stored file; a message that
//! changes between the two passes fails the connection rather than send a wrong count.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::data::{Framing, wire_size};
use super::ledger::{Ledger, Transaction};
use super::{Sent, Stage};
use crate::smtp::command::Command;
use crate::smtp::connection::Connection;
use crate::smtp::error::SmtpError;

/// At most this many transactions with replies outstanding: each holds its message locked and
/// open, and a run killed outright may deliver again every one of them.
pub const MAX_TRANSACTIONS: usize = 64;
/// At least this many, once the first round trip is measured.
const MIN_TRANSACTIONS: usize = 8;
/// One transaction in the window for each such slice of the measured round trip: about what
/// a server takes to commit a message, so the window keeps it busy for the whole round trip.
pub const PER_TRANSACTION: Duration = Duration::from_millis(2);
/// No transaction is added while this many octets of data are unanswered.
pub const WINDOW_OCTETS: u64 = 4 * 1024 * 1024;

/// RFC 5321's "bad sequence of commands".
const BAD_SEQUENCE: u16 = 503;

/// A transaction whose replies are still to come.
struct Outstanding {
    /// RSET went before its MAIL.
    reset: bool,
    flight: u64,
    recipients: Vec<usize>,
    octets: u64,
}

/// The transactions sent and not yet answered, oldest first.
struct Window {
    outstanding: VecDeque<Outstanding>,
    octets: u64,
    /// How many may be outstanding: one until the first round trip is measured.
    size: usize,
}

impl Window {
    fn has_room(&self) -> bool {
        self.outstanding.len() < self.size && self.octets < WINDOW_OCTETS
    }

    /// Sizes the window from the time the first transaction took, sent alone.
    fn measured(&mut self, round_trip: Duration) {
        let slices = round_trip.as_nanos() / PER_TRANSACTION.as_nanos();
        let size = usize::try_from(slices.saturating_add(1)).unwrap_or(MAX_TRANSACTIONS);
        self.size = size.clamp(MIN_TRANSACTIONS, MAX_TRANSACTIONS);
    }
}

impl Connection {
    pub(super) fn chunked(&mut self, ledger: &mut Ledger<'_>) -> Result<(), SmtpError> {
        let limit = self.recipient_limit();
        let mut window = Window {
            outstanding: VecDeque::new(),
            octets: 0,
            size: 1,
        };
        let mut first = true;
        let mut reset = false;
        loop {
            while window.has_room() {
                let Some(transaction) = ledger.next_transaction(limit, self.capabilities()) else {
                    break;
                };
                let outstanding = self.send_transaction(ledger, transaction, reset)?;
                reset = true;
                window.octets += outstanding.octets;
                window.outstanding.push_back(outstanding);
            }
            self.flush_data()?;
            let Some(oldest) = window.outstanding.pop_front() else {
                return Ok(());
            };
            window.octets -= oldest.octets;
            let started = Instant::now();
            self.answer_transaction(ledger, oldest)?;
            if first {
                first = false;
                window.measured(started.elapsed());
                self.note(&format!(
                    "CHUNKING: up to {} transactions in flight",
                    window.size
                ));
            }
            ledger.retire();
        }
    }

    /// Queues RSET when `reset`, MAIL, the RCPTs, `BDAT n LAST` and the message; full blocks of
    /// data go out.
    fn send_transaction(
        &mut self,
        ledger: &mut Ledger<'_>,
        transaction: Transaction,
        reset: bool,
    ) -> Result<Outstanding, SmtpError> {
        let Some(flight) = ledger.flight(transaction.flight) else {
            return Err(self.protocol("a transaction of a message no longer in flight"));
        };
        let body = flight.message.body.as_mut();
        body.rewind().map_err(SmtpError::MessageRead)?;
        let size = wire_size(body, Framing::Counted)?;
        body.rewind().map_err(SmtpError::MessageRead)?;
        if reset {
            self.send(&Command::Rset)?;
        }
        self.send(&transaction.mail)?;
        for rcpt in &transaction.rcpts {
            self.send(rcpt)?;
        }
        self.send(&Command::Bdat { size, last: true })?;
        self.write_body(body, &mut flight.sent, Framing::Counted, Some(size))?;
        // The rest of the data goes with the next write: from here the server may have it all.
        flight.sent = Sent::EndOfData;
        Ok(Outstanding {
            reset,
            flight: transaction.flight,
            recipients: transaction.recipients,
            octets: size,
        })
    }

    /// Reads the replies to one transaction and gives its recipients their verdicts.
    fn answer_transaction(
        &mut self,
        ledger: &mut Ledger<'_>,
        transaction: Outstanding,
    ) -> Result<(), SmtpError> {
        if transaction.reset {
            let reply = self.read_reply()?;
            if !reply.is_positive() {
                return Err(self.unexpected("RSET", reply));
            }
        }
        let mail = self.checked_reply(Stage::Mail)?;
        if mail.code.value() == BAD_SEQUENCE {
            return Err(self.unexpected("MAIL", mail));
        }
        let mut rcpts = Vec::with_capacity(transaction.recipients.len());
        for _ in &transaction.recipients {
            rcpts.push(self.checked_reply(Stage::Rcpt)?);
        }
        let last = self.checked_reply(Stage::Bdat)?;
        let Some(flight) = ledger.flight(transaction.flight) else {
            return Err(self.protocol("replies for a message no longer in flight"));
        };
        let accepted = flight.settle_envelope(&transaction.recipients, &mail, &rcpts);
        flight.conclude_at(&accepted, &last, Stage::Bdat);
        Ok(())
    }
}
