use std::sync::{Arc, Mutex};

use super::*;
use crate::smtp::test_server::{Step, domain, options, server, servers};
use crate::smtp::{TlsErrorKind, Transcript, Verification};
use crate::sysexits::{Status, Sysexit};

const WITH_STARTTLS: &str = "250-sink.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
const WITHOUT_STARTTLS: &str = "250-sink.example\r\n250 PIPELINING\r\n";

fn at(addr: SocketAddr) -> Endpoint {
    Endpoint::Address {
        addr,
        name: Some("sink.example".to_string()),
    }
}

fn try_establish(
    addr: SocketAddr,
    starttls: StartTls,
    verification: Verification,
    transcript: Transcript,
) -> Result<Session, NotEstablished> {
    let helo = domain("client.example");
    let tls = TlsClient::new(verification);
    let setup = Setup {
        helo: &helo,
        starttls,
        tls: &tls,
    };
    establish(&at(addr), &options(transcript), &setup)
}

fn capture() -> (Transcript, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    (Transcript::Capture(lines.clone()), lines)
}

#[test]
fn plain_greets_says_ehlo_and_leaves_starttls_alone() {
    let (addr, server) = server(
        "220 sink.example ESMTP\r\n",
        vec![
            Step::Lines(1, WITH_STARTTLS),
            Step::Lines(1, "221 2.0.0 bye\r\n"),
        ],
    );
    let session =
        try_establish(addr, StartTls::Off, Verification::Insecure, Transcript::Off).unwrap();
    assert_eq!(session.connection.peer().addr, addr);
    assert_eq!(
        session.connection.peer().to_string(),
        format!("sink.example[127.0.0.1]:{}", addr.port())
    );
    assert!(session.connection.tls_info().is_none());
    assert!(session.tls_fallback.is_none());
    let opening = &session.opening;
    assert_eq!(
        opening
            .greeting
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("220 sink.example ESMTP")
    );
    let hello = opening.hello.as_ref().unwrap();
    assert!(hello.extended);
    assert!(hello.capabilities.starttls());
    session.connection.quit();
    assert_eq!(
        server.join().unwrap(),
        ["EHLO client.example\r\n", "QUIT\r\n"]
    );
}

#[test]
fn starttls_is_taken_and_ehlo_said_again_over_tls() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![
            Step::Lines(1, WITH_STARTTLS),
            Step::StartTls,
            Step::Lines(1, "250-sink.example\r\n250 PIPELINING\r\n"),
        ],
    );
    let session = try_establish(
        addr,
        StartTls::Required,
        Verification::Insecure,
        Transcript::Off,
    )
    .unwrap();
    let tls = session.connection.tls_info().unwrap();
    assert!(
        tls.verified.is_err(),
        "a self-signed certificate is not trusted"
    );
    assert_eq!(session.opening.tls.as_ref(), Some(tls));
    // What the first EHLO said stays in the opening; the connection has the second one's.
    assert!(
        session
            .opening
            .hello
            .as_ref()
            .unwrap()
            .capabilities
            .starttls()
    );
    assert!(!session.connection.capabilities().starttls());
    assert!(session.connection.capabilities().pipelining());
    drop(session);
    assert_eq!(
        server.join().unwrap(),
        [
            "EHLO client.example\r\n",
            "STARTTLS\r\n",
            "-- TLS",
            "EHLO client.example\r\n"
        ]
    );
}

