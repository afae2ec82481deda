//! queue-smtpd end to end: the daemon on a loopback port, real clients (swaks, etrn-send, raw
//! sessions), a sink standing in for the customer's site, and the queue inspected with mailq.
//! Every test has its own queue, configuration, log and ports, and stops what it starts.

mod backup_mx;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use backup_mx::*;

#[test]
fn swaks_mail_for_a_relay_domain_is_queued_with_one_received_line() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let out = swaks(&daemon, &["--to", "user@customer.test", "--pipeline"]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );

    let ids = site.queued_ids();
    assert_eq!(ids.len(), 1);
    assert!(site.queue().join("env").join(&ids[0]).is_file());
    let data = site.queued_data();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].matches("Received:").count(), 1, "{}", data[0]);
    assert!(
        data[0].starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx2.isp.test (etrnq) with ESMTP\r\n"
        ),
        "{}",
        data[0]
    );
    assert!(data[0].contains(&format!("id {} for <user@customer.test>;", ids[0])));
    assert!(data[0].contains("This is a test mailing"));
    let log = site.log();
    assert!(log.contains("connect from [127.0.0.1]:"), "{log}");
    assert!(log.contains(&format!(
        "{}: to=<user@customer.test>, status=queued",
        ids[0]
    )));
    assert!(log.contains("disconnect from [127.0.0.1]:"), "{log}");
}

#[test]
fn swaks_mail_for_another_domain_is_relay_access_denied() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let out = swaks(&daemon, &["--to", "user@elsewhere.test"]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{transcript}");
    assert!(
        transcript.contains("554 5.7.1 <user@elsewhere.test>: Relay access denied"),
        "{transcript}"
    );
    // A subdomain of an accepted domain is another domain.
    let out = swaks(&daemon, &["--to", "user@sub.customer.test"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("554 5.7.1"));
    assert_eq!(site.queue_files(), 0);
    assert!(site.log().contains("relay access denied"));
}

#[test]
fn a_message_over_the_size_limit_is_refused_and_nothing_is_queued() {
    let site = Site::new("max_message_size = 2000");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.command("MAIL FROM:<alice@example.test> SIZE=2001");
    assert_eq!(code, 552, "{text}");
    let body = "x".repeat(70);
    let big = vec![body.as_str(); 40].join("\r\n");
    let (code, text) = s.message("user@customer.test", big.as_bytes());
    assert_eq!(code, 552, "{text}");
    // The session is still in step: a small message goes through.
    let (code, text) = s.message("user@customer.test", b"Subject: small\r\n\r\nok");
    assert_eq!(code, 250, "{text}");
    s.expect("QUIT", 221);
    assert_eq!(site.queued_ids().len(), 1);

    let long_body = vec!["y".repeat(70); 50].join("\n");
    let out = swaks(
        &daemon,
        &["--to", "user@customer.test", "--body", &long_body],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("552 5.3.4"));
    assert_eq!(site.queued_ids().len(), 1);
    assert_eq!(site.queue_files(), 2, "nothing partial left behind");
}

#[test]
fn smtp_smuggling_payloads_are_refused_and_nothing_partial_is_queued() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let payloads: [&[u8]; 5] = [
        b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@customer.test>\r\nDATA\r\nsmuggled",
        b"Subject: b\r\n\r\nfirst\r\n.\nMAIL FROM:<evil@example.test>\r\nsmuggled",
        b"Subject: c\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@example.test>\r\nsmuggled",
        b"Subject: d\r\n\r\nfirst\r.\rMAIL FROM:<evil@example.test>\r\nsmuggled",
        b"Subject: e\r\n\r\nbare\rcarriage return and bare\nline feed smuggled",
    ];
    for payload in payloads {
        let mut s = daemon.session();
        s.hello();
        let (code, text) = s.message("user@customer.test", payload);
        assert_eq!(code, 550, "{payload:?}: {text}");
        assert!(text.contains("bare <CR> or <LF>"), "{text}");
        // Only the real end of data ended the message: the next command is a command.
        s.expect("RSET", 250);
        s.expect("QUIT", 221);
    }
    assert_eq!(site.queue_files(), 0);
    // A bare LF in a command is refused too.
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    s.send(b"EHLO client.test\n");
    assert_eq!(s.reply().0, 500);
}

