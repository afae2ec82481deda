//! queue-smtpd end to end: the daemon on a loopback port and real clients.
//!
//! The clients are swaks, etrn-send and raw sessions; the scripted SMTP server stands in for the
//! customer's site, and the queue is inspected with mailq. Every test has its own queue,
//! configuration, log and ports, and stops what it starts.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::daemon::*;
use support::site::{Site, bin};
use support::smtp::{Received, Script, Server};

#[test]
fn swaks_mail_for_a_relay_domain_is_queued_with_one_received_line() {
    let site = Site::relay("");
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
    assert!(site.queue_dir().join("env").join(&ids[0]).is_file());
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
    let site = Site::relay("");
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
    assert!(site.log().contains("Relay access denied"));
}

#[test]
fn a_message_over_the_size_limit_is_refused_and_nothing_is_queued() {
    let site = Site::relay("max_message_size = 2000");
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
    let site = Site::relay("");
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
    let site = Site::relay("max_hops = 5");
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
    let site = Site::relay("");
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
    let site = Site::relay("");
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
    let site = Site::relay("");
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
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    for _ in 0..10 {
        s.expect("ETRN customer.test", 251);
    }
    let text = s.expect("ETRN customer.test", 458);
    assert!(text.contains("more than 10 ETRN"), "{text}");
}

