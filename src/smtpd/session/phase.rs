//! The phases of a session, and the commands that move it from one to the next.
//!
//! ```text
//!   Connected --HELO/EHLO--> Greeted --MAIL--> Mail(sender, recipients)
//!                            Greeted <--RSET, DATA, HELO/EHLO-- Mail
//!   any phase --HELO/EHLO--> Greeted
//!   any phase --STARTTLS---> Connected
//! ```
//!
//! Each phase holds only what is true in it: a greeting from HELO or EHLO on, a sender and
//! recipients only inside a transaction. A transaction without a greeting, or recipients without
//! a sender, cannot be written down. A command the phase does not allow gets the 503 of its
//! [`OutOfSequence`] and leaves the phase as it was.
//!
//! Whether TLS runs is not a phase: it is the channel's to say ([`super::Channel::is_tls`]), set
//! once by the handshake and kept through every phase after it, so the two cannot disagree.

use crate::address::{Address, Domain, ReversePath};
use crate::smtp::Reply;

/// What HELO or EHLO told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The name the client gave, as it goes into `Received:`.
    pub name: Domain,
    /// EHLO rather than HELO: the client speaks ESMTP.
    pub extended: bool,
}

/// One mail transaction: the sender MAIL gave, and the recipients taken so far.
#[derive(Debug, PartialEq, Eq)]
pub struct Transaction {
    pub sender: ReversePath,
    pub recipients: Vec<Address>,
}

impl Transaction {
    /// Takes `to` unless `limit` recipients are taken already; a recipient given twice is taken
    /// once. False when the transaction is full.
    pub fn add(&mut self, to: Address, limit: usize) -> bool {
        if self.recipients.contains(&to) {
            return true;
        }
        if self.recipients.len() >= limit {
            return false;
        }
        self.recipients.push(to);
        true
    }
}

/// Where a session is.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Before HELO or EHLO: after the greeting, and again after STARTTLS (RFC 3207 §4.2).
    #[default]
    Connected,
    /// After HELO or EHLO, between transactions.
    Greeted(Hello),
    /// After MAIL, taking recipients until DATA or RSET.
    Mail(Hello, Transaction),
}

/// A command that the phase does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfSequence {
    /// MAIL or ETRN before HELO or EHLO.
    NotGreeted,
    /// MAIL inside a transaction.
    NestedMail,
    /// RCPT or DATA outside a transaction.
    NoMail,
    /// DATA before a recipient was taken.
    NoRecipients,
    /// ETRN inside a transaction.
    InTransaction,
}

impl OutOfSequence {
    /// The 503 that says so.
    pub fn reply(self) -> Reply {
        let text = match self {
            OutOfSequence::NotGreeted => "5.5.1 Error: send HELO/EHLO first",
            OutOfSequence::NestedMail => "5.5.1 Error: nested MAIL command",
            OutOfSequence::NoMail => "5.5.1 Error: need MAIL command",
            OutOfSequence::NoRecipients => "5.5.1 Error: need RCPT command",
            OutOfSequence::InTransaction => "5.5.1 Error: MAIL transaction in progress",
        };
        Reply::new(503, text)
    }
}

impl Phase {
    /// HELO or EHLO, in any phase: a new greeting ends the transaction (RFC 5321 §4.1.4).
    pub fn greet(&mut self, hello: Hello) {
        *self = Phase::Greeted(hello);
    }

    /// RSET: the transaction ends, the greeting stays.
    pub fn reset(&mut self) {
        *self = match std::mem::take(self) {
            Phase::Mail(hello, _) => Phase::Greeted(hello),
            other => other,
        };
    }

    /// STARTTLS succeeded: nothing learnt before the handshake is kept (RFC 3207 §4.2).
    pub fn restart(&mut self) {
        *self = Phase::Connected;
    }

    /// Whether MAIL may open a transaction now (checked before its other conditions).
    pub fn may_mail(&self) -> Result<(), OutOfSequence> {
        match self {
            Phase::Connected => Err(OutOfSequence::NotGreeted),
            Phase::Greeted(_) => Ok(()),
            Phase::Mail(..) => Err(OutOfSequence::NestedMail),
        }
    }

    /// MAIL: a greeted session opens a transaction from `sender`.
    pub fn begin(&mut self, sender: ReversePath) -> Result<(), OutOfSequence> {
        match std::mem::take(self) {
            Phase::Greeted(hello) => {
                let transaction = Transaction {
                    sender,
                    recipients: Vec::new(),
                };
                *self = Phase::Mail(hello, transaction);
                Ok(())
            }
            other => {
                let refused = other.may_mail();
                *self = other;
                refused
            }
        }
    }

    /// The open transaction, for RCPT.
    pub fn transaction(&mut self) -> Result<&mut Transaction, OutOfSequence> {
        match self {
            Phase::Mail(_, transaction) => Ok(transaction),
            _ => Err(OutOfSequence::NoMail),
        }
    }

    /// DATA: the transaction, which must have a recipient, leaves the phase with the greeting
    /// it was made under; the session is greeted again, whatever becomes of the message.
    pub fn finish(&mut self) -> Result<(Hello, Transaction), OutOfSequence> {
        match std::mem::take(self) {
            Phase::Mail(hello, transaction) if !transaction.recipients.is_empty() => {
                *self = Phase::Greeted(hello.clone());
                Ok((hello, transaction))
            }
            Phase::Mail(hello, transaction) => {
                *self = Phase::Mail(hello, transaction);
                Err(OutOfSequence::NoRecipients)
            }
            other => {
                *self = other;
                Err(OutOfSequence::NoMail)
            }
        }
    }

