//! Mail transactions over one connection: MAIL, RCPT, DATA and the message data, pipelined
//! when the server offers PIPELINING, with one verdict per recipient.
//!
//! # Promises
//!
//! - Only a 2xx to the end of the data, after a 354 to DATA, accepts a recipient. A reply with
//!   no place after its command (2xx to DATA, 3xx to MAIL, RCPT or the final dot, anything but
//!   2xx to RSET) ends the connection at once: the server's state is unknown, so no further line
//!   can be trusted to mean what it says, and the message under way is told the connection
//!   failed, never that it was delivered or refused.
//! - When the connection fails, each message in flight is told exactly how far it got
//!   ([`Attempt`]): the one whose transaction was under way, with what of it went out
//!   ([`Sent`]); the ones behind it, whose data never went out, as stranded.
//! - A message has at most [`Connection::limit_recipients`] recipients per transaction (50 by
//!   default, as Postfix's `smtp_destination_recipient_limit`); recipients the server refuses
//!   for its own limit (452 after it accepted others, RFC 5321 §4.5.3.1.10) go in another
//!   transaction at once, on the same connection.
//! - Each message is dropped, its body included, before its outcome is reported.
//!
//! # Limits
//!
//! Message data goes with DATA; CHUNKING (BDAT) is not used.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, Seek};

use super::capabilities::Capabilities;
use super::command::{Command, Parameter};
use super::connection::Connection;
use super::error::SmtpError;
use super::reply::{EnhancedCode, Reply, ReplyCode};
use crate::address::{Address, ReversePath};

/// Recipients per transaction unless [`Connection::limit_recipients`] says otherwise.
pub const RECIPIENT_LIMIT: usize = 50;

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
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::EndOfData => "end of DATA",
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

/// How far the transaction under way got before the connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Commands only (MAIL, RCPT, DATA, RSET): the server cannot have taken the message.
    Envelope,
    /// Some message data but not the final dot: the server cannot have taken it either.
    SomeData,
    /// The final dot: the server may have taken the message, and its answer was lost.
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

/// A message on the connection.
struct Flight {
    message: Message,
    verdicts: Vec<Option<Verdict>>,
    /// Recipients (indices into `message.recipients`) in no transaction yet, in order.
    waiting: VecDeque<usize>,
}

impl Flight {
    fn new(message: Message) -> Flight {
        let count = message.recipients.len();
        Flight {
            message,
            verdicts: vec![None; count],
            waiting: (0..count).collect(),
        }
    }

    /// The recipients of this message's next transaction.
    fn next_transaction(&mut self, limit: usize) -> Option<Vec<usize>> {
        if self.waiting.is_empty() {
            return None;
        }
        let take = limit.min(self.waiting.len());
        Some(self.waiting.drain(..take).collect())
    }