#[test]
fn after_253_the_held_mail_reaches_the_site_and_the_queue_empties() {
    let sink = Server::start(Script::default());
    let site = Site::relay_to("", sink.port());
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
    for message in sink.messages().iter().map(Received::text) {
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
fn an_etrn_during_a_run_schedules_exactly_one_more_for_the_late_mail() {
    // The site holds the first run at its greeting until the test lets it go on.
    let sink = Server::gated(Script::default());
    let site = Site::relay_to("", sink.port());
    let daemon = site.start(&[]);
    queue_over_smtp(&daemon, "user@customer.test", 2);
    let mut s = daemon.session();
    s.hello();
    let first = s.expect("ETRN customer.test", 253);
    assert!(
        first.ends_with("2 pending messages for node customer.test started"),
        "{first}"
    );
    // The run has planned its work and connected: what arrives now is late for it.
    poll_until("the first run to reach the site", || {
        sink.connections() == 1
    });
    queue_over_smtp(&daemon, "late@customer.test", 1);
    let second = s.expect("ETRN customer.test", 253);
    assert!(
        second.ends_with("delivery already in progress, one more run follows it"),
        "{second}"
    );
    for _ in 0..3 {
        let again = s.expect("ETRN customer.test", 253);
        assert!(again.ends_with("one more run already scheduled"), "{again}");
    }
    s.expect("QUIT", 221);
    sink.open();
    poll_until("all mail, the late one too, to reach the site", || {
        sink.messages().len() == 3 && site.queued_ids().is_empty()
    });
    assert!(
        sink.messages()
            .iter()
            .any(|m| m.recipients.iter().any(|r| r == "late@customer.test"))
    );
    poll_until("both runs to end", || {
        site.log().matches(") ended: exit status: 0").count() == 2
    });
    let log = site.log();
    assert_eq!(log.matches("etrn: started").count(), 2, "{log}");
    assert!(log.contains("one more is scheduled to follow it"), "{log}");
    assert_eq!(log.matches("nothing more to do").count(), 3, "{log}");
}

#[test]
fn fifty_clients_at_once_lose_nothing() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let port = daemon.port;
    let clients: Vec<JoinHandle<Vec<String>>> = (0..50)
        .map(|client| {
            std::thread::spawn(move || {
                // Each from an address of its own: the daemon takes ten at once from one.
                let from = Ipv4Addr::new(127, 0, 1, client as u8 + 1);
                let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
                let mut s = Session::from_stream(connect_from(from, to));
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
    let site = Site::relay("");
    let output = assert_cmd::Command::cargo_bin("queue-smtpd")
        .expect("queue-smtpd")
        .arg("-C")
        .arg(site.config_path())
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
    let site = Site::relay("");
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
    let site = Site::relay("bogus_key = 1");
    let out = site
        .std_command("queue-smtpd")
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let site = Site::relay("");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = busy.local_addr().expect("addr").to_string();
    let out = site
        .std_command("queue-smtpd")
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
    let site = Site::relay(&lines);
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
    let site = Site::relay(&lines);
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
    let site = Site::relay("");
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
    let site = Site::relay(&lines);
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
        let site = Site::relay(extra);
        let out = site
            .std_command("queue-smtpd")
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

#[test]
fn each_source_routing_form_is_554_and_nothing_is_queued() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.expect("MAIL FROM:<alice@example.test>", 250);
    for routed in [
        "user%evil.example@customer.test",
        "\"user@evil.example\"@customer.test",
        "evil.example!user@customer.test",
        "\"user%evil.example\"@held.test",
    ] {
        let text = s.expect(&format!("RCPT TO:<{routed}>"), 554);
        assert!(
            text.starts_with(&format!("554 5.7.1 <{routed}>: Relay access denied")),
            "{text}"
        );
    }
    s.expect("DATA", 503);
    s.expect("QUIT", 221);
    // swaks takes the same way in, and gets the same answer.
    let out = swaks(&daemon, &["--to", "user%evil.example@customer.test"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("554 5.7.1"),
        "{out:?}"
    );
    assert_eq!(site.queue_files(), 0);
    assert_eq!(site.log().matches("routes to another host").count(), 5);
}

#[test]
fn allow_untrusted_routing_takes_them_for_a_site_that_needs_them() {
    let site = Site::relay("allow_untrusted_routing = true");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.message("user%other.test@customer.test", b"Subject: routed\r\n\r\nx");
    assert_eq!(code, 250, "{text}");
    // The domain rule still holds: the local part never makes a domain acceptable.
    s.expect("MAIL FROM:<alice@example.test>", 250);
    s.expect("RCPT TO:<user%customer.test@elsewhere.test>", 554);
    s.expect("QUIT", 221);
    assert_eq!(site.queued_ids().len(), 1);
}

#[test]
fn relay_recipients_from_a_list_refuse_unknown_users_at_rcpt() {
    let site = Site::relay("[relay_recipients]\n\"customer.test\" = [\"alice\", \"Bob\"]");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.expect("MAIL FROM:<sender@example.test>", 250);
    let text = s.expect("RCPT TO:<mallory@customer.test>", 550);
    assert_eq!(
        text,
        "550 5.1.1 <mallory@customer.test>: Recipient address rejected: User unknown in relay recipient table"
    );
    s.expect("RCPT TO:<ALICE@customer.test>", 250);
    s.expect("RCPT TO:<bob@Customer.Test>", 250);
    s.expect("RCPT TO:<postmaster@customer.test>", 250);
    // A domain without a list takes every user, as before.
    s.expect("RCPT TO:<anyone@held.test>", 250);
    s.expect("DATA", 354);
    s.send(b"Subject: users\r\n\r\nhello\r\n.\r\n");
    assert_eq!(s.reply().0, 250);
    s.expect("QUIT", 221);
    let ids = site.queued_ids();
    assert_eq!(ids.len(), 1);
    let out = site
        .std_command("mailq")
        .arg("--json")
        .output()
        .expect("mailq");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("mallory"), "{listing}");
    assert_eq!(listing.matches("\"address\"").count(), 4, "{listing}");
}

#[test]
fn relay_recipients_from_a_file_are_read_again_when_it_changes() {
    let users = tempfile::tempdir().expect("temp dir");
    let file = users.path().join("customer.test.users");
    std::fs::write(&file, "# the site's users\nalice\nbob   # Bob Smith\n").expect("users file");
    let site = Site::relay(&format!(
        "[relay_recipients]\n\"customer.test\" = \"{}\"",
        file.display()
    ));
    let daemon = site.start(&[]);
    let rcpt = |to: &str| -> u16 {
        let mut s = daemon.session();
        s.hello();
        s.expect("MAIL FROM:<sender@example.test>", 250);
        let (code, _) = s.command(&format!("RCPT TO:<{to}>"));
        s.expect("QUIT", 221);
        code
    };
    assert_eq!(rcpt("alice@customer.test"), 250);
    assert_eq!(rcpt("carol@customer.test"), 550);

    // Written elsewhere and renamed into place, as the man page says.
    let next = users.path().join("next");
    std::fs::write(&next, "alice\ncarol\n").expect("new users file");
    std::fs::rename(&next, &file).expect("rename");
    poll_until("carol to be known", || rcpt("carol@customer.test") == 250);
    assert_eq!(rcpt("bob@customer.test"), 550);

    // A file that cannot be read is a temporary failure, never a wrong 550.
    std::fs::remove_file(&file).expect("remove");
    assert_eq!(rcpt("alice@customer.test"), 451);
    assert_eq!(rcpt("nobody@customer.test"), 451);
    assert_eq!(site.queue_files(), 0);
    assert!(site.log().contains("relay_recipients for customer.test"));

    // A file that is unusable at start is a configuration error.
    let out = site
        .std_command("queue-smtpd")
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("relay_recipients.customer.test: "),
        "{stderr}"
    );
}

#[test]
fn relay_recipients_for_a_domain_not_taken_is_a_configuration_error() {
    let site = Site::relay("[relay_recipients]\n\"elsewhere.test\" = [\"alice\"]");
    let out = site
        .std_command("queue-smtpd")
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("relay_recipients.elsewhere.test: not one of relay_domains or hold_domains")
    );
}

#[test]
fn postmaster_without_a_domain_is_accepted_and_routed() {
    // By default: postmaster at this host's first name.
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.message("Postmaster", b"Subject: to the postmaster\r\n\r\nhello");
    assert_eq!(code, 250, "{text}");
    s.expect("QUIT", 221);
    let data = site.queued_data();
    assert!(
        data[0].contains("for <postmaster@mx2.isp.test>;"),
        "{}",
        data[0]
    );
    assert!(
        site.log()
            .contains("<postmaster> is <postmaster@mx2.isp.test>")
    );
    drop(daemon);

    // A configured address, delivered by the normal route like any other mail.
    let sink = Server::start(Script::default());
    let site = Site::relay_to("postmaster = \"hostmaster@customer.test\"", sink.port());
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let (code, text) = s.message("postmaster", b"Subject: abuse report\r\n\r\nhello");
    assert_eq!(code, 250, "{text}");
    s.expect("QUIT", 221);
    let out = site
        .std_command("queue-run")
        .args(["-R", "customer.test"])
        .output()
        .expect("queue-run");
    assert!(out.status.success(), "{out:?}");
    let delivered: Vec<String> = sink.messages().iter().map(Received::text).collect();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].contains("RCPT TO:<hostmaster@customer.test>"),
        "{}",
        delivered[0]
    );
    assert!(site.queued_ids().is_empty());
}

#[test]
fn the_per_client_limit_gives_421_while_others_are_served() {
    let site = Site::relay("");
    let daemon = site.start(&["--max-client-connections", "2"]);
    let crowd = Ipv4Addr::new(127, 0, 0, 7);
    let mut held: Vec<Session> = (0..2).map(|_| daemon.session_from(crowd)).collect();
    for session in &mut held {
        assert_eq!(session.reply().0, 220);
    }
    let mut third = daemon.session_from(crowd);
    let (code, text) = third.reply();
    assert_eq!(code, 421, "{text}");
    assert!(
        text.contains("too many connections from [127.0.0.7]"),
        "{text}"
    );
    // Another address is served while the crowd holds its two.
    let mut other = daemon.session_from(Ipv4Addr::new(127, 0, 0, 8));
    other.hello();
    let (code, text) = other.message("user@customer.test", b"Subject: served\r\n\r\nyes");
    assert_eq!(code, 250, "{text}");
    other.expect("QUIT", 221);
    // The crowd's own sessions go on, and a slot freed is a slot to have again.
    held[0].expect("EHLO crowd.test", 250);
    held[0].expect("QUIT", 221);
    drop(held.remove(0));
    poll_until("the slot to be free", || {
        let mut again = daemon.session_from(crowd);
        again.reply().0 == 220
    });
    assert_eq!(site.queued_ids().len(), 1);
    assert!(
        site.log()
            .contains("too many connections from [127.0.0.7] (2)")
    );
}

/// Sends `bytes` a byte at a time, `pause` apart, until the daemon answers: its reply, and how
/// many bytes had gone out by then.
fn reply_to_trickle(s: &mut Session, bytes: Vec<u8>, pause: Duration) -> ((u16, String), usize) {
    let mut stream = s.writer.try_clone().expect("clone");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            for byte in bytes {
                if stop.load(std::sync::atomic::Ordering::SeqCst)
                    || stream.write_all(&[byte]).is_err()
                {
                    break;
                }
                sent += 1;
                std::thread::sleep(pause);
            }
            sent
        })
    };
    let reply = s.reply();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    (reply, trickler.join().expect("trickler"))
}