#[test]
fn too_many_hops_is_554_and_one_under_the_limit_passes() {
    let site = Site::new("max_hops = 5");
    let daemon = site.start(&[]);
    let hops = |n: usize| {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "Received: from r{i}.test by r{}.test; Mon, 23 Nov 2026 07:00:00 +0000\r\n",
                i + 1
            ));
        }
        text.push_str("Subject: loop\r\n\r\nbody");
        text
    };
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.message("user@customer.test", hops(5).as_bytes());
    assert_eq!(code, 554, "{text}");
    assert!(text.starts_with("554 5.4.6"), "{text}");
    let (code, text) = s.message("user@customer.test", hops(4).as_bytes());
    assert_eq!(code, 250, "{text}");
    let data = site.queued_data();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].matches("Received:").count(), 5);
}

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.send(
        b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\nRCPT TO:<b@elsewhere.test>\r\n\
          RCPT TO:<c@held.test>\r\nNOOP\r\nDATA\r\n",
    );
    let codes: Vec<u16> = (0..6).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 250, 554, 250, 250, 354]);
    s.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<d@customer.test>\r\nDATA\r\n");
    let codes: Vec<u16> = (0..4).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    s.send(b"\r\n.\r\nVRFY someone\r\nQUIT\r\n");
    let codes: Vec<u16> = (0..3).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 252, 221]);
    assert_eq!(site.queued_ids().len(), 2);

    // swaks' own pipelining agrees.
    let out = swaks(&daemon, &["--to", "e@customer.test", "--pipeline"]);
    assert!(out.status.success());
    assert_eq!(site.queued_ids().len(), 3);
}

#[test]
fn commands_out_of_sequence_and_errors_per_session() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    s.expect("MAIL FROM:<alice@example.test>", 503);
    s.expect("HELO client.test", 250);
    s.expect("RCPT TO:<a@customer.test>", 503);
    s.expect("DATA", 503);
    s.expect("MAIL FROM:<alice@example.test>", 250);
    s.expect("MAIL FROM:<alice@example.test>", 503);
    s.expect("DATA", 503);
    let long = format!("NOOP {}", "x".repeat(600));
    s.expect(&long, 500);
    s.expect("EXPN staff", 502);
    s.expect("BOGUS", 500);
    // Keep making errors: the server hangs up with 421 at its limit.
    let mut last = (0, String::new());
    for _ in 0..30 {
        s.send(b"BOGUS\r\n");
        last = s.reply();
        if last.0 == 421 {
            break;
        }
    }
    assert!(last.1.contains("421 4.7.0"), "{last:?}");
    let mut rest = Vec::new();
    let _ = s.reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after 421: {rest:?}");
}

#[test]
fn etrn_replies_from_raw_sessions_and_etrn_send() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    s.expect("ETRN customer.test", 503);
    s.expect("EHLO client.test", 250);
    let text = s.expect("ETRN customer.test", 251);
    assert_eq!(
        text,
        "251 2.0.0 OK, no messages waiting for node customer.test"
    );
    s.expect("ETRN @customer.test", 251);
    let text = s.expect("ETRN elsewhere.test", 459);
    assert!(text.contains("Node elsewhere.test not allowed"), "{text}");
    s.expect("ETRN #mqueue", 459);
    s.expect("ETRN", 501);
    s.expect("ETRN customer.test extra words", 501);
    s.expect("ETRN customer..test", 501);
    s.expect("ETRN ;reboot", 501);
    s.expect("MAIL FROM:<alice@example.test>", 250);
    s.expect("ETRN customer.test", 503);
    s.expect("QUIT", 221);

    let etrn_send = |domain: &str| {
        Command::new(bin("etrn-send"))
            .arg("-p")
            .arg(daemon.port.to_string())
            .args(["--helo", "site.customer.test", "127.0.0.1", domain])
            .output()
            .expect("etrn-send")
    };
    let out = etrn_send("customer.test");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("customer.test 251"));
    let out = etrn_send("elsewhere.test");
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert!(site.log().contains("ETRN elsewhere.test: 459"));
}

