//! Property tests of whole programs fed what others write.
//!
//! queue-smtpd's sessions (inetd mode, its standard input a pipe), queue-enqueue's standard
//! input, and replies the SMTP client reads from a real socket. `src/properties.rs`, included
//! here as it is, says how the runs are seeded and sized, how to run many more cases before a
//! release, and how memory is measured.
//!
//! Each case runs a program or opens a loopback connection, so these properties try fewer cases
//! than the module properties: together about ten seconds on two cores.

#[allow(dead_code)]
#[path = "../src/properties.rs"]
mod properties;

mod support;

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, TcpListener};
use std::time::Duration;

use etrnq::address::Domain;
use etrnq::route::RelayHost;
use etrnq::smtp::{ConnectOptions, Connection, Reply, Timeouts};
use proptest::prelude::*;

use properties::{bytes, config, mutated, peak};
use support::site::{Site, stderr_lines};

/// Command lines a client may send, to be mutated and mixed. ETRN names no domain this server
/// takes mail for, so no queue run outlives a case.
const COMMANDS: &[&str] = &[
    "EHLO client.test",
    "HELO client.test",
    "MAIL FROM:<alice@example.test>",
    "MAIL FROM:<> SIZE=200 BODY=8BITMIME",
    "RCPT TO:<user@customer.test>",
    "RCPT TO:<\"a b\"@customer.test>",
    "RCPT TO:<postmaster>",
    "RCPT TO:<user%evil.test@customer.test>",
    "RCPT TO:<user@elsewhere.test>",
    "DATA",
    "RSET",
    "NOOP",
    "VRFY user",
    "HELP",
    "ETRN other.test",
    "ETRN @other.test",
    "ETRN #queue",
    "STARTTLS",
    "BDAT 10 LAST",
    "QUIT",
];

/// A line as sent, or now and then damaged.
fn sometimes_damaged(
    line: impl Strategy<Value = Vec<u8>> + Clone,
) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => line.clone(), 1 => mutated(line)]
}

fn line(choices: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> + Clone {
    proptest::sample::select(choices).prop_map(|c| format!("{c}\r\n").into_bytes())
}

/// A mail transaction: MAIL, one to three RCPT and the message after DATA (dot-stuffed or not),
/// any of them perhaps damaged.
fn transaction() -> impl Strategy<Value = Vec<u8>> {
    let mail = line(&[
        "MAIL FROM:<alice@example.test>",
        "MAIL FROM:<> SIZE=200 BODY=8BITMIME",
    ]);
    let rcpt = line(&[
        "RCPT TO:<user@customer.test>",
        "RCPT TO:<\"a b\"@Customer.Test>",
        "RCPT TO:<postmaster>",
        "RCPT TO:<user%evil.test@customer.test>",
        "RCPT TO:<user@elsewhere.test>",
    ]);
    let message = "(Subject: [ -~]{0,20}\r\n){0,3}\r\n(\\.?[ -~]{0,30}\r\n){0,4}"
        .prop_map(|m| format!("DATA\r\n{m}.\r\n").into_bytes());
    (
        sometimes_damaged(mail),
        proptest::collection::vec(sometimes_damaged(rcpt), 1..4),
        sometimes_damaged(message),
    )
        .prop_map(|(mail, rcpts, message)| [mail, rcpts.concat(), message].concat())
}

/// One step of a session: a transaction, a command line perhaps damaged, or bytes from nowhere.
fn step() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => transaction(),
        4 => sometimes_damaged(line(COMMANDS)),
        1 => bytes(200),
    ]
}

/// A whole session: greeted, then steps in any order.
fn session() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(step(), 0..10).prop_map(|steps| {
        let mut wire = b"EHLO client.test\r\n".to_vec();
        steps.iter().for_each(|s| wire.extend_from_slice(s));
        wire
    })
}

/// A site whose queue-smtpd relays for customer.test and logs to a file of its own.
fn smtpd_sandbox() -> Site {
    Site::named("mx.example.test", "relay_domains = [\"customer.test\"]\n")
}