#[test]
fn a_command_line_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    let site = Site::relay("");
    // Every read gets its byte well within the limit; only the whole line is late.
    let daemon = site.start(&["--timeout", "2"]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    let line = format!("NOOP {}\r\n", "x".repeat(100)).into_bytes();
    let length = line.len();
    let ((code, text), sent) = reply_to_trickle(&mut s, line, Duration::from_millis(400));
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.2"), "{text}");
    assert!(
        sent < length,
        "cut off before the line was whole: {sent} of {length}"
    );
    poll_until("the disconnect to be logged", || {
        site.log().contains("(timeout after")
    });
}

#[test]
fn data_slower_than_the_minimum_rate_is_cut_off_and_nothing_is_queued() {
    let site = Site::relay("");
    let daemon = site.start(&["--data-timeout", "2", "--min-data-rate", "100"]);
    let mut s = daemon.session();
    s.hello();
    s.expect("MAIL FROM:<alice@example.test>", 250);
    s.expect("RCPT TO:<user@customer.test>", 250);
    s.expect("DATA", 354);
    let body = format!("Subject: slow\r\n\r\n{}\r\n.\r\n", "y".repeat(200)).into_bytes();
    let length = body.len();
    let ((code, text), sent) = reply_to_trickle(&mut s, body, Duration::from_millis(300));
    assert_eq!(code, 421, "{text}");
    assert!(
        sent < length,
        "cut off before the data ended: {sent} of {length}"
    );
    assert_eq!(site.queue_files(), 0);
}

