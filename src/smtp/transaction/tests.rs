use super::*;
use crate::smtp::test_server::{Step, domain, options, server};
use crate::smtp::{ConnectOptions, Timeouts, Transcript};
use std::collections::VecDeque;
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
mod chunked;
mod data;
mod failures;
mod recipients;

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
