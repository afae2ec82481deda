//! ODMR fixtures: a provider (queue-smtpd with the ODMR service) holding mail for two customer
//! accounts, and the customer's side of the conversation up to ATRN.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::daemon::{Daemon, Session, free_port, poll_until};
use super::site::{SENDER, Site, message};
use super::smtp::Server;

pub const ALICE: &str = "alice";
pub const ALICE_SECRET: &str = "wonder-land-7";
pub const BOB: &str = "bob";
pub const BOB_SECRET: &str = "builder-42";

/// A provider holding mail for alice.test (alice's) and bob.test (bob's), both routed to
/// `route_port` for plain queue runs; `extra` is added to the configuration.
pub struct Provider {
    pub site: Site,
    pub accounts: PathBuf,
}

impl Provider {
    pub fn new(route_port: u16, extra: &str) -> Provider {
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
    pub fn start(&self) -> Daemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        Daemon::start(&self.site, &["--odmr-listen", &listen], &[], port)
    }

    /// Queues one message to `to`; its id.
    pub fn hold(&self, to: &str, subject: &str) -> String {
        self.site.enqueue(
            &["-f", SENDER, to],
            &message(subject, &format!("held for {to}\n.leading dot\n")),
        )
    }
}

/// Connects to the ODMR service and reads the greeting.
pub fn connect(daemon: &Daemon) -> Session {
    let mut s = Session::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, daemon.port)));
    assert_eq!(s.reply().0, 220);
    s
}

/// EHLO and AUTH CRAM-MD5; the reply to the answer.
pub fn login(s: &mut Session, user: &str, secret: &str) -> (u16, String) {
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
pub fn turn_around(s: Session) -> TcpStream {
    assert!(
        s.reader.buffer().is_empty(),
        "bytes read past the ATRN reply"
    );
    s.reader.into_inner()
}

/// Waits until the scripted site's one session is over.
pub fn finished(site: &Server) {
    poll_until("the provider to end the turned-around session", || {
        site.open_sessions() == 0
    });
}

/// The data as the site stored it, with the line ends of the queue file.
pub fn unix(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .replace("\r\n", "\n")
        .into_bytes()
}

/// A certificate and key for the provider's STARTTLS, as configuration lines.
pub fn certificate(site: &Site) -> String {
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
pub fn odmr_fetch(
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
pub fn tls_provider(route_port: u16) -> Provider {
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
