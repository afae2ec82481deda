//! odmr-fetch end to end, and fetchmail as an ODMR client: queue-smtpd as the provider of two
//! customer domains, a scripted server standing in for the site's MTA.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::daemon::{free_port, poll_until};
use support::odmr::{ALICE, ALICE_SECRET, Provider, odmr_fetch, tls_provider, unix};
use support::smtp::{End, Script, Server};

#[test]
fn odmr_fetch_takes_the_accounts_mail_over_tls_to_the_local_server() {
    let provider = tls_provider(free_port());
    let daemon = provider.start();
    let first = provider.hold("one@alice.test", "first");
    let second = provider.hold("two@alice.test", "second");
    let bobs = provider.hold("b@bob.test", "for bob");
    let data = [provider.site.data(&first), provider.site.data(&second)];
    let mta = Server::start(Script::named("mx.site.test"));
    let deliver_to = format!("127.0.0.1:{}", mta.port());
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--tls-insecure", "--deliver-to", &deliver_to, "-v"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("2 delivered, 0 left"),
        "{output:?}"
    );
    assert!(stderr.contains("TLS established"), "{stderr}");
    assert!(stderr.contains(">>> ATRN"), "{stderr}");
    assert!(!stderr.contains(ALICE_SECRET), "{stderr}");
    let messages = mta.messages();
    assert_eq!(messages.len(), 2);
    for (received, stored) in messages.iter().zip(&data) {
        assert_eq!(unix(&received.data()), unix(stored));
    }
    assert_eq!(provider.site.ids(), [bobs], "bob's mail stays");

    // Nothing more waits: 453, exit 0.
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--tls-insecure", "--deliver-to", &deliver_to],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("no mail waiting"));
    assert_eq!(mta.message_count(), 2);
}

#[test]
fn odmr_fetch_refusals_exit_77_and_deliver_nothing() {
    let provider = tls_provider(free_port());
    let daemon = provider.start();
    let alices = provider.hold("one@alice.test", "first");
    let bobs = provider.hold("b@bob.test", "for bob");
    let mta = Server::start(Script::named("mx.site.test"));
    let deliver_to = format!("127.0.0.1:{}", mta.port());

    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        "not-the-secret",
        &["--tls-insecure", "--deliver-to", &deliver_to],
    );
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("535"),
        "{output:?}"
    );

    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--tls-insecure", "--deliver-to", &deliver_to, "bob.test"],
    );
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("450"),
        "{output:?}"
    );
    assert!(provider.site.log().contains("refused bob.test"));

    // The certificate is not trusted without --tls-insecure: nothing is sent.
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--deliver-to", &deliver_to],
    );
    assert_eq!(output.status.code(), Some(75), "{output:?}");

    assert_eq!(mta.message_count(), 0);
    let mut ids = provider.site.ids();
    ids.sort();
    let mut expected = vec![alices, bobs];
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn a_local_mta_that_defers_keeps_the_message_at_the_provider() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let id = provider.hold("one@alice.test", "deferred");
    let mta = Server::start(Script::named("mx.site.test").end_of_data(
        "Subject: deferred",
        End::Reply("451 4.3.0 disk full".into()),
    ));
    let deliver_to = format!("127.0.0.1:{}", mta.port());
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--no-starttls", "--deliver-to", &deliver_to],
    );
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("0 delivered, 1 left"),
        "{output:?}"
    );
    assert_eq!(mta.message_count(), 0);
    poll_until("the deferral to be recorded", || {
        provider
            .site
            .entry(&id)
            .is_some_and(|entry| entry.to_string().contains("disk full"))
    });
    assert_eq!(provider.site.ids(), [id]);

    // Without TLS on offer, the default (STARTTLS required) sends nothing.
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--deliver-to", &deliver_to],
    );
    assert_eq!(output.status.code(), Some(76), "{output:?}");
}

#[test]
fn odmr_fetch_hands_messages_to_a_command_without_a_shell() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    provider.hold("one@alice.test", "to the mda");
    let mbox = provider.site.dir.path().join("mbox");
    let mda = format!("tee -a {} %T", mbox.display());
    let output = odmr_fetch(
        &provider,
        &daemon,
        ALICE,
        ALICE_SECRET,
        &["--no-starttls", "--mda", &mda],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let delivered = std::fs::read_to_string(&mbox).unwrap();
    assert!(delivered.contains("Subject: to the mda"), "{delivered}");
    // %T became the recipient: tee wrote a file of that name in the working directory too.
    let copy = std::fs::read_to_string(provider.site.dir.path().join("one@alice.test")).unwrap();
    assert_eq!(copy, delivered);
    assert!(provider.site.ids().is_empty());
}