#[test]
fn data_that_keeps_the_rate_may_take_longer_than_the_window() {
    let site = Site::relay("");
    let daemon = site.start(&["--data-timeout", "5", "--min-data-rate", "100"]);
    let mut s = daemon.session();
    s.hello();
    s.expect("MAIL FROM:<alice@example.test>", 250);
    s.expect("RCPT TO:<user@customer.test>", 250);
    s.expect("DATA", 354);
    s.send(b"Subject: steady\r\n\r\n");
    // 16 blocks of 2000 octets, half a second apart: 8 s in all, 4000 octets a second.
    let block = format!("{}\r\n", "z".repeat(998)).repeat(2);
    for _ in 0..16 {
        s.send(block.as_bytes());
        std::thread::sleep(Duration::from_millis(500));
    }
    s.send(b".\r\n");
    let (code, text) = s.reply();
    assert_eq!(code, 250, "{text}");
    assert_eq!(site.queued_ids().len(), 1);
}

#[test]
fn a_header_section_over_100_kib_is_552_and_the_session_stays_in_step() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let mut flood = "a: b\r\n".repeat(20_000);
    flood.push_str("\r\nbody");
    let (code, text) = s.message("user@customer.test", flood.as_bytes());
    assert_eq!(code, 552, "{text}");
    assert!(
        text.contains("header section exceeds fixed maximum of 102400"),
        "{text}"
    );
    let mut fits = "a: b\r\n".repeat(16_000);
    fits.push_str("\r\nbody");
    let (code, text) = s.message("user@customer.test", fits.as_bytes());
    assert_eq!(code, 250, "{text}");
    s.expect("QUIT", 221);
    assert_eq!(site.queued_ids().len(), 1);
    assert_eq!(site.queue_files(), 2);
}

#[test]
fn below_the_free_space_reserve_mail_gets_452_4_3_1() {
    // More than any test machine has free: the reserve is never met.
    let site = Site::relay("queue_min_free = \"4000000G\"");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    let text = s.expect("MAIL FROM:<alice@example.test>", 452);
    assert_eq!(text, "452 4.3.1 Error: insufficient system storage");
    s.expect("RCPT TO:<user@customer.test>", 503);
    // ETRN still works: delivering is what frees space.
    s.expect("ETRN customer.test", 251);
    s.expect("QUIT", 221);
    assert_eq!(site.queue_files(), 0);
    assert!(site.log().contains("below queue_min_free"));
}