#[test]
fn starttls_required_but_not_offered_is_refused_after_quit() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![
            Step::Lines(1, WITHOUT_STARTTLS),
            Step::Lines(1, "221 2.0.0 bye\r\n"),
        ],
    );
    let failed = try_establish(
        addr,
        StartTls::Required,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&failed.error, SmtpError::TlsNotOffered { peer } if peer.ends_with(&format!("[127.0.0.1]:{}", addr.port()))),
        "{}",
        failed.error
    );
    assert_eq!(
        failed.to_string(),
        format!(
            "sink.example[127.0.0.1]:{}: TLS is required but the server does not offer STARTTLS",
            addr.port()
        )
    );
    assert_eq!(failed.error.status(), Status::Protocol);
    assert!(!failed.error.is_transient());
    // How far the server got is kept.
    assert!(failed.opening.greeting.is_some());
    assert!(failed.opening.hello.as_ref().unwrap().extended);
    assert_eq!(
        server.join().unwrap(),
        ["EHLO client.example\r\n", "QUIT\r\n"]
    );
}

#[test]
fn starttls_required_and_refused_by_the_server_is_an_error_without_fallback() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![
            Step::Lines(1, WITH_STARTTLS),
            Step::Lines(1, "454 4.7.0 TLS not available due to temporary reason\r\n"),
        ],
    );
    let failed = try_establish(
        addr,
        StartTls::Required,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert_eq!(
        failed.error.reply().map(ToString::to_string).as_deref(),
        Some("454 4.7.0 TLS not available due to temporary reason")
    );
    assert!(failed.error.is_transient());
    assert_eq!(
        server.join().unwrap(),
        ["EHLO client.example\r\n", "STARTTLS\r\n"]
    );
}

#[test]
fn an_untrusted_certificate_is_a_certificate_failure_when_trust_is_required() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![Step::Lines(1, WITH_STARTTLS), Step::StartTls],
    );
    let failed = try_establish(
        addr,
        StartTls::Required,
        Verification::Required,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            &failed.error,
            SmtpError::Tls {
                kind: TlsErrorKind::Certificate,
                ..
            }
        ),
        "{}",
        failed.error
    );
    assert_eq!(failed.error.status(), Status::TempFail);
    let seen = server.join().unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("-- TLS refused"),
        "{seen:?}"
    );
}

#[test]
fn opportunistic_tls_that_fails_goes_on_in_clear_on_a_new_connection_and_says_why() {
    let (addr, server) = servers(vec![
        (
            "220 sink.example\r\n",
            vec![
                Step::Lines(1, WITH_STARTTLS),
                Step::Lines(1, "454 4.7.0 TLS not available\r\n"),
            ],
        ),
        (
            "220 sink.example again\r\n",
            vec![Step::Lines(1, WITH_STARTTLS)],
        ),
    ]);
    let (transcript, lines) = capture();
    let session = try_establish(
        addr,
        StartTls::Opportunistic,
        Verification::Insecure,
        transcript,
    )
    .unwrap();
    let why = session.tls_fallback.as_ref().unwrap();
    assert_eq!(
        why.reply().map(ToString::to_string).as_deref(),
        Some("454 4.7.0 TLS not available")
    );
    assert!(session.connection.tls_info().is_none());
    assert_eq!(session.connection.peer().addr, addr);
    assert_eq!(
        session
            .opening
            .greeting
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("220 sink.example again")
    );
    drop(session);
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [
            vec!["EHLO client.example\r\n", "STARTTLS\r\n"],
            vec!["EHLO client.example\r\n"],
        ]
    );
    let transcript = lines.lock().unwrap().join("\n");
    assert!(
        transcript.contains("TLS not available; connecting again without TLS"),
        "{transcript}"
    );
}

#[test]
fn tls_when_offered_that_fails_ends_the_attempt() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![
            Step::Lines(1, WITH_STARTTLS),
            Step::Lines(1, "454 4.7.0 TLS not available\r\n"),
        ],
    );
    let failed = try_establish(
        addr,
        StartTls::WhenOffered,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(failed.error.reply().is_some_and(|r| r.code.value() == 454));
    assert!(
        failed
            .opening
            .hello
            .as_ref()
            .unwrap()
            .capabilities
            .starttls()
    );
    assert_eq!(
        server.join().unwrap(),
        ["EHLO client.example\r\n", "STARTTLS\r\n"]
    );
}