/// The replies in `output`, each checked as the client would read it.
fn replies(output: &[u8]) -> Vec<Reply> {
    let text = String::from_utf8(output.to_vec()).expect("replies are ASCII");
    assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
    let mut replies = Vec::new();
    let mut lines = Vec::new();
    for line in text.split_terminator("\r\n") {
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        assert!(
            line.bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
            "{line:?}"
        );
        lines.push(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push(Reply::from_lines(&lines).unwrap_or_else(|e| panic!("{e}: {text}")));
            lines.clear();
        }
    }
    assert!(lines.is_empty(), "a reply left unfinished: {text}");
    replies
}

fn enqueue_args() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        Just(vec!["-i", "user@customer.test"]),
        Just(vec!["-t"]),
        Just(vec!["-t", "-i", "-f", "alice@example.test"]),
        Just(vec!["user@customer.test"]),
    ]
}

/// A message as a mail program pipes it: perhaps an mbox line, header fields (some with
/// addresses), the empty line and a body, perhaps a lone dot.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        "(To|Cc|Bcc): ([a-z]{1,6}@[a-z]{1,6}\\.test(, )?){1,3}",
        "(To|Cc): \"[ -~]{0,12}\" <[a-z]{1,6}@customer\\.test>",
        "(Subject|From|Date|Message-ID|Received): [ -~]{0,30}",
    ];
    (
        proptest::option::of(Just("From alice Mon Nov 23 06:27:00 2026\n")),
        proptest::collection::vec(field, 0..5),
        "([ -~]{0,30}\r?\n){0,4}(\\.\n)?",
    )
        .prop_map(|(from, fields, body)| {
            let mut text = from.unwrap_or_default().to_string();
            fields.iter().for_each(|f| text.push_str(&format!("{f}\n")));
            text.push('\n');
            text.push_str(&body);
            text.into_bytes()
        })
}

/// A loopback server that sends `script` and then closes its side, reading whatever the client
/// writes until the client goes; and the client's greeting and EHLO against it, with what the
/// client held at most.
fn converse(script: Vec<u8>) -> (Result<(Reply, Option<Reply>), String>, usize) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = stream.write_all(&script);
        let _ = stream.shutdown(Shutdown::Write);
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    let options = ConnectOptions {
        timeouts: Timeouts::uniform(Duration::from_secs(20)),
        ..ConnectOptions::default()
    };
    let helo = Domain::parse("client.test").unwrap();
    let (result, most) = peak(|| {
        let mut connection =
            Connection::connect(&RelayHost::Ip(Ipv4Addr::LOCALHOST.into()), port, &options)
                .map_err(|e| e.to_string())?;
        let greeting = connection.greeting().map_err(|e| e.to_string())?;
        let ehlo = connection.hello(&helo).ok();
        if let Some(ehlo) = &ehlo {
            let _ = connection.capabilities().size_limit();
            assert!(ehlo.is_positive());
        }
        Ok((greeting, ehlo))
    });
    server.join().unwrap();
    (result, most)
}

/// What one reply may cost the client: 500 lines of 8192 octets, held as read and as parsed,
/// with the EHLO keywords made of them.
const REPLY_BUDGET: usize = 24 << 20;