#[test]
fn fetchmail_as_odmr_client_gets_the_held_mail_to_its_smtp_host() {
    if std::process::Command::new("fetchmail")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "fetchmail is not installed"
        );
        eprintln!("skipped: fetchmail is not installed");
        return;
    }
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let first = provider.hold("one@alice.test", "first");
    provider.hold("b@bob.test", "for bob");
    let data = provider.site.data(&first);
    let mta = Server::start(Script::named("mx.site.test"));
    let home = provider.site.dir.path().join("fetchmail");
    std::fs::create_dir(&home).unwrap();
    let rc = home.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 protocol ODMR port {} auth cram-md5\n  user \"{ALICE}\" password \"{ALICE_SECRET}\"\n  fetchdomains alice.test\n  smtphost \"127.0.0.1/{}\"\n",
            daemon.port,
            mta.port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let child = std::process::Command::new("fetchmail")
        .args(["--nosyslog", "--nodetach", "-v", "-f"])
        .arg(&rc)
        .env("FETCHMAILHOME", &home)
        .env("HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = support::daemon::bounded(child, "fetchmail");
    poll_until("the message to reach the sink", || {
        mta.message_count() == 1 && mta.open_sessions() == 0
    });
    let received = &mta.messages()[0];
    assert_eq!(unix(&received.data()), unix(&data), "{output:?}");
    assert_eq!(received.recipients, ["one@alice.test"]);
    poll_until("the provider to remove the message", || {
        provider.site.ids().len() == 1
    });
    assert!(
        provider
            .site
            .log()
            .contains("user=alice mechanism=CRAM-MD5"),
        "{}",
        provider.site.log()
    );
}

#[test]
fn odmr_fetch_puts_messages_into_the_sites_own_queue() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    provider.hold("one@alice.test", "into the queue");
    let site = support::site::Site::new("");
    let secret = site.file("secret", &format!("{ALICE_SECRET}\n"));
    let output = site
        .command("odmr-fetch")
        .env_remove("ODMR_PASSWORD")
        .arg(format!("127.0.0.1:{}", daemon.port))
        .args([
            "--no-starttls",
            "--queue",
            "--auth-user",
            ALICE,
            "--auth-password-file",
        ])
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let queued = site.mailq();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let text = queued[0].to_string();
    assert!(text.contains("one@alice.test"), "{text}");
    assert!(text.contains(support::site::SENDER), "{text}");
    assert!(site.queued_data()[0].contains("Subject: into the queue"));
    assert!(provider.site.ids().is_empty());
}

#[test]
fn a_provider_that_vanishes_inside_the_data_hands_nothing_to_the_site() {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A provider that turns around, starts a message and hangs up inside its data.
    let provider = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut s = support::daemon::Session::from_stream(stream);
        let mut line = String::new();
        let mut read = |s: &mut support::daemon::Session| {
            line.clear();
            s.reader.read_line(&mut line).unwrap();
            line.clone()
        };
        s.send(b"220 isp.test ESMTP\r\n");
        assert!(read(&mut s).starts_with("EHLO"));
        s.send(b"250-isp.test\r\n250-AUTH CRAM-MD5\r\n250 ATRN\r\n");
        assert!(read(&mut s).starts_with("AUTH CRAM-MD5"));
        s.send(b"334 PDEuMkBpc3AudGVzdD4=\r\n");
        read(&mut s);
        s.send(b"235 2.7.0 ok\r\n");
        assert!(read(&mut s).starts_with("ATRN"));
        s.send(b"250 OK now reversing the connection\r\n");
        assert_eq!(s.reply().0, 220);
        s.expect("EHLO isp.test", 250);
        s.expect("MAIL FROM:<a@sender.test>", 250);
        s.expect("RCPT TO:<u@alice.test>", 250);
        s.expect("DATA", 354);
        s.send(b"Subject: cut\r\n\r\nthe first half");
    });
    let mta = Server::start(Script::named("mx.site.test"));
    let site = support::site::Site::new("");
    let output = site
        .command("odmr-fetch")
        .env("ODMR_PASSWORD", "secret")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--no-starttls", "--auth-user", ALICE, "--deliver-to"])
        .arg(format!("127.0.0.1:{}", mta.port()))
        .output()
        .unwrap();
    provider.join().unwrap();
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("before QUIT"),
        "{output:?}"
    );
    assert_eq!(mta.connections(), 0, "nothing was handed to the site");
}
