//! ODMR (RFC 2645) with queue-smtpd as the provider: held mail for two customer domains, and
//! the customer's side played by a scripted client that turns into the scripted SMTP server
//! after ATRN.
//!
//! Every test asserts where each message ends: at the site (byte for byte, once) or still in
//! the provider's queue.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::daemon::{free_port, poll_until};
use support::odmr::{ALICE, ALICE_SECRET, Provider, connect, finished, login, turn_around, unix};
use support::site::{SENDER, Site};
use support::smtp::{End, Script, Server};

#[test]
fn atrn_delivers_exactly_the_accounts_mail_byte_for_byte() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let first = provider.hold("one@alice.test", "first");
    let second = provider.hold("two@alice.test", "second");
    let bobs = provider.hold("b@bob.test", "for bob");
    let data = [provider.site.data(&first), provider.site.data(&second)];

    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    let (code, text) = s.command("ATRN");
    assert_eq!(code, 250, "{text}");
    assert!(text.contains("OK now reversing the connection"), "{text}");
    let site = Server::over(turn_around(s), Script::named("site.test"));
    finished(&site);

    let messages = site.messages();
    assert_eq!(messages.len(), 2, "{:?}", site.commands());
    for (received, stored) in messages.iter().zip(&data) {
        assert_eq!(unix(&received.data()), unix(stored));
        assert!(
            received.mail.starts_with(&format!("<{SENDER}>")),
            "{received:?}"
        );
    }
    assert_eq!(messages[0].recipients, ["one@alice.test"]);
    assert_eq!(messages[1].recipients, ["two@alice.test"]);
    let commands = site.commands();
    assert!(commands[0].starts_with("EHLO isp.test"), "{commands:?}");
    assert_eq!(commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(provider.site.ids(), [bobs], "bob's mail stays");
    let log = provider.site.log();
    assert!(log.contains("ODMR ATRN from"), "{log}");
    assert!(log.contains("user=alice: alice.test (2 messages)"), "{log}");
    assert!(log.contains("sent=2 deferred=0"), "{log}");
}

#[test]
fn refusals_on_the_odmr_service() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let bobs = provider.hold("b@bob.test", "for bob");

    let mut s = connect(&daemon);
    assert_eq!(s.command("AUTH CRAM-MD5").0, 503, "AUTH before EHLO");
    s.expect("EHLO site.test", 250);
    assert_eq!(s.command("ATRN").0, 530, "ATRN before AUTH");
    let (code, text) = s.command("MAIL FROM:<a@site.test>");
    assert_eq!(code, 502, "no mail is taken on the ODMR service: {text}");
    assert_eq!(s.command("ETRN bob.test").0, 502);
    assert_eq!(
        s.command("AUTH PLAIN AGFsaWNlAHg=").0,
        538,
        "PLAIN in clear"
    );
    assert_eq!(s.command("AUTH DIGEST-MD5").0, 504);
    s.expect("QUIT", 221);

    // A wrong secret: 535, logged, nothing delivered.
    let mut s = connect(&daemon);
    let (code, text) = login(&mut s, ALICE, "guessed");
    assert_eq!(code, 535, "{text}");
    assert_eq!(s.command("ATRN").0, 530, "still not authenticated");
    s.expect("QUIT", 221);
    assert!(
        provider.site.log().contains("ODMR AUTH from"),
        "{}",
        provider.site.log()
    );
    assert!(provider.site.log().contains("failed: user=alice"));

    // Bob's domain asked for by alice: refused and logged; nothing for alice: 453.
    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    let (code, text) = s.command("ATRN bob.test");
    assert_eq!(code, 450, "{text}");
    assert!(text.contains("4.7.1"), "{text}");
    let (code, text) = s.command("ATRN alice.test,bob.test");
    assert_eq!(code, 450, "one foreign domain refuses the command: {text}");
    let (code, text) = s.command("ATRN alice.test");
    assert_eq!(code, 453, "{text}");
    assert_eq!(s.command("ATRN not..a.domain").0, 501);
    s.expect("QUIT", 221);
    let log = provider.site.log();
    assert!(
        log.contains("user=alice: refused bob.test: not a domain of this account"),
        "{log}"
    );
    assert_eq!(provider.site.ids(), [bobs]);
}

