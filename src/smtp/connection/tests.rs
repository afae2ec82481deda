use std::sync::{Arc, Mutex};

use super::*;
use crate::smtp::TlsClient;
use crate::smtp::test_server::{Step, domain, options, server};

#[test]
fn a_trickled_reply_is_cut_off_when_its_limit_is_spent() {
    // One byte every 100 ms: each read gets something long before the 700 ms limit, which a
    // limit per read would renew until the whole greeting had arrived, four seconds later.
    let (addr, server) = server(
        "",
        vec![Step::Trickle(
            0,
            "220-sink.example ESMTP\r\n220 trickling along\r\n",
            Duration::from_millis(100),
        )],
    );
    let opts = ConnectOptions {
        timeouts: Timeouts::uniform(Duration::from_millis(700)),
        ..options(Transcript::Off)
    };
    let mut conn = Connection::open(addr, None, &opts).unwrap();
    let err = conn.greeting().unwrap_err();
    assert!(
        matches!(&err, SmtpError::Timeout { during, .. } if during == "waiting for the greeting"),
        "{err}"
    );
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(seen, ["-- cut off"]);
}

#[test]
fn a_reply_in_pieces_within_its_limit_is_read_whole() {
    let (addr, server) = server(
        "",
        vec![
            Step::Trickle(
                0,
                "220-sink.example\r\n220 ready\r\n",
                Duration::from_millis(5),
            ),
            Step::Lines(1, "250 sink.example\r\n"),
        ],
    );
    let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
    let greeting = conn.greeting().unwrap();
    assert_eq!(greeting.to_string(), "220 sink.example ready");
    conn.hello(&domain("client.example")).unwrap();
    drop(conn);
    server.join().unwrap();
}

#[test]
fn a_trickled_tls_handshake_is_one_step() {
    // The server says 220 to STARTTLS, then sends its handshake a byte at a time.
    let (addr, server) = server(
        "220 sink\r\n",
        vec![
            Step::Lines(1, "250-sink\r\n250 STARTTLS\r\n"),
            Step::Trickle(1, "220 go ahead\r\n", Duration::ZERO),
            // A record header announcing 64 bytes, and 60 of them: a limit per read would
            // wait the whole six seconds, then 700 ms more.
            Step::Trickle(0, HANDSHAKE_TRICKLE, Duration::from_millis(100)),
        ],
    );
    let opts = ConnectOptions {
        timeouts: Timeouts::uniform(Duration::from_millis(700)),
        ..options(Transcript::Off)
    };
    let mut conn = Connection::open(addr, None, &opts).unwrap();
    conn.greeting().unwrap();
    conn.hello(&domain("client.example")).unwrap();
    let err = conn
        .starttls(&TlsClient::new(crate::smtp::Verification::Insecure))
        .unwrap_err();
    assert!(
        matches!(&err, SmtpError::Timeout { during, .. } if during == "during the TLS handshake"),
        "{err}"
    );
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("-- cut off"),
        "{seen:?}"
    );
}

const HANDSHAKE_TRICKLE: &str = concat!(
    "\u{16}\u{3}\u{3}\u{0}\u{40}",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
);

#[test]
fn the_transcript_shows_server_lines_printable() {
    let (addr, server) = server("220 \u{1b}]0;owned\u{7} hello\r\n", vec![]);
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut conn =
        Connection::open(addr, None, &options(Transcript::Capture(captured.clone()))).unwrap();
    let greeting = conn.greeting().unwrap();
    assert_eq!(greeting.to_string(), "220 ?]0;owned? hello");
    drop(conn);
    server.join().unwrap();
    let transcript = captured.lock().unwrap().join("\n");
    assert!(transcript.contains("220 ?]0;owned? hello"), "{transcript}");
    assert!(!transcript.contains('\u{1b}'), "{transcript:?}");
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let (addr, server) = server(
        "220 old\r\n",
        vec![
            Step::Lines(1, "502 5.5.1 EHLO not implemented\r\n"),
            Step::Lines(1, "250 old.example\r\n"),
        ],
    );
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut conn =
        Connection::open(addr, None, &options(Transcript::Capture(captured.clone()))).unwrap();
    conn.greeting().unwrap();
    conn.hello(&domain("client.example")).unwrap();
    assert!(!conn.is_extended());
    assert!(!conn.capabilities().etrn());
    drop(conn);
    assert_eq!(server.join().unwrap()[1], "HELO client.example\r\n");
    let transcript = captured.lock().unwrap().join("\n");
    assert!(
        transcript.contains(">>> EHLO client.example"),
        "{transcript}"
    );
    assert!(transcript.contains("trying HELO"), "{transcript}");
}

#[test]
fn data_before_the_handshake_is_refused() {
    let (addr, _server) = server(
        "220 evil\r\n",
        vec![Step::Lines(1, "220 go ahead\r\n250 injected\r\n")],
    );
    let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
    conn.greeting().unwrap();
    let err = conn
        .starttls(&TlsClient::new(crate::smtp::Verification::Insecure))
        .unwrap_err();
    assert!(matches!(err, SmtpError::Protocol { .. }), "{err}");
}

#[test]
fn a_negative_greeting_is_an_error_with_the_reply() {
    let (addr, _server) = server("421 4.3.2 too busy\r\n", vec![]);
    let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
    let err = conn.greeting().unwrap_err();
    assert_eq!(err.reply().unwrap().to_string(), "421 4.3.2 too busy");
    assert!(err.is_transient());
}

#[test]
fn a_closed_connection_says_what_was_awaited() {
    let (addr, _server) = server("220-first line\r\n", vec![]);
    let mut conn = Connection::open(addr, None, &options(Transcript::Off)).unwrap();
    let err = conn.greeting().unwrap_err();
    assert!(
        err.to_string()
            .ends_with("lost connection waiting for the greeting"),
        "{err}"
    );
}

#[test]
fn resolving_an_address_literal_needs_no_resolver() {
    let host = RelayHost::Ip("::1".parse().unwrap());
    assert_eq!(resolve(&host, 25, AddressFamily::Any).unwrap().len(), 1);
    let err = resolve(&host, 25, AddressFamily::V4).unwrap_err();
    assert!(matches!(err, SmtpError::NoHost { .. }));
}