#[test]
fn too_many_etrn_in_one_session_are_refused() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    for _ in 0..10 {
        s.expect("ETRN customer.test", 251);
    }
    let text = s.expect("ETRN customer.test", 458);
    assert!(text.contains("more than 10 ETRN"), "{text}");
}

/// Queues `count` messages for `to` over SMTP.
#[test]
fn after_253_the_held_mail_reaches_the_site_and_the_queue_empties() {
    let sink = Sink::start(Duration::ZERO);
    let site = Site::routed("", sink.port);
    let daemon = site.start(&[]);
    queue_over_smtp(&daemon, "user@customer.test", 3);
    queue_over_smtp(&daemon, "other@held.test", 1);
    assert_eq!(site.queued_ids().len(), 4);

    let out = Command::new(bin("etrn-send"))
        .arg("-p")
        .arg(daemon.port.to_string())
        .args(["127.0.0.1", "customer.test"])
        .output()
        .expect("etrn-send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains(
            "customer.test 253 2.0.0 OK, 3 pending messages for node customer.test started"
        ),
        "{stdout}"
    );
    poll_until("the held mail to reach the site", || {
        sink.messages().len() == 3 && site.queued_ids().len() == 1
    });
    for message in sink.messages() {
        assert!(
            message.contains("RCPT TO:<user@customer.test>"),
            "{message}"
        );
        assert_eq!(message.matches("Received:").count(), 1, "{message}");
    }
    // The other held domain is still waiting for its own ETRN.
    poll_until("the queue run to end", || {
        site.log().contains("ended: exit status: 0")
    });
    let log = site.log();
    assert_eq!(log.matches("etrn: started").count(), 1, "{log}");
    assert!(log.contains("-R customer.test"), "{log}");
}

#[test]
fn a_second_etrn_while_the_run_is_going_starts_nothing() {
    // The site takes its time to answer, so the first run is still going at the second ETRN.
    let sink = Sink::start(Duration::from_secs(3));
    let site = Site::routed("", sink.port);
    let daemon = site.start(&[]);
    queue_over_smtp(&daemon, "user@customer.test", 2);
    let mut s = daemon.session();
    s.hello();
    let first = s.expect("ETRN customer.test", 253);
    assert!(
        first.ends_with("2 pending messages for node customer.test started"),
        "{first}"
    );
    let second = s.expect("ETRN customer.test", 253);
    assert!(second.contains("already in progress"), "{second}");
    s.expect("QUIT", 221);
    poll_until("the held mail to reach the site", || {
        sink.messages().len() == 2 && site.queued_ids().is_empty()
    });
    poll_until("the queue run to end", || site.log().contains("ended:"));
    let log = site.log();
    assert_eq!(log.matches("etrn: started").count(), 1, "{log}");
    assert!(log.contains("is still going; none started"), "{log}");
}

#[test]
fn fifty_clients_at_once_lose_nothing() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let port = daemon.port;
    let clients: Vec<JoinHandle<Vec<String>>> = (0..50)
        .map(|client| {
            std::thread::spawn(move || {
                let mut s = Session::connect(SocketAddr::from(([127, 0, 0, 1], port)));
                s.hello();
                let mut ids = Vec::new();
                for n in 0..20 {
                    let body = format!("Subject: client {client} message {n}\r\n\r\nbody");
                    let (code, text) = s.message("load@customer.test", body.as_bytes());
                    assert_eq!(code, 250, "{text}");
                    ids.push(text.rsplit(' ').next().unwrap_or_default().to_string());
                }
                s.expect("QUIT", 221);
                ids
            })
        })
        .collect();
    let acknowledged: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert_eq!(acknowledged.len(), 1000);
    let queued = site.queued_ids();
    assert_eq!(queued.len(), 1000);
    let distinct: HashSet<&String> = queued.iter().collect();
    assert_eq!(distinct.len(), 1000);
    let acknowledged: HashSet<&String> = acknowledged.iter().collect();
    assert_eq!(acknowledged, distinct, "every 250 names a queued message");
}