#[test]
fn an_accounts_file_others_can_read_stops_the_server_at_start() {
    let provider = Provider::new(free_port(), "");
    std::fs::set_permissions(&provider.accounts, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_port().to_string();
    let output = provider
        .site
        .command("queue-smtpd")
        .args(["--odmr-listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("odmr_accounts"), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");

    let site = Site::new("");
    let output = site
        .command("queue-smtpd")
        .args(["--odmr-listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "no odmr_accounts: {output:?}"
    );
}

#[test]
fn a_connection_cut_mid_turnaround_loses_nothing() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let ids: Vec<String> = (0..3)
        .map(|i| provider.hold(&format!("u{i}@alice.test"), &format!("cut {i}")))
        .collect();

    // The site takes the first message and vanishes while the second's data ends.
    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    assert_eq!(s.command("ATRN alice.test").0, 250);
    let script = Script::named("site.test").end_of_data("Subject: cut 1", End::Cut);
    let site = Server::over(turn_around(s), script);
    finished(&site);
    let first = site.messages();
    assert_eq!(first.len(), 1);
    poll_until("the provider to record the turnaround", || {
        provider.site.log().contains("ODMR disconnect from")
            && provider.site.log().contains("deferred=")
    });
    assert_eq!(provider.site.ids().len(), 2, "the rest stays queued");
    assert!(!provider.site.ids().contains(&ids[0]));

    // The next ATRN delivers the rest, once each.
    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    assert_eq!(s.command("ATRN").0, 250);
    let site = Server::over(turn_around(s), Script::named("site.test"));
    finished(&site);
    let mut subjects: Vec<String> = first
        .iter()
        .chain(&site.messages())
        .filter_map(|m| m.header("Subject"))
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["cut 0", "cut 1", "cut 2"]);
    poll_until("the queue to empty", || provider.site.ids().is_empty());
}

#[test]
fn a_site_that_defers_keeps_the_mail_queued_at_the_provider() {
    let provider = Provider::new(free_port(), "");
    let daemon = provider.start();
    let id = provider.hold("u@alice.test", "deferred");
    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    assert_eq!(s.command("ATRN").0, 250);
    let script = Script::named("site.test").end_of_data(
        "Subject: deferred",
        End::Reply("451 4.3.0 local delivery failed".into()),
    );
    let site = Server::over(turn_around(s), script);
    finished(&site);
    assert!(site.messages().is_empty());
    poll_until("the deferral to be recorded", || {
        provider
            .site
            .entry(&id)
            .is_some_and(|entry| entry.to_string().contains("local delivery failed"))
    });
    assert_eq!(provider.site.ids(), [id]);
}

#[test]
fn an_odmr_session_and_a_concurrent_queue_run_deliver_each_message_once() {
    // queue-run -R delivers to the site's MX (a sink standing in for it); ODMR takes the rest.
    let mx = Server::start(Script::named("mx.site.test").per_message(Duration::from_millis(20)));
    let provider = Provider::new(mx.port(), "");
    let daemon = provider.start();
    let count = 40;
    for i in 0..count {
        provider.hold(&format!("u{i}@alice.test"), &format!("race {i}"));
    }
    let mut s = connect(&daemon);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    let run = provider
        .site
        .std_command("queue-run")
        .args(["-R", "alice.test"])
        .spawn()
        .unwrap();
    assert_eq!(s.command("ATRN").0, 250);
    let site = Server::over(
        turn_around(s),
        Script::named("site.test").per_message(Duration::from_millis(20)),
    );
    let output = support::daemon::bounded(run, "queue-run -R");
    assert!(
        output.status.code() == Some(0) || output.status.code() == Some(75),
        "{output:?}"
    );
    finished(&site);
    let mut subjects: Vec<String> = site
        .messages()
        .iter()
        .chain(&mx.messages())
        .filter_map(|m| m.header("Subject"))
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = (0..count).map(|i| format!("race {i}")).collect();
    expected.sort();
    assert_eq!(subjects, expected, "each message exactly once");
    poll_until("the queue to empty", || provider.site.ids().is_empty());
}

#[test]
fn inetd_mode_serves_odmr_as_the_systemd_socket_starts_it() {
    let provider = Provider::new(free_port(), "");
    let id = provider.hold("one@alice.test", "inetd");
    let data = provider.site.data(&id);
    // queue-smtpd --inetd --odmr on the server end of a loopback connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let output = server.try_clone().unwrap();
    let child = provider
        .site
        .std_command("queue-smtpd")
        .args(["--inetd", "--odmr"])
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            server,
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            output,
        )))
        .spawn()
        .unwrap();
    let mut s = support::daemon::Session::from_stream(client);
    assert_eq!(s.reply().0, 220);
    assert_eq!(login(&mut s, ALICE, ALICE_SECRET).0, 235);
    assert_eq!(s.command("ATRN").0, 250);
    let site = Server::over(turn_around(s), Script::named("site.test"));
    finished(&site);
    let ended = support::daemon::bounded(child, "queue-smtpd --inetd --odmr");
    assert!(ended.status.success(), "{ended:?}");
    let messages = site.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(unix(&messages[0].data()), unix(&data));
    assert!(provider.site.ids().is_empty());
}