/// A reply as a server writes it, each line ending in CRLF.
fn wire_reply(code: u16, texts: &[String]) -> Vec<u8> {
    let last = texts.len() - 1;
    texts
        .iter()
        .enumerate()
        .flat_map(|(i, text)| {
            format!("{code}{}{text}\r\n", if i == last { ' ' } else { '-' }).into_bytes()
        })
        .collect()
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn queue_smtpd_answers_any_session_and_queues_exactly_what_it_acknowledged(input in session()) {
        let sandbox = smtpd_sandbox();
        let output = sandbox
            .command("queue-smtpd")
            .arg("--inetd")
            .arg("--queue-run")
            .arg("/bin/true")
            .write_stdin(input.clone())
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        prop_assert_eq!(output.status.code(), Some(0), "{:?}", output);
        prop_assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
        let replies = replies(&output.stdout);
        prop_assert_eq!(replies.first().map(|r| r.code.value()), Some(220));
        let acknowledged = replies
            .iter()
            .filter(|r| r.code.value() == 250 && r.message().starts_with("2.0.0 Ok: queued as "))
            .count();
        prop_assert_eq!(sandbox.ids().len(), acknowledged, "{}", String::from_utf8_lossy(&output.stdout));
        prop_assert_eq!(sandbox.files("data").len(), acknowledged);
        prop_assert_eq!(sandbox.files("tmp"), Vec::<String>::new());
        // Whatever the session, mail goes only where this server relays, and never onward.
        for id in sandbox.ids() {
            let message = sandbox.message(&id);
            prop_assert!(!message.envelope.addresses().is_empty());
            for address in message.envelope.addresses() {
                let address = address.to_ascii_lowercase();
                let (local, domain) = address.rsplit_once('@').unwrap();
                prop_assert!(
                    domain == "customer.test" || address == "postmaster@mx.example.test",
                    "{}", address
                );
                prop_assert!(!local.contains(['%', '!', '@']), "{}", address);
            }
        }
    }

    #[test]
    fn queue_enqueue_queues_its_input_whole_or_refuses_it_on_one_line(
        args in enqueue_args(),
        input in prop_oneof![3 => mutated(message()), 1 => bytes(600)],
    ) {
        let sandbox = Site::new("");
        let output = sandbox.command("queue-enqueue").args(&args).write_stdin(input.clone()).output().unwrap();
        let code = output.status.code();
        prop_assert!(code.is_some_and(|c| c != 70 && c != 101), "{:?}", output);
        if code == Some(0) {
            let message = sandbox.only_message();
            prop_assert!(!message.envelope.addresses().is_empty());
            // Without a Bcc field (always taken out) or an mbox line (dropped), and without
            // the lone-dot rule, the input follows the fields queue-enqueue adds, byte for byte.
            let bcc = input.to_ascii_lowercase().windows(4).any(|w| w == b"bcc:");
            if args[0] == "-i" && !input.starts_with(b"From ") && !bcc {
                prop_assert!(message.data.ends_with(&input));
            }
        } else {
            prop_assert_eq!(stderr_lines(&output).len(), 1, "{:?}", output);
            prop_assert_eq!(sandbox.ids(), Vec::<String>::new());
            prop_assert_eq!(sandbox.files("data"), Vec::<String>::new());
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn the_client_reads_any_bytes_as_replies_or_refuses_them_within_bounds(
        script in prop_oneof![
            bytes(3000),
            ("[245][0-5][0-9]", proptest::collection::vec("[ -~]{0,40}", 1..6))
                .prop_flat_map(|(code, texts)| {
                    let mut script = wire_reply(code.parse().unwrap(), &texts);
                    script.extend(wire_reply(250, &["mx.test".into(), "SIZE 1000".into(), "ETRN".into()]));
                    mutated(Just(script))
                }),
        ]
    ) {
        let (_, most) = converse(script);
        prop_assert!(most <= REPLY_BUDGET, "{} bytes held", most);
    }

    #[test]
    fn replies_read_through_a_socket_as_the_server_wrote_them(
        code in 200..260u16,
        greeting in proptest::collection::vec("[ -~]{0,60}", 1..5),
        ehlo in proptest::collection::vec("[A-Z0-9][A-Z0-9-]{0,10}( [!-~]{1,8}){0,3}", 0..8),
        cut in any::<usize>(),
    ) {
        let mut ehlo_lines = vec!["mx.test".to_string()];
        ehlo_lines.extend(ehlo);
        let mut script = wire_reply(code, &greeting);
        script.extend(wire_reply(250, &ehlo_lines));
        let (result, _) = converse(script.clone());
        let (got_greeting, got_ehlo) = result.unwrap();
        prop_assert_eq!(got_greeting.code.value(), code);
        prop_assert_eq!(&got_greeting.lines, &greeting);
        prop_assert_eq!(&got_ehlo.unwrap().lines, &ehlo_lines);
        // Cut short anywhere inside the greeting, it is no reply.
        let greeting_len = wire_reply(code, &greeting).len();
        let (result, _) = converse(script[..cut % greeting_len].to_vec());
        prop_assert!(result.is_err());
    }
}

#[test]
fn a_ten_megabyte_reply_line_is_refused_without_being_held() {
    let mut script = b"220 ".to_vec();
    script.resize(10 << 20, b'x');
    script.extend_from_slice(b"\r\n");
    let (result, most) = converse(script);
    assert!(result.is_err());
    assert!(most <= 1 << 20, "{most} bytes held");
    let many = "220-x\r\n".repeat(100_000);
    let (result, most) = converse(many.into_bytes());
    assert!(result.is_err());
    assert!(most <= 1 << 20, "{most} bytes held");
}
