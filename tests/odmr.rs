//! ODMR (RFC 2645) end to end: queue-smtpd as the provider, held mail for two customer
//! domains, and the customer's side played by a scripted client that turns into the scripted
//! SMTP server after ATRN, by odmr-fetch, and by fetchmail.
//!
//! Every test asserts where each message ends: at the site (byte for byte, once) or still in
//! the provider's queue.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use support::daemon::{Daemon, Session, free_port, poll_until};
use support::site::{SENDER, Site, message};
use support::smtp::{End, Script, Server};

const ALICE: &str = "alice";
const ALICE_SECRET: &str = "wonder-land-7";
const BOB: &str = "bob";
const BOB_SECRET: &str = "builder-42";

/// A provider holding mail for alice.test (alice's) and bob.test (bob's), both routed to
/// `route_port` for plain queue runs; `extra` is added to the configuration.
struct Provider {
    site: Site,
    accounts: PathBuf,
}

impl Provider {
    fn new(route_port: u16, extra: &str) -> Provider {
        let site = Site::new("");
        let accounts = site.file(
            "odmr-accounts",
            &format!(
                "# user secret domains\n{ALICE} {ALICE_SECRET} alice.test\n{BOB} {BOB_SECRET} bob.test,bob.example.test\n"
            ),
        );
        std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
        site.configure(&format!(
            "hostnames = [\"isp.test\"]\n\
             hold_domains = [\"alice.test\", \"bob.test\", \"bob.example.test\"]\n\
             relay_domains = [\"alice.test\", \"bob.test\"]\n\
             odmr_accounts = {:?}\n{extra}\n\
             [routes]\n\
             \"alice.test\" = \"[127.0.0.1]:{route_port}\"\n\
             \"bob.test\" = \"[127.0.0.1]:{route_port}\"\n",
            accounts.display().to_string()
        ));
        Provider { site, accounts }
    }

    /// queue-smtpd with the ODMR service alone, on a free port.
    fn start(&self) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Daemon::start(&self.site, &["--odmr-listen", &listen], &[], port)
    }

    /// Queues one message to `to`; its id.
    fn hold(&self, to: &str, subject: &str) -> String {
        self.site.enqueue(
            &["-f", SENDER, to],
            &message(subject, &format!("held for {to}\n.leading dot\n")),
        )
    }
}

/// Connects to the ODMR service and reads the greeting.
fn connect(daemon: &Daemon) -> Session {
    let mut s = Session::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, daemon.port)));
    assert_eq!(s.reply().0, 220);
    s
}

/// EHLO and AUTH CRAM-MD5; the reply to the answer.
fn login(s: &mut Session, user: &str, secret: &str) -> (u16, String) {
    let ehlo = s.expect("EHLO site.test", 250);
    assert!(ehlo.contains("AUTH CRAM-MD5"), "{ehlo}");
    assert!(ehlo.lines().any(|l| l.ends_with("ATRN")), "{ehlo}");
    let (code, challenge) = s.command("AUTH CRAM-MD5");
    assert_eq!(code, 334, "{challenge}");
    let challenge = BASE64
        .decode(challenge[4..].trim())
        .expect("base64 challenge");
    let answer = etrnq::smtp::cram_md5_response(user, secret, &challenge);
    s.command(&BASE64.encode(answer))
}

/// After `250` to ATRN: the connection, with nothing read ahead, to serve SMTP on.
fn turn_around(s: Session) -> TcpStream {
    assert!(
        s.reader.buffer().is_empty(),
        "bytes read past the ATRN reply"
    );
    s.reader.into_inner()
}

/// Waits until the scripted site's one session is over.
fn finished(site: &Server) {
    poll_until("the provider to end the turned-around session", || {
        site.open_sessions() == 0
    });
}

/// The data as the site stored it, with the line ends of the queue file.
fn unix(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .replace("\r\n", "\n")
        .into_bytes()
}

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

/// A certificate and key for the provider's STARTTLS, as configuration lines.
fn certificate(site: &Site) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["isp.test".to_string()]).expect("certificate");
    let cert = site.file("cert.pem", &certified.cert.pem());
    let key = site.file("key.pem", &certified.signing_key.serialize_pem());
    format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// odmr-fetch against the provider as `user`, with `secret` in a password file, and `args`.
fn odmr_fetch(
    provider: &Provider,
    daemon: &Daemon,
    user: &str,
    secret: &str,
    args: &[&str],
) -> std::process::Output {
    let secret_file = provider.site.file("secret", &format!("{secret}\n"));
    provider
        .site
        .command("odmr-fetch")
        .current_dir(provider.site.dir.path())
        .env_remove("ODMR_PASSWORD")
        .arg(format!("127.0.0.1:{}", daemon.port))
        .args([
            "--helo",
            "site.test",
            "--auth-user",
            user,
            "--auth-password-file",
        ])
        .arg(&secret_file)
        .args(args)
        .output()
        .expect("odmr-fetch runs")
}

/// A provider that offers STARTTLS on its ODMR service.
fn tls_provider(route_port: u16) -> Provider {
    let provider = Provider::new(route_port, "");
    let lines = certificate(&provider.site);
    let text = std::fs::read_to_string(provider.site.config_path()).unwrap();
    let (top, routes) = text.split_once("[routes]").unwrap();
    std::fs::write(
        provider.site.config_path(),
        format!("{top}{lines}\n[routes]{routes}"),
    )
    .unwrap();
    provider
}

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