    /// True when every recipient has its verdict.
    fn is_answered(&self) -> bool {
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
    fn settle(
        &mut self,
        recipients: &[usize],
        mail: &Reply,
        rcpts: &[Reply],
        data: Option<&Reply>,
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

    /// The reply to the end of the data decides every recipient that was waiting for it.
    fn conclude(&mut self, accepted: &[usize], reply: &Reply) {
        for &recipient in accepted {
            self.verdicts[recipient] = Some(if reply.is_positive() {
                Verdict::Accepted(reply.clone())
            } else {
                Verdict::Refused {
                    stage: Stage::EndOfData,
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

/// A transaction of the newest message: its recipients and its envelope's commands.
struct Transaction {
    recipients: Vec<usize>,
    mail: Command,
    /// One per recipient, in order.
    rcpts: Vec<Command>,
}

/// The replies that end a transaction, still due once its envelope is answered.
enum Ending {
    /// The final dot of the message data, whose reply decides these recipients.
    Data(Vec<usize>),
    /// A lone dot when DATA was taken with nobody to deliver to (RFC 2920 §3.1), then RSET
    /// when a transaction is open; the message is decided already.
    Close { dot: bool, reset: bool },
}

/// The account of a delivery: the messages in flight, oldest first, and how far the
/// transaction of the oldest got.
struct Ledger<'o> {
    outbox: &'o mut dyn Outbox,
    flights: VecDeque<Flight>,
    sent: Sent,
}

impl Ledger<'_> {
    /// Reports the messages at the front that have every verdict, in order.
    fn retire(&mut self) {
        while self.flights.front().is_some_and(Flight::is_answered) {
            if let Some(Flight {
                message, verdicts, ..
            }) = self.flights.pop_front()
            {
                drop(message);
                self.outbox.done(Attempt::Answered(Delivery { verdicts }));
            }
            self.sent = Sent::Envelope;
        }
    }

    /// Reports every message in flight after a failure. The transaction under way was the
    /// oldest message's: that message, unless every recipient of it is decided already, is the
    /// one that may have broken the connection. The others are stranded.
    fn fail(self, error: &SmtpError) {
        let sent = self.sent;
        for (position, flight) in self.flights.into_iter().enumerate() {
            let answered = flight.is_answered();
            let Flight {
                message, verdicts, ..
            } = flight;
            drop(message);
            let delivery = Delivery { verdicts };
            self.outbox.done(match (position, answered) {
                (_, true) => Attempt::Answered(delivery),
                (0, false) => Attempt::Broken {
                    delivery,
                    sent,
                    error,
                },
                (_, false) => Attempt::Stranded { error },
            });
        }
    }

    /// The next transaction: more recipients of the newest message, or the first of the next
    /// message that has any. Messages without recipients are only queued behind, to be
    /// reported in their turn.
    fn next_transaction(
        &mut self,
        limit: usize,
        capabilities: &Capabilities,
    ) -> Option<Transaction> {
        loop {
            if let Some(flight) = self.flights.back_mut()
                && let Some(recipients) = flight.next_transaction(limit)
            {
                let message = &flight.message;
                let rcpts = recipients
                    .iter()
                    .map(|&recipient| rcpt_command(&message.recipients[recipient]))
                    .collect();
                return Some(Transaction {
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

impl Connection {
    /// Delivers every message `outbox` hands out over this connection and reports each one's
    /// [`Attempt`] to `outbox.done`, in order. With PIPELINING the end of each transaction goes
    /// out in one write with the next transaction's MAIL, RCPT and DATA (RFC 2920 lets message
    /// content open a group), so over a long round trip each message costs about one round
    /// trip instead of two. On a failure the messages in flight are told how far they got and
    /// the error is returned: the connection is then unusable.
    pub fn deliver_all(&mut self, outbox: &mut dyn Outbox) -> Result<(), SmtpError> {
        let mut ledger = Ledger {
            outbox,
            flights: VecDeque::new(),
            sent: Sent::Envelope,
        };
        let delivered = if self.capabilities().pipelining() {
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
            let ending = self.answer_envelope(flight, &current, &mut ledger.sent)?;
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
            ledger.sent = Sent::Envelope;
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
                self.queue_data(flight, &mut ledger.sent)?;
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
        sent: &mut Sent,
    ) -> Result<Ending, SmtpError> {
        *sent = Sent::Envelope;
        let mail = self.checked_reply(Stage::Mail)?;
        let mut rcpts = Vec::with_capacity(transaction.recipients.len());
        for _ in &transaction.recipients {
            rcpts.push(self.checked_reply(Stage::Rcpt)?);
        }
        let data = self.read_reply()?;
        let data = self.check_data(data)?;
        let accepted = flight.settle(&transaction.recipients, &mail, &rcpts, Some(&data));
        if !accepted.is_empty() {
            self.queue_data(flight, sent)?;
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
    fn queue_data(&mut self, flight: &mut Flight, sent: &mut Sent) -> Result<(), SmtpError> {
        let body = flight.message.body.as_mut();
        body.rewind().map_err(SmtpError::MessageRead)?;
        self.write_body(body, sent)?;
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
                ledger.sent = Sent::EndOfData;
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
    fn verb(self) -> &'static str {
        match self {
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::EndOfData => "the end of the message data",
        }
    }
}

fn mail_command(message: &Message, capabilities: &Capabilities) -> Command {
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

fn rcpt_command(to: &Address) -> Command {
    Command::Rcpt {
        to: to.clone(),
        parameters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::connection::{ConnectOptions, Timeouts, Transcript};
    use crate::smtp::test_server::{Step, domain, options, server};
    use std::io::{self, Cursor, Read, SeekFrom};
    use std::sync::Arc;
    use std::time::Duration;

    /// What the outbox was told about one message, with the error as text.
    #[derive(Debug, PartialEq)]
    enum Told {
        Answered(Delivery),
        Broken(Delivery, Sent, String),
        Stranded(String),
    }

    impl Told {
        fn delivery(&self) -> &Delivery {
            match self {
                Told::Answered(delivery) | Told::Broken(delivery, ..) => delivery,
                Told::Stranded(_) => panic!("stranded: {self:?}"),
            }
        }
    }

    /// Hands out prepared messages and keeps what the connection reports.
    struct Script {
        messages: VecDeque<Message>,
        told: Vec<Told>,
    }

    impl Script {
        fn new(messages: Vec<Message>) -> Script {
            Script {
                messages: messages.into(),
                told: Vec::new(),
            }
        }
    }

    impl Outbox for Script {
        fn next(&mut self, _: &Capabilities) -> Option<Message> {
            self.messages.pop_front()
        }

        fn done(&mut self, attempt: Attempt<'_>) {
            self.told.push(match attempt {
                Attempt::Answered(delivery) => Told::Answered(delivery),
                Attempt::Broken {
                    delivery,
                    sent,
                    error,
                } => Told::Broken(delivery, sent, error.to_string()),
                Attempt::Stranded { error } => Told::Stranded(error.to_string()),
            });
        }
    }

    fn message_to(recipients: &[&str], body: &'static str) -> Message {
        Message {
            from: ReversePath::Mailbox(Address::parse("a@example.test", &domain("x")).unwrap()),
            recipients: recipients
                .iter()
                .map(|to| Address::parse(to, &domain("x")).unwrap())
                .collect(),
            size: None,
            eight_bit: false,
            body: Box::new(Cursor::new(body.as_bytes())),
        }
    }

    fn message(to: &str, body: &'static str) -> Message {
        message_to(&[to], body)
    }

    const PIPELINING: &str = "250-sink\r\n250 PIPELINING\r\n";
    const ENVELOPE_OK: &str = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n";

    /// Connects, greets and says EHLO; `limit` is the time limit of every step.
    fn session(addr: std::net::SocketAddr, limit: Duration) -> Connection {
        let opts = ConnectOptions {
            timeouts: Timeouts::uniform(limit),
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        conn
    }

    fn reply(line: &str) -> Reply {
        Reply::from_lines(&[line]).unwrap()
    }

    fn accepted(line: &str) -> Option<Verdict> {
        Some(Verdict::Accepted(reply(line)))
    }

    fn refused(stage: Stage, line: &str) -> Option<Verdict> {
        Some(Verdict::Refused {
            stage,
            reply: reply(line),
        })
    }

    #[test]
    fn deliver_all_sends_the_next_envelope_with_the_final_dot() {
        // The reply to the first message's dot is only written once the second message's
        // envelope has arrived: a client that waited for it would time out here.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Message(""),
                Step::Lines(
                    3,
                    "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
                ),
                Step::Lines(1, "250 2.0.0 reset\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(3));
        let mut script = Script::new(vec![
            message("one@example.test", "Subject: 1\n\n.starts with a dot\n"),
            message("nobody@example.test", "Subject: 2\n\nbody\n"),
        ]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(
            script.told,
            [
                Told::Answered(Delivery {
                    verdicts: vec![accepted("250 2.0.0 queued as 1")]
                }),
                Told::Answered(Delivery {
                    verdicts: vec![refused(Stage::Rcpt, "550 5.1.1 no such user")]
                }),
            ]
        );
        assert!(seen.contains(&"..starts with a dot\r\n".to_string()));
        assert_eq!(seen.last().map(String::as_str), Some("RSET\r\n"));
    }

    /// A message body that tells, through `token`, whether it still exists.
    struct Watched {
        bytes: Cursor<&'static [u8]>,
        _token: Arc<()>,
    }

    impl Read for Watched {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(buf)
        }
    }

    impl BufRead for Watched {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.bytes.fill_buf()
        }

        fn consume(&mut self, amount: usize) {
            self.bytes.consume(amount);
        }
    }

    impl Seek for Watched {
        fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
            self.bytes.seek(position)
        }
    }

    /// Hands out watched messages and notes, for each outcome, whether its message was gone.
    struct Watching {
        messages: VecDeque<Message>,
        tokens: VecDeque<Arc<()>>,
        released: Vec<bool>,
    }

    impl Watching {
        fn new(count: usize) -> Watching {
            let mut watching = Watching {
                messages: VecDeque::new(),
                tokens: VecDeque::new(),
                released: Vec::new(),
            };
            for _ in 0..count {
                let token = Arc::new(());
                let mut message = message("one@example.test", "");
                message.body = Box::new(Watched {
                    bytes: Cursor::new(b"Subject: s\n\nbody\n"),
                    _token: token.clone(),
                });
                watching.messages.push_back(message);
                watching.tokens.push_back(token);
            }
            watching
        }
    }

    impl Outbox for Watching {
        fn next(&mut self, _: &Capabilities) -> Option<Message> {
            self.messages.pop_front()
        }

        fn done(&mut self, _: Attempt<'_>) {
            if let Some(token) = self.tokens.pop_front() {
                self.released.push(Arc::strong_count(&token) == 1);
            }
        }
    }

    #[test]
    fn deliver_all_lets_go_of_each_message_before_reporting_it() {
        // An outbox may then dispose of what the body read from (queue-run closes the message
        // file on another thread).
        for pipelining in [true, false] {
            let steps = if pipelining {
                vec![
                    Step::Lines(1, PIPELINING),
                    Step::Lines(3, ENVELOPE_OK),
                    Step::Message(""),
                    Step::Lines(
                        3,
                        "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                    ),
                    Step::Message("250 2.0.0 queued as 2\r\n"),
                ]
            } else {
                let mut steps = vec![Step::Lines(1, "250 sink\r\n")];
                for _ in 0..2 {
                    steps.push(Step::Lines(1, "250 2.1.0 Ok\r\n"));
                    steps.push(Step::Lines(1, "250 2.1.5 Ok\r\n"));
                    steps.push(Step::Lines(1, "354 go ahead\r\n"));
                    steps.push(Step::Message("250 2.0.0 queued\r\n"));
                }
                steps
            };
            let (addr, server) = server("220 sink ESMTP\r\n", steps);
            let mut conn = session(addr, Duration::from_secs(10));
            let mut watching = Watching::new(2);
            conn.deliver_all(&mut watching).unwrap();
            drop(conn);
            server.join().unwrap();
            assert_eq!(watching.released, [true, true], "pipelining: {pipelining}");
        }
    }

    #[test]
    fn a_broken_connection_names_the_message_under_way_and_strands_the_one_behind() {
        // The server takes the first message's data and closes without answering its dot; the
        // second message's envelope went out in the same write, its data never did.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::CloseAfterMessage,
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message("one@example.test", "Subject: 1\n\nx\n"),
            message("two@example.test", "Subject: 2\n\ny\n"),
            message("three@example.test", "Subject: 3\n\nz\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        server.join().unwrap();
        assert_eq!(
            script.told,
            [
                Told::Broken(
                    Delivery {
                        verdicts: vec![None]
                    },
                    Sent::EndOfData,
                    err.to_string()
                ),
                Told::Stranded(err.to_string()),
            ]
        );
        assert_eq!(script.messages.len(), 1, "the third was never taken");
    }

    #[test]
    fn a_connection_lost_on_the_envelope_says_no_data_went_out() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, "250 2.1.0 Ok\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message("one@example.test", "x\n")]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, SmtpError::Closed { .. }), "{err}");
        assert_eq!(
            script.told,
            [Told::Broken(
                Delivery {
                    verdicts: vec![None]
                },
                Sent::Envelope,
                err.to_string()
            )]
        );
    }

    #[test]
    fn a_250_to_data_is_never_a_delivery() {
        // The server claims the message before a byte of it was sent. Nothing more is written:
        // neither the data nor RSET, since what the server would make of them is unknown.
        for pipelining in [true, false] {
            let steps = if pipelining {
                vec![
                    Step::Lines(1, PIPELINING),
                    Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued\r\n"),
                ]
            } else {
                vec![
                    Step::Lines(1, "250 sink\r\n"),
                    Step::Lines(1, "250 2.1.0 Ok\r\n"),
                    Step::Lines(1, "250 2.1.5 Ok\r\n"),
                    Step::Lines(1, "250 2.0.0 queued\r\n"),
                ]
            };
            let (addr, server) = server("220 sink ESMTP\r\n", steps);
            let mut conn = session(addr, Duration::from_secs(10));
            let mut script = Script::new(vec![
                message("one@example.test", "Subject: 1\n\nx\n"),
                message("two@example.test", "Subject: 2\n\ny\n"),
            ]);
            let err = conn.deliver_all(&mut script).unwrap_err();
            drop(conn);
            let seen = server.join().unwrap();
            assert!(
                err.to_string()
                    .ends_with(": protocol error: 250 2.0.0 queued (in reply to DATA)"),
                "{err}"
            );
            assert_eq!(
                script.told,
                [Told::Broken(
                    Delivery {
                        verdicts: vec![None]
                    },
                    Sent::Envelope,
                    err.to_string()
                )],
                "pipelining: {pipelining}"
            );
            assert_eq!(
                seen.last().map(String::as_str),
                Some("DATA\r\n"),
                "{seen:?}"
            );
            assert_eq!(script.messages.len(), 1, "pipelining: {pipelining}");
        }
    }

    #[test]
    fn a_354_to_rcpt_ends_the_connection_at_once() {
        // After a 354 the server may be reading message data: no further reply is awaited and
        // nothing is refused or bounced because of it.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(4, "250 2.1.0 Ok\r\n354 go ahead\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message_to(
            &["one@example.test", "two@example.test"],
            "x\n",
        )]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        drop(conn);
        let seen = server.join().unwrap();
        assert!(
            matches!(&err, SmtpError::Unexpected { command: "RCPT", reply, .. } if reply.code.value() == 354),
            "{err}"
        );
        assert_eq!(
            script.told,
            [Told::Broken(
                Delivery {
                    verdicts: vec![None, None]
                },
                Sent::Envelope,
                err.to_string()
            )]
        );
        assert_eq!(seen.last().map(String::as_str), Some("DATA\r\n"));
    }

    #[test]
    fn a_354_to_the_final_dot_is_neither_a_delivery_nor_a_refusal() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Message(""),
                Step::Lines(3, "354 more please\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message("one@example.test", "x\n"),
            message("two@example.test", "y\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        drop(conn);
        server.join().unwrap();
        assert!(
            err.to_string().ends_with(
                "protocol error: 354 more please (in reply to the end of the message data)"
            ),
            "{err}"
        );
        assert_eq!(
            script.told,
            [
                Told::Broken(
                    Delivery {
                        verdicts: vec![None]
                    },
                    Sent::EndOfData,
                    err.to_string()
                ),
                Told::Stranded(err.to_string()),
            ]
        );
    }

    #[test]
    fn a_refused_reset_ends_the_connection_and_strands_the_next_message() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    3,
                    "250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n",
                ),
                Step::Lines(4, "500 5.5.1 what reset\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message("nobody@example.test", "x\n"),
            message("two@example.test", "y\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        drop(conn);
        server.join().unwrap();
        assert!(
            matches!(
                err,
                SmtpError::Unexpected {
                    command: "RSET",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            script.told,
            [
                Told::Answered(Delivery {
                    verdicts: vec![refused(Stage::Rcpt, "550 5.1.1 no such user")]
                }),
                Told::Stranded(err.to_string()),
            ]
        );
    }

    #[test]
    fn a_refused_data_refuses_the_accepted_recipients_and_resets() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 try later\r\n"),
                Step::Lines(1, "250 2.0.0 reset\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message("one@example.test", "x\n")]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(
            script.told,
            [Told::Answered(Delivery {
                verdicts: vec![refused(Stage::Data, "451 4.3.0 try later")]
            })]
        );
        assert_eq!(seen.last().map(String::as_str), Some("RSET\r\n"));
    }

    #[test]
    fn recipients_over_the_servers_limit_go_in_another_transaction_at_once() {
        // The server takes two recipients per transaction. The third and fourth get 452 and are
        // sent again in a transaction of their own, whose envelope goes out with the first
        // transaction's final dot. The fifth is refused for good.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    7,
                    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Too many recipients\r\n452 4.5.3 Too many recipients\r\n550 5.1.1 no such user\r\n354 go ahead\r\n",
                ),
                Step::Message(""),
                Step::Lines(
                    4,
                    "250 2.0.0 queued as 1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                ),
                Step::Message("250 2.0.0 queued as 2\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message_to(
            &[
                "a@example.test",
                "b@example.test",
                "c@example.test",
                "d@example.test",
                "e@example.test",
            ],
            "Subject: many\n\nbody\n",
        )]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(
            script.told,
            [Told::Answered(Delivery {
                verdicts: vec![
                    accepted("250 2.0.0 queued as 1"),
                    accepted("250 2.0.0 queued as 1"),
                    accepted("250 2.0.0 queued as 2"),
                    accepted("250 2.0.0 queued as 2"),
                    refused(Stage::Rcpt, "550 5.1.1 no such user"),
                ]
            })]
        );
        let second_dot = seen.iter().rposition(|l| l == ".\r\n").unwrap();
        assert_eq!(
            seen[second_dot - 8..second_dot - 2],
            [
                ".\r\n",
                "MAIL FROM:<a@example.test>\r\n",
                "RCPT TO:<c@example.test>\r\n",
                "RCPT TO:<d@example.test>\r\n",
                "DATA\r\n",
                "Subject: many\r\n",
            ]
        );
        assert_eq!(seen.iter().filter(|l| *l == "body\r\n").count(), 2);
    }

    #[test]
    fn a_452_before_any_acceptance_is_a_plain_deferral() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    4,
                    "250 2.1.0 Ok\r\n452 4.2.2 mailbox full\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                ),
                Step::Message("250 2.0.0 queued\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message_to(
            &["a@example.test", "b@example.test"],
            "x\n",
        )]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        server.join().unwrap();
        assert_eq!(
            script.told[0].delivery().verdicts,
            [
                refused(Stage::Rcpt, "452 4.2.2 mailbox full"),
                accepted("250 2.0.0 queued")
            ]
        );
    }

    #[test]
    fn a_452_that_is_not_about_the_limit_is_not_sent_again() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    4,
                    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n452 4.2.2 mailbox full\r\n354 go ahead\r\n",
                ),
                Step::Message("250 2.0.0 queued\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message_to(
            &["a@example.test", "b@example.test"],
            "x\n",
        )]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        server.join().unwrap();
        assert_eq!(
            script.told[0].delivery().verdicts,
            [
                accepted("250 2.0.0 queued"),
                refused(Stage::Rcpt, "452 4.2.2 mailbox full")
            ]
        );
    }

    #[test]
    fn no_transaction_has_more_recipients_than_the_limit() {
        // Three recipients, two per transaction, without pipelining.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, "250 sink\r\n"),
                Step::Lines(1, "250 2.1.0 Ok\r\n"),
                Step::Lines(1, "250 2.1.5 Ok\r\n"),
                Step::Lines(1, "250 2.1.5 Ok\r\n"),
                Step::Lines(1, "354 go ahead\r\n"),
                Step::Message("250 2.0.0 queued as 1\r\n"),
                Step::Lines(1, "250 2.1.0 Ok\r\n"),
                Step::Lines(1, "250 2.1.5 Ok\r\n"),
                Step::Lines(1, "354 go ahead\r\n"),
                Step::Message("250 2.0.0 queued as 2\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        conn.limit_recipients(2);
        let mut script = Script::new(vec![message_to(
            &["a@example.test", "b@example.test", "c@example.test"],
            "x\n",
        )]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(
            script.told[0].delivery().verdicts,
            [
                accepted("250 2.0.0 queued as 1"),
                accepted("250 2.0.0 queued as 1"),
                accepted("250 2.0.0 queued as 2"),
            ]
        );
        let rcpts: Vec<&str> = seen
            .iter()
            .filter(|l| l.starts_with("RCPT") || l.starts_with("MAIL"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            rcpts,
            [
                "MAIL FROM:<a@example.test>\r\n",
                "RCPT TO:<a@example.test>\r\n",
                "RCPT TO:<b@example.test>\r\n",
                "MAIL FROM:<a@example.test>\r\n",
                "RCPT TO:<c@example.test>\r\n",
            ]
        );
    }

    #[test]
    fn a_refused_sender_is_refused_for_every_transaction_of_the_message() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    3,
                    "553 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n",
                ),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        conn.limit_recipients(1);
        let mut script = Script::new(vec![message_to(
            &["a@example.test", "b@example.test"],
            "x\n",
        )]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        server.join().unwrap();
        let refusal = refused(Stage::Mail, "553 5.7.1 sender refused");
        assert_eq!(
            script.told[0].delivery().verdicts,
            [refusal.clone(), refusal]
        );
    }

    #[test]
    fn a_verdict_never_holds_a_control_character() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(
                    3,
                    "250 2.1.0 Ok\r\n450-4.2.0 \u{1b}[2Jbusy\0\r\n450 4.2.0 try\rlater\u{7}\r\n554 5.5.1 no valid recipients\r\n",
                ),
                Step::Lines(1, "250 2.0.0 reset\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message("one@example.test", "x\n")]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        server.join().unwrap();
        let verdict = script.told[0].delivery().verdicts[0].clone().unwrap();
        assert_eq!(
            verdict.reply().lines,
            ["4.2.0 ?[2Jbusy?", "4.2.0 try?later?"]
        );
        assert_eq!(
            verdict.reply().to_string(),
            "450 4.2.0 ?[2Jbusy? 4.2.0 try?later?"
        );
    }

    #[test]
    fn bare_cr_and_lf_leave_as_crlf_and_every_line_is_dot_stuffed() {
        // A CR alone before a dot would end the data early at a receiver that takes it for a
        // line end; here every line end is CRLF, so the dot is stuffed and the data goes whole.
        let body = "Subject: t\n\nbare cr\r.\rcrlf\r\n.crlf dot\nlf\n\r\n.\r\rlast";
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Message("250 2.0.0 queued\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![message("one@example.test", body)]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        let data: String = seen[4..].concat();
        assert_eq!(
            data,
            "Subject: t\r\n\r\nbare cr\r\n..\r\ncrlf\r\n..crlf dot\r\nlf\r\n\r\n..\r\n\r\nlast\r\n.\r\n"
        );
    }

    #[test]
    fn line_ends_split_across_reads_are_one_line_end() {
        // A buffer of one byte puts every CR and LF of a CRLF in separate reads.
        let body = "a\r\n.b\r\r\n\r.c\n";
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Message("250 2.0.0 queued\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut one = message("one@example.test", "");
        one.body = Box::new(std::io::BufReader::with_capacity(
            1,
            Cursor::new(body.as_bytes()),
        ));
        let mut script = Script::new(vec![one]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        let seen = server.join().unwrap();
        assert_eq!(seen[4..].concat(), "a\r\n..b\r\n\r\n\r\n..c\r\n.\r\n");
    }

    #[test]
    fn pipelined_delivery_reports_each_recipient() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(
                    1,
                    "250-sink\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n",
                ),
                Step::Lines(
                    4,
                    "250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n250 2.1.5 Ok\r\n354 go ahead\r\n",
                ),
                Step::Message("250 2.0.0 queued as X\r\n"),
                Step::Lines(1, "221 bye\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut one = message_to(
            &["nouser@sink.example", "user@sink.example"],
            "Subject: t\n\n.leading dot\r\nlast line without end",
        );
        one.from = ReversePath::Null;
        one.size = Some(42);
        one.eight_bit = true;
        let mut script = Script::new(vec![one]);
        conn.deliver_all(&mut script).unwrap();
        conn.quit();
        assert_eq!(
            script.told[0].delivery().verdicts,
            [
                refused(Stage::Rcpt, "550 5.1.1 no such user"),
                accepted("250 2.0.0 queued as X")
            ]
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            [
                "EHLO client.example\r\n",
                "MAIL FROM:<> SIZE=42 BODY=8BITMIME\r\n",
                "RCPT TO:<nouser@sink.example>\r\n",
                "RCPT TO:<user@sink.example>\r\n",
                "DATA\r\n",
                "Subject: t\r\n",
                "\r\n",
                "..leading dot\r\n",
                "last line without end\r\n",
                ".\r\n",
                "QUIT\r\n",
            ]
        );
    }

    #[test]
    fn each_reply_waits_under_its_own_time_limit() {
        // Commands get a short limit, the end of data a long one. The reply to the dot comes
        // later than the command limit, and is still awaited: its own limit applies even
        // though the socket last waited for command replies.
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, "250 sink\r\n"),
                Step::Lines(1, "250 2.1.0 Ok\r\n"),
                Step::Lines(1, "250 2.1.5 Ok\r\n"),
                Step::Lines(1, "354 go ahead\r\n"),
                Step::Message(""),
                Step::After(Duration::from_millis(1500), "250 2.0.0 queued\r\n"),
                // The next message's MAIL is never answered: the command limit applies again.
                Step::Lines(1, ""),
                Step::After(Duration::from_secs(2), ""),
            ],
        );
        let short = Duration::from_millis(300);
        let opts = ConnectOptions {
            timeouts: Timeouts {
                command: short,
                data_start: short,
                ..Timeouts::uniform(Duration::from_secs(10))
            },
            ..options(Transcript::Off)
        };
        let mut conn = Connection::open(addr, None, &opts).unwrap();
        conn.greeting().unwrap();
        conn.hello(&domain("client.example")).unwrap();
        let mut script = Script::new(vec![
            message("u@sink.example", "x\n"),
            message("u@sink.example", "y\n"),
        ]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        assert!(
            matches!(&err, SmtpError::Timeout { during, .. } if during == "waiting for the reply to MAIL"),
            "{err}"
        );
        assert_eq!(
            script.told[0],
            Told::Answered(Delivery {
                verdicts: vec![accepted("250 2.0.0 queued")]
            })
        );
        drop(conn);
        server.join().unwrap();
    }

    #[test]
    fn a_trickled_reply_to_the_dot_is_cut_off_at_its_limit() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Trickle(
                    4,
                    "250 2.0.0 queued after a very long while\r\n",
                    Duration::from_millis(100),
                ),
            ],
        );
        let mut conn = session(addr, Duration::from_millis(700));
        let mut script = Script::new(vec![message("one@example.test", "x\ny\nz\n")]);
        let err = conn.deliver_all(&mut script).unwrap_err();
        drop(conn);
        let seen = server.join().unwrap();
        assert!(
            matches!(&err, SmtpError::Timeout { during, .. } if during == "waiting for the end of message data"),
            "{err}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("-- cut off"));
        assert_eq!(
            script.told,
            [Told::Broken(
                Delivery {
                    verdicts: vec![None]
                },
                Sent::EndOfData,
                err.to_string()
            )]
        );
    }

    #[test]
    fn without_pipelining_nobody_accepted_means_no_data() {
        let (addr, server) = server(
            "220 sink\r\n",
            vec![
                Step::Lines(1, "250 sink\r\n"),
                Step::Lines(1, "250 Ok\r\n"),
                Step::Lines(1, "450 4.2.0 try later\r\n"),
                Step::Lines(1, "250 reset\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut one = message("u@sink.example", "x\n");
        one.size = Some(1);
        one.eight_bit = true;
        let mut script = Script::new(vec![one]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        assert_eq!(
            script.told,
            [Told::Answered(Delivery {
                verdicts: vec![refused(Stage::Rcpt, "450 4.2.0 try later")]
            })]
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen[1], "MAIL FROM:<a@example.test>\r\n",
            "SIZE sent unannounced"
        );
        assert_eq!(seen.last().unwrap(), "RSET\r\n");
    }

    #[test]
    fn a_message_without_recipients_is_answered_in_its_turn() {
        let (addr, server) = server(
            "220 sink ESMTP\r\n",
            vec![
                Step::Lines(1, PIPELINING),
                Step::Lines(3, ENVELOPE_OK),
                Step::Message("250 2.0.0 queued\r\n"),
            ],
        );
        let mut conn = session(addr, Duration::from_secs(10));
        let mut script = Script::new(vec![
            message_to(&[], "x\n"),
            message("one@example.test", "x\n"),
            message_to(&[], "y\n"),
        ]);
        conn.deliver_all(&mut script).unwrap();
        drop(conn);
        server.join().unwrap();
        assert_eq!(
            script.told,
            [
                Told::Answered(Delivery::default()),
                Told::Answered(Delivery {
                    verdicts: vec![accepted("250 2.0.0 queued")]
                }),
                Told::Answered(Delivery::default()),
            ]
        );
    }
}