/// Runs `script` with `sh -c` in a private mount namespace (the caller's mounts are never
/// touched), or says why it cannot: needs root and unshare(1). Under CI a missing capability
/// is a failure, not a skip.
fn in_mount_namespace() -> Option<Command> {
    let usable = nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["-m", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !usable {
        support::skip("a private mount namespace needs root and unshare -m");
        return None;
    }
    let mut command = Command::new("unshare");
    command.args(["-m", "--propagation", "private", "sh", "-c"]);
    Some(command)
}

#[test]
fn a_message_that_would_eat_into_the_reserve_is_refused_before_its_commit() {
    // The queue on a 4 MiB tmpfs of its own with a 2 MiB reserve: MAIL finds room, but a 3 MB
    // message would leave less than the reserve.
    let Some(mut unshare) = in_mount_namespace() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).expect("mount point");
    let port = free_port();
    let config = dir.path().join("etrnq.toml");
    std::fs::write(
        &config,
        format!(
            "queue_dir = \"{}/q\"\nhostnames = [\"mx2.isp.test\"]\nrelay_domains = [\"customer.test\"]\n\
             log = \"{}/mail.log\"\nqueue_min_free = \"2M\"\n",
            mount.display(),
            dir.path().display()
        ),
    )
    .expect("config");
    let script = r#"mount -t tmpfs -o size=4m none "$1" || exit 99; exec "$2" -C "$3" --listen "127.0.0.1:$4""#;
    let mut child = unshare
        .arg(script)
        .arg("sh")
        .arg(&mount)
        .arg(bin("queue-smtpd"))
        .arg(&config)
        .arg(port.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let pid = child.id();
    let daemon = Daemon { child: None, port };
    poll_until("queue-smtpd in its namespace to listen", || {
        assert!(
            child.try_wait().expect("state").is_none(),
            "exited at start"
        );
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut s = daemon.session();
    s.hello();
    let big = format!("{}\r\n", "x".repeat(998)).repeat(3000);
    let (code, text) = s.message(
        "user@customer.test",
        format!("Subject: big\r\n\r\n{big}").as_bytes(),
    );
    assert_eq!(code, 452, "{text}");
    assert!(text.starts_with("452 4.3.1"), "{text}");
    let (code, text) = s.message("user@customer.test", b"Subject: small\r\n\r\nfits");
    assert_eq!(code, 250, "{text}");
    s.expect("QUIT", 221);
    // What is in the queue, seen from inside the namespace: the small message and nothing else.
    let files = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "find"])
        .arg(mount.join("q"))
        .args(["-type", "f", "-path", "*/data/*"])
        .output()
        .expect("nsenter");
    let listed = String::from_utf8_lossy(&files.stdout);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let tmp = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "find"])
        .arg(mount.join("q/tmp"))
        .args(["-type", "f"])
        .output()
        .expect("nsenter");
    assert!(tmp.stdout.is_empty(), "left in tmp/: {:?}", tmp.stdout);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(
        std::fs::read_dir(&mount)
            .expect("mount point")
            .next()
            .is_none()
    );
}

/// One `queue-smtpd --inetd` on the server end of a loopback connection, as inetd or systemd
/// would start it; the client end is returned as a session.
fn inetd_session(site: &Site) -> (std::process::Child, Session) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let output = server.try_clone().expect("clone");
    let child = site
        .std_command("queue-smtpd")
        .arg("--inetd")
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            server,
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            output,
        )))
        .spawn()
        .expect("start queue-smtpd --inetd");
    (child, Session::from_stream(client))
}

fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    let mut status = None;
    poll_until("the inetd session to exit", || {
        status = child.try_wait().expect("child state");
        status.is_some()
    });
    status.expect("exited")
}

#[test]
fn in_inetd_mode_the_session_ends_with_its_client_and_its_run_goes_on() {
    let sink = Server::gated(Script::default());
    let site = Site::relay_to("", sink.port());
    site.submit("user@customer.test", "first");
    site.submit("user@customer.test", "second");

    let (mut first, mut s) = inetd_session(&site);
    s.hello();
    let text = s.expect("ETRN customer.test", 253);
    assert!(
        text.ends_with("2 pending messages for node customer.test started"),
        "{text}"
    );
    // The client goes away without QUIT; the session's process ends at once, although the run
    // it asked for is held at the site's greeting.
    drop(s);
    assert!(exit_of(&mut first).success());
    poll_until("the run to reach the site", || sink.connections() == 1);
    assert!(sink.messages().is_empty());

    // Mail that arrives now is late for that run; another session's ETRN asks for one more,
    // and a third's finds it already asked for.
    site.submit("user@customer.test", "late");
    let (mut second, mut s) = inetd_session(&site);
    s.hello();
    let text = s.expect("ETRN customer.test", 253);
    assert!(text.ends_with("one more run follows it"), "{text}");
    s.expect("QUIT", 221);
    assert!(exit_of(&mut second).success());
    poll_until("the second request to wait for the first run", || {
        site.log()
            .contains("etrn: waiting for the run of customer.test to end")
    });
    let (mut third, mut s) = inetd_session(&site);
    s.hello();
    let text = s.expect("ETRN customer.test", 253);
    assert!(text.ends_with("one more run already scheduled"), "{text}");
    s.expect("QUIT", 221);
    assert!(exit_of(&mut third).success());

    sink.open();
    poll_until("all three, the late one too, to reach the site", || {
        sink.messages().len() == 3 && site.queued_ids().is_empty()
    });
    poll_until("both runs to end", || {
        site.log().matches(") ended: exit status: 0").count() == 2
    });
    let log = site.log();
    assert_eq!(log.matches("etrn: started").count(), 2, "{log}");
}