#[test]
fn inetd_mode_serves_one_session_on_stdin_and_stdout() {
    let site = Site::new("");
    let output = assert_cmd::Command::cargo_bin("queue-smtpd")
        .expect("queue-smtpd")
        .arg("-C")
        .arg(site.config())
        .arg("--inetd")
        .write_stdin(
            "EHLO client.test\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<user@customer.test>\r\n\
             DATA\r\nSubject: inetd\r\n\r\nhello\r\n.\r\nETRN customer.test\r\nQUIT\r\n",
        )
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run queue-smtpd --inetd");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let codes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "253", "221"],
        "{stdout}"
    );
    assert!(stdout.starts_with("220 mx2.isp.test ESMTP"), "{stdout}");
    assert_eq!(site.queued_ids().len(), 1);
    assert!(site.queued_data()[0].starts_with("Received: from client.test (unknown)"));
}

#[test]
fn connection_limit_ipv6_listener_and_a_clean_stop() {
    let site = Site::new("");
    let port = free_port();
    let v4 = format!("127.0.0.1:{port}");
    let v6_port = free_port();
    let v6 = format!("[::1]:{v6_port}");
    let ipv6 = TcpListener::bind(("::1", 0)).is_ok();
    let mut listen = vec!["--listen", v4.as_str()];
    if ipv6 {
        listen.extend(["--listen", v6.as_str()]);
    }
    let mut daemon = Daemon::start(&site, &listen, &["--max-connections", "1"], port);
    // The start-up probe was a connection too.
    poll_until("the probe's session to end", || {
        site.log().contains("disconnect from")
    });
    let mut first = daemon.session();
    assert_eq!(first.reply().0, 220);
    let mut second = daemon.session();
    let (code, text) = second.reply();
    assert_eq!(code, 421, "{text}");
    if ipv6 {
        drop(first);
        poll_until("the first session to end", || {
            site.log().matches("disconnect from").count() == 2
        });
        let mut over_v6 = Session::connect(format!("[::1]:{v6_port}").parse().expect("addr"));
        assert_eq!(over_v6.reply().0, 220);
        over_v6.expect("EHLO client.test", 250);
        let status = daemon.stop();
        assert!(status.success(), "{status}");
        let (code, text) = over_v6.reply();
        assert_eq!(code, 421, "{text}");
        assert!(text.contains("shutting down"), "{text}");
    } else {
        let status = daemon.stop();
        assert!(status.success(), "{status}");
    }
    assert!(site.log().contains("daemon stopped"));
}

#[test]
fn bad_configuration_and_unusable_address_exit_with_sysexits() {
    let site = Site::new("bogus_key = 1");
    let out = Command::new(bin("queue-smtpd"))
        .arg("-C")
        .arg(site.config())
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let site = Site::new("");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = busy.local_addr().expect("addr").to_string();
    let out = Command::new(bin("queue-smtpd"))
        .arg("-C")
        .arg(site.config())
        .args(["--listen", &listen])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("queue-smtpd: cannot listen on"),
        "{stderr}"
    );

    let out = Command::new(bin("queue-smtpd")).output().expect("run");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

#[test]
fn the_etrn_demo_script_runs_end_to_end() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/etrn-demo.sh");
    let bin_dir = bin("queue-smtpd")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let out = Command::new("bash")
        .arg(script)
        .env("ETRNQ_BIN", bin_dir)
        .env("ISP_PORT", free_port().to_string())
        .env("SITE_PORT", free_port().to_string())
        .output()
        .expect("run contrib/etrn-demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the site has all 3 messages"), "{stdout}");
}

/// A self-signed certificate for `mx2.isp.test` in a directory of its own: the directory (kept
/// alive by the caller), the configuration lines that name the files, and the certificate.
fn certificate() -> (
    tempfile::TempDir,
    String,
    rustls::pki_types::CertificateDer<'static>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["mx2.isp.test".to_string()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let lines = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    (dir, lines, certified.cert.der().clone())
}