#[test]
fn tls_not_offered_goes_on_in_clear_with_a_note() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![Step::Lines(1, WITHOUT_STARTTLS)],
    );
    let (transcript, lines) = capture();
    let session = try_establish(
        addr,
        StartTls::Opportunistic,
        Verification::Insecure,
        transcript,
    )
    .unwrap();
    assert!(session.tls_fallback.is_none());
    assert!(session.connection.tls_info().is_none());
    drop(session);
    assert_eq!(server.join().unwrap(), ["EHLO client.example\r\n"]);
    let transcript = lines.lock().unwrap().join("\n");
    assert!(
        transcript.contains("*** server does not offer STARTTLS; continuing without TLS"),
        "{transcript}"
    );
}

#[test]
fn a_554_greeting_is_refused_with_its_reply() {
    let (addr, server) = server("554 5.3.2 no service here\r\n", vec![]);
    let failed = try_establish(
        addr,
        StartTls::Opportunistic,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&failed.error, SmtpError::Rejected { context, .. } if context == "greeting"),
        "{}",
        failed.error
    );
    assert_eq!(
        failed.error.reply().map(ToString::to_string).as_deref(),
        Some("554 5.3.2 no service here")
    );
    assert_eq!(failed.error.status(), Status::Protocol);
    assert_eq!(*failed.opening, Opening::default());
    assert!(server.join().unwrap().is_empty());
}

#[test]
fn ehlo_refused_falls_back_to_helo_and_leaves_no_starttls_to_take() {
    let script = || {
        vec![
            Step::Lines(1, "502 5.5.1 EHLO not implemented\r\n"),
            Step::Lines(1, "250 old.example\r\n"),
        ]
    };
    let (addr, helo_only) = server("220 old.example\r\n", script());
    let session = try_establish(
        addr,
        StartTls::Opportunistic,
        Verification::Insecure,
        Transcript::Off,
    )
    .unwrap();
    let hello = session.opening.hello.as_ref().unwrap();
    assert!(!hello.extended);
    assert_eq!(hello.capabilities, Capabilities::default());
    assert!(!session.connection.is_extended());
    drop(session);
    assert_eq!(
        helo_only.join().unwrap(),
        ["EHLO client.example\r\n", "HELO client.example\r\n"]
    );

    let (addr, server) = server("220 old.example\r\n", script());
    let failed = try_establish(
        addr,
        StartTls::Required,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(matches!(failed.error, SmtpError::TlsNotOffered { .. }));
    assert_eq!(server.join().unwrap()[1], "HELO client.example\r\n");
}

#[test]
fn a_host_endpoint_connects_to_its_address() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![Step::Lines(1, WITHOUT_STARTTLS)],
    );
    let helo = domain("client.example");
    let tls = TlsClient::new(Verification::Insecure);
    let setup = Setup {
        helo: &helo,
        starttls: StartTls::Off,
        tls: &tls,
    };
    let endpoint = Endpoint::Host {
        host: RelayHost::Ip(addr.ip()),
        port: addr.port(),
    };
    let session = establish(&endpoint, &options(Transcript::Off), &setup).unwrap();
    assert_eq!(
        session.connection.peer().to_string(),
        format!("[127.0.0.1]:{}", addr.port())
    );
    drop(session);
    server.join().unwrap();
}

#[test]
fn the_handshake_is_kept_when_the_ehlo_after_it_fails() {
    let (addr, server) = server(
        "220 sink.example\r\n",
        vec![Step::Lines(1, WITH_STARTTLS), Step::StartTls],
    );
    let failed = try_establish(
        addr,
        StartTls::Required,
        Verification::Insecure,
        Transcript::Off,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&failed.error, SmtpError::Closed { .. }),
        "{}",
        failed.error
    );
    assert!(failed.opening.tls.is_some());
    assert!(
        failed
            .opening
            .hello
            .as_ref()
            .unwrap()
            .capabilities
            .starttls()
    );
    server.join().unwrap();
}