/// `mx-check --probe --rcpt postmaster` against queue-smtpd as the domain's MX (the test zone
/// sends `ok.probe.example` to 127.0.0.11): the exit status and the JSON report.
fn probe_of(site: &Site) -> (i32, serde_json::Value) {
    let daemon = Daemon::start_at(site, Ipv4Addr::new(127, 0, 0, 11), &[]);
    let dns = support::dns::DnsServer::start();
    let out = site
        .std_command("mx-check")
        .args([
            "--nameserver",
            &dns.addr_text,
            "--json",
            "--probe",
            "--port",
        ])
        .arg(daemon.port.to_string())
        .args(["--rcpt", "postmaster", "ok.probe.example"])
        .output()
        .expect("mx-check");
    let report = serde_json::from_slice(&out.stdout).expect("JSON report");
    (out.status.code().expect("exit status"), report)
}

#[test]
fn mx_check_warns_of_a_backup_mx_that_takes_any_local_part() {
    let domains = "hostnames = [\"mx2.isp.test\"]\nrelay_domains = [\"ok.probe.example\"]";
    let (code, report) = probe_of(&Site::configured(domains));
    assert_eq!(code, 1, "{report}");
    let probe = &report["exchangers"][0]["addresses"][0]["probe"];
    assert_eq!(probe["rcpt_accepted"], true, "{probe}");
    assert_eq!(probe["unknown_rcpt_accepted"], true, "{probe}");
    let unknown = probe["unknown_rcpt"].as_str().expect("unknown_rcpt");
    assert!(
        unknown.starts_with("no-such-user-") && unknown.ends_with("@ok.probe.example"),
        "{unknown}"
    );
    let findings = report["findings"].to_string();
    assert!(findings.contains("accepts any local part"), "{findings}");
    assert!(findings.contains("backscatter"), "{findings}");

    // With the site's users listed, the unknown one is refused and all is well.
    let (code, report) = probe_of(&Site::configured(&format!(
        "{domains}\n[relay_recipients]\n\"ok.probe.example\" = [\"alice\"]"
    )));
    assert_eq!(code, 0, "{report}");
    let probe = &report["exchangers"][0]["addresses"][0]["probe"];
    assert_eq!(probe["unknown_rcpt_accepted"], false, "{probe}");
    assert!(
        probe["unknown_rcpt_reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("550 5.1.1")),
        "{probe}"
    );
}

#[test]
fn etrn_has_an_allowance_per_client_address_across_its_sessions() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let greedy = Ipv4Addr::new(127, 0, 0, 9);
    let mut first = daemon.session_from(greedy);
    first.hello();
    for _ in 0..8 {
        first.expect("ETRN customer.test", 251);
    }
    first.expect("QUIT", 221);
    // A new session from the same address has what is left: two, and one more every 6 s.
    let mut second = daemon.session_from(greedy);
    second.hello();
    let (_, refused) = (0..6)
        .map(|_| second.command("ETRN customer.test"))
        .find(|(code, _)| *code == 458)
        .expect("458 once the allowance is spent");
    assert!(
        refused.contains("too many ETRN requests from [127.0.0.9]"),
        "{refused}"
    );
    second.expect("QUIT", 221);
    // Another address has its own allowance.
    let mut other = daemon.session_from(Ipv4Addr::new(127, 0, 0, 10));
    other.hello();
    other.expect("ETRN customer.test", 251);
    other.expect("QUIT", 221);
}