#[test]
fn swaks_over_starttls_is_queued_with_esmtps() {
    let (_certs, lines, _) = certificate();
    let site = Site::new(&lines);
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    let ehlo = s.expect("EHLO client.test", 250);
    assert!(
        ehlo.lines()
            .any(|l| l == "250-STARTTLS" || l == "250 STARTTLS"),
        "{ehlo}"
    );
    s.expect("QUIT", 221);

    let out = swaks(&daemon, &["--to", "user@customer.test", "--tls"]);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {transcript}");
    assert!(
        transcript.contains("220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    let data = site.queued_data();
    assert_eq!(data.len(), 1);
    assert!(
        data[0].starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx2.isp.test (etrnq) with ESMTPS\r\n"
        ),
        "{}",
        data[0]
    );
    let log = site.log();
    assert!(log.contains("STARTTLS from [127.0.0.1]:"), "{log}");
    assert!(log.contains("TLSv1."), "{log}");
}

#[test]
fn after_the_handshake_the_session_starts_over() {
    let (_certs, lines, der) = certificate();
    let site = Site::new(&lines);
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.expect("STARTTLS", 220);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("trust the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("mx2.isp.test").expect("name");
    let client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = BufReader::new(rustls::StreamOwned::new(client, s.writer));
    let mut command = |line: &str| -> (u16, String) {
        tls.get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send over TLS");
        let mut text = String::new();
        loop {
            let mut reply = String::new();
            assert!(tls.read_line(&mut reply).expect("read over TLS") > 0);
            text.push_str(&reply);
            if reply.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        (text[..3].parse().expect("code"), text)
    };
    // Nothing said before the handshake counts: EHLO again first.
    assert_eq!(command("MAIL FROM:<alice@example.test>").0, 503);
    let (code, ehlo) = command("EHLO client.test");
    assert_eq!(code, 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(command("STARTTLS").0, 503);
    assert_eq!(command("MAIL FROM:<alice@example.test>").0, 250);
    assert_eq!(command("RCPT TO:<user@customer.test>").0, 250);
    assert_eq!(command("DATA").0, 354);
    assert_eq!(command("Subject: tls\r\n\r\nsecret\r\n.").0, 250);
    assert_eq!(command("QUIT").0, 221);
    let data = site.queued_data();
    assert_eq!(data.len(), 1);
    assert!(data[0].contains("with ESMTPS"), "{}", data[0]);
}

#[test]
fn without_a_certificate_starttls_is_not_offered() {
    let site = Site::new("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    let ehlo = s.expect("EHLO client.test", 250);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    s.expect("STARTTLS", 502);
    s.expect("QUIT", 221);
}

#[test]
fn commands_pipelined_after_starttls_are_never_run_in_clear() {
    let (_certs, lines, _) = certificate();
    let site = Site::new(&lines);
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.send(b"STARTTLS\r\nMAIL FROM:<x@y.test>\r\n");
    let mut rest = String::new();
    // The server hangs up; a reset instead of a clean close ends the read as well.
    let _ = s.reader.read_to_string(&mut rest);
    assert!(!rest.contains("2.1.0"), "{rest}");
    assert!(rest.starts_with("501 "), "{rest}");
    assert!(site.log().contains("commands sent after STARTTLS"));
}

#[test]
fn a_half_or_unreadable_tls_configuration_is_exit_78_naming_the_key() {
    let (_certs, lines, _) = certificate();
    let mut halves = lines.lines();
    let (only_cert, only_key) = (halves.next().expect("cert"), halves.next().expect("key"));
    let missing = "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"";
    // The certificate where the key should be: readable PEM, but no private key in it.
    let cert_as_key = format!(
        "{only_cert}\n{}",
        only_cert.replacen("tls_cert", "tls_key", 1)
    );
    for (extra, key) in [
        (only_cert, "tls_key"),
        (only_key, "tls_cert"),
        (missing, "tls_cert"),
        (&cert_as_key[..], "tls_key"),
    ] {
        let site = Site::new(extra);
        let out = Command::new(bin("queue-smtpd"))
            .arg("-C")
            .arg(site.config())
            .args(["--listen", "127.0.0.1:1"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(78), "{extra}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("etrnq.toml: {key}: ")),
            "{extra}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
