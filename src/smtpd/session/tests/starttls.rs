//! STARTTLS over a loopback socket: commands pipelined behind it, and the session that starts
//! over after the handshake.

use super::*;

/// A server with a certificate for `mx.example.test`, and a client configuration that trusts
/// it.
fn tls_fixture() -> (Fixture, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let fixture = fixture(
        |_| {},
        |config| {
            let base = config.queue_dir.parent().unwrap().to_path_buf();
            std::fs::write(base.join("cert.pem"), &cert_pem).unwrap();
            std::fs::write(base.join("key.pem"), &key_pem).unwrap();
            config.tls_cert = Some(base.join("cert.pem"));
            config.tls_key = Some(base.join("key.pem"));
        },
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (fixture, Arc::new(client))
}

/// Runs one session on a loopback socket while `client` talks to it; STARTTLS needs a socket.
fn over_loopback(fixture: &Fixture, client: impl FnOnce(TcpStream)) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let (stream, peer) = listener.accept().unwrap();
            run(
                &fixture.server,
                Channel::tcp(stream, None).unwrap(),
                Client::Tcp(peer),
            );
        });
        let stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        client(stream);
        server.join().unwrap();
    });
}

/// Reads one whole reply; what was read before the connection ended when it ends first.
fn read_reply(stream: &mut impl Read) -> String {
    let mut text = Vec::new();
    let mut byte = [0u8];
    while let Ok(1) = stream.read(&mut byte) {
        text.push(byte[0]);
        let line_start = text[..text.len() - 1]
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(0, |at| at + 2);
        if text.ends_with(b"\r\n") && text.get(line_start + 3) != Some(&b'-') {
            break;
        }
    }
    replies(&String::from_utf8(text).unwrap()).join("\n")
}

fn exchange(stream: &mut (impl Read + Write), command: &str) -> String {
    stream.write_all(command.as_bytes()).unwrap();
    stream.flush().unwrap();
    read_reply(stream)
}

#[test]
fn commands_pipelined_behind_starttls_end_the_session() {
    let (fixture, _) = tls_fixture();
    over_loopback(&fixture, |mut stream| {
        assert_eq!(read_reply(&mut stream), GREETING);
        assert_eq!(
            exchange(&mut stream, "EHLO client.example\r\n"),
            ehlo_reply("[127.0.0.1]", true)
        );
        assert_eq!(
            exchange(&mut stream, "STARTTLS\r\nNOOP\r\n"),
            "501 5.5.1 Error: nothing may follow STARTTLS before the TLS handshake"
        );
        assert_eq!(read_reply(&mut stream), "", "the session has ended");
    });
    assert!(
        fixture
            .log()
            .contains("commands sent after STARTTLS before the handshake; hanging up")
    );
}

#[test]
fn after_starttls_the_session_starts_over_and_tls_stays() {
    let (fixture, client) = tls_fixture();
    over_loopback(&fixture, |mut stream| {
        assert_eq!(read_reply(&mut stream), GREETING);
        assert_eq!(
            exchange(&mut stream, "EHLO client.example\r\nMAIL FROM:<>\r\n"),
            ehlo_reply("[127.0.0.1]", true)
        );
        assert_eq!(read_reply(&mut stream), "250 2.1.0 Ok");
        assert_eq!(
            exchange(&mut stream, "STARTTLS\r\n"),
            "220 2.0.0 Ready to start TLS"
        );
        let name = rustls::pki_types::ServerName::try_from("mx.example.test").unwrap();
        let connection = rustls::ClientConnection::new(client, name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, stream);
        let steps = [
            (
                "RCPT TO:<u@customer.example>",
                "503 5.5.1 Error: need MAIL command".to_string(),
            ),
            (
                "MAIL FROM:<>",
                "503 5.5.1 Error: send HELO/EHLO first".to_string(),
            ),
            ("EHLO client.example", ehlo_reply("[127.0.0.1]", false)),
            (
                "STARTTLS",
                "503 5.5.1 Error: TLS already active".to_string(),
            ),
            ("MAIL FROM:<>", "250 2.1.0 Ok".to_string()),
            ("RCPT TO:<u@customer.example>", "250 2.1.5 Ok".to_string()),
            ("DATA", "354 End data with <CR><LF>.<CR><LF>".to_string()),
        ];
        for (command, expected) in steps {
            assert_eq!(
                exchange(&mut tls, &format!("{command}\r\n")),
                expected,
                "{command}"
            );
        }
        let queued = exchange(&mut tls, "Subject: tls\r\n\r\nbody\r\n.\r\n");
        assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
        assert_eq!(
            exchange(&mut tls, "QUIT\r\n"),
            "221 2.0.0 mx.example.test closing connection"
        );
    });
    assert!(fixture.message().contains("with ESMTPS\r\n"));
    assert!(fixture.log().contains("STARTTLS from [127.0.0.1]"));
}