    /// Whether ETRN may run now: greeted, between transactions.
    pub fn may_etrn(&self) -> Result<(), OutOfSequence> {
        match self {
            Phase::Connected => Err(OutOfSequence::NotGreeted),
            Phase::Greeted(_) => Ok(()),
            Phase::Mail(..) => Err(OutOfSequence::InTransaction),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            name: Domain::parse("client.example").unwrap(),
            extended: true,
        }
    }

    fn sender() -> ReversePath {
        ReversePath::Mailbox(Address::parse_qualified("a@sender.example").unwrap())
    }

    fn rcpt(local: &str) -> Address {
        Address::parse_qualified(&format!("{local}@customer.example")).unwrap()
    }

    fn greeted() -> Phase {
        Phase::Greeted(hello())
    }

    fn mail(recipients: &[&str]) -> Phase {
        Phase::Mail(
            hello(),
            Transaction {
                sender: sender(),
                recipients: recipients.iter().map(|r| rcpt(r)).collect(),
            },
        )
    }

    #[test]
    fn commands_in_the_wrong_phase_are_refused_and_change_nothing() {
        type Step = fn(&mut Phase) -> Result<(), OutOfSequence>;
        let begin: Step = |p| p.begin(sender());
        let transaction: Step = |p| p.transaction().map(|_| ());
        let finish: Step = |p| p.finish().map(|_| ());
        let etrn: Step = |p| p.may_etrn();
        let cases: [(&str, Phase, Step, OutOfSequence); 7] = [
            (
                "MAIL before HELO",
                Phase::Connected,
                begin,
                OutOfSequence::NotGreeted,
            ),
            ("nested MAIL", mail(&[]), begin, OutOfSequence::NestedMail),
            (
                "RCPT before MAIL",
                greeted(),
                transaction,
                OutOfSequence::NoMail,
            ),
            ("DATA before MAIL", greeted(), finish, OutOfSequence::NoMail),
            (
                "DATA without RCPT",
                mail(&[]),
                finish,
                OutOfSequence::NoRecipients,
            ),
            (
                "ETRN before HELO",
                Phase::Connected,
                etrn,
                OutOfSequence::NotGreeted,
            ),
            (
                "ETRN inside MAIL",
                mail(&["u"]),
                etrn,
                OutOfSequence::InTransaction,
            ),
        ];
        for (name, phase, step, wrong) in cases {
            let before = format!("{phase:?}");
            let mut phase = phase;
            assert_eq!(step(&mut phase), Err(wrong), "{name}");
            assert_eq!(format!("{phase:?}"), before, "{name}");
            assert_eq!(wrong.reply().code.value(), 503, "{name}");
        }
    }

    #[test]
    fn a_transaction_runs_from_mail_to_data() {
        let mut phase = Phase::Connected;
        phase.greet(hello());
        assert_eq!(phase.may_mail(), Ok(()));
        phase.begin(sender()).unwrap();
        assert!(phase.transaction().unwrap().add(rcpt("u"), 100));
        assert!(phase.transaction().unwrap().add(rcpt("v"), 100));
        let (greeting, transaction) = phase.finish().unwrap();
        assert_eq!(greeting, hello());
        assert_eq!(transaction.sender, sender());
        assert_eq!(transaction.recipients, [rcpt("u"), rcpt("v")]);
        assert_eq!(phase, greeted());
        assert_eq!(phase.may_etrn(), Ok(()));
    }

    #[test]
    fn rset_helo_and_starttls_end_a_transaction_to_different_phases() {
        let mut phase = mail(&["u"]);
        phase.reset();
        assert_eq!(phase, greeted());
        phase.reset();
        assert_eq!(phase, greeted());

        let mut phase = mail(&["u"]);
        let again = Hello {
            name: Domain::parse("other.example").unwrap(),
            extended: false,
        };
        phase.greet(again.clone());
        assert_eq!(phase, Phase::Greeted(again));

        for mut phase in [mail(&["u"]), greeted(), Phase::Connected] {
            phase.restart();
            assert_eq!(phase, Phase::Connected);
            assert_eq!(phase.begin(sender()), Err(OutOfSequence::NotGreeted));
        }

        let mut phase = Phase::Connected;
        phase.reset();
        assert_eq!(phase, Phase::Connected);
    }

    #[test]
    fn recipients_are_taken_once_and_up_to_the_limit() {
        let mut transaction = Transaction {
            sender: ReversePath::Null,
            recipients: Vec::new(),
        };
        assert!(transaction.add(rcpt("a"), 2));
        assert!(transaction.add(rcpt("a"), 2));
        assert_eq!(transaction.recipients, [rcpt("a")]);
        assert!(transaction.add(rcpt("b"), 2));
        assert!(!transaction.add(rcpt("c"), 2));
        assert_eq!(transaction.recipients, [rcpt("a"), rcpt("b")]);
        assert!(transaction.add(rcpt("a"), 2), "a recipient already taken");
    }
}
