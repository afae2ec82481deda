//! etrn-send --mx end to end: one command brings a site's mail from every backup MX host.
//!
//! Three queue-smtpd instances stand for an ISP's backup MX hosts at one preference, each on its
//! own address of 127.0.36.0/24 and one shared port; the scripted SMTP server is the site; a DNS
//! server started by the test publishes `backups.etrn.example`'s MX records (the site at 10, the
//! three hosts at 20). Mail is spread over the three queues, and one `etrn-send --mx` must bring
//! every message to the site exactly once.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use assert_cmd::Command;

use support::daemon::{Daemon, Session, poll_until, port_free_on};
use support::dns::DnsServer;
use support::site::Site;
use support::smtp::{Received, Script, Server};

const DOMAIN: &str = "backups.etrn.example";
const BACKUPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 36, 11),
    Ipv4Addr::new(127, 0, 36, 12),
    Ipv4Addr::new(127, 0, 36, 13),
];
const NAMES: [&str; 3] = ["b1.etrn.example", "b2.etrn.example", "b3.etrn.example"];

/// One backup MX host: its queue and its daemon, holding `DOMAIN`'s mail for the site at
/// `[127.0.0.1]:site_port`.
struct Backup {
    site: Site,
    _daemon: Daemon,
    addr: SocketAddrV4,
}

impl Backup {
    fn start(name: &str, addr: SocketAddrV4, site_port: u16) -> Backup {
        let site = Site::named(
            name,
            &format!(
                "relay_domains = [{DOMAIN:?}]\n\
                 hold_domains = [{DOMAIN:?}]\n\
                 [routes]\n\
                 {DOMAIN:?} = \"[127.0.0.1]:{site_port}\"\n"
            ),
        );
        let daemon = Daemon::start_on(&site, addr, &[]);
        Backup {
            site,
            _daemon: daemon,
            addr,
        }
    }

    /// Queues `count` messages for the site, each with a subject naming this host.
    fn hold(&self, count: usize) -> Vec<String> {
        let mut session = Session::connect(SocketAddr::V4(self.addr));
        session.hello();
        let subjects: Vec<String> = (0..count)
            .map(|i| format!("held at {} number {i}", self.addr.ip()))
            .collect();
        for subject in &subjects {
            let body = format!("Subject: {subject}\r\n\r\nfor the site\r\n");
            let (code, text) = session.message(&format!("user@{DOMAIN}"), body.as_bytes());
            assert_eq!(code, 250, "{text}");
        }
        session.expect("QUIT", 221);
        subjects
    }
}

/// The site, the DNS server and a backup MX host on each of `up` (indexes into [`BACKUPS`]),
/// all on one port that the hosts that are down do not listen on either.
struct Isp {
    site: Server,
    /// The configuration etrn-send runs with, as the site.
    customer: Site,
    dns: DnsServer,
    backups: Vec<Backup>,
    port: u16,
}

impl Isp {
    fn start(up: &[usize]) -> Isp {
        let site = Server::start(Script::named("mail.site.example"));
        let dns = DnsServer::start();
        let port = port_free_on(&BACKUPS);
        let backups = up
            .iter()
            .map(|&i| Backup::start(NAMES[i], SocketAddrV4::new(BACKUPS[i], port), site.port()))
            .collect();
        Isp {
            site,
            customer: Site::named("mail.site.example", ""),
            dns,
            backups,
            port,
        }
    }

    /// `etrn-send --mx` run as the site.
    fn etrn_send(&self, args: &[&str]) -> Command {
        let mut cmd = self.customer.command("etrn-send");
        cmd.args(["--mx", "--nameserver", &self.dns.addr_text])
            .args(["-p", &self.port.to_string()])
            .args(args);
        cmd
    }

    fn queued(&self) -> usize {
        self.backups.iter().map(|b| b.site.queued_ids().len()).sum()
    }
}

fn subjects(messages: &[Received]) -> Vec<String> {
    let mut subjects: Vec<String> = messages
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    subjects.sort();
    subjects
}

fn lines(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn one_etrn_send_brings_the_mail_of_every_backup_mx_exactly_once() {
    let isp = Isp::start(&[0, 1, 2]);
    let mut held: Vec<String> = Vec::new();
    for (backup, count) in isp.backups.iter().zip([2, 3, 1]) {
        held.extend(backup.hold(count));
    }
    held.sort();
    assert_eq!(isp.queued(), 6);

    let out = isp.etrn_send(&[DOMAIN]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        [
            format!(
                "b1.etrn.example {DOMAIN} 253 2.0.0 OK, 2 pending messages for node {DOMAIN} started"
            ),
            format!(
                "b2.etrn.example {DOMAIN} 253 2.0.0 OK, 3 pending messages for node {DOMAIN} started"
            ),
            format!(
                "b3.etrn.example {DOMAIN} 253 2.0.0 OK, 1 pending messages for node {DOMAIN} started"
            ),
        ]
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    poll_until("every held message to reach the site", || {
        isp.queued() == 0 && isp.site.messages().len() >= 6
    });
    assert_eq!(subjects(&isp.site.messages()), held);
    // The site's own MX (preference 10) was never asked: only the site's sink took connections,
    // and those came from the three runs.
    for backup in &isp.backups {
        let log = backup.site.log();
        assert_eq!(log.matches("etrn: started").count(), 1, "{log}");
    }
}

#[test]
fn a_host_that_is_down_is_reported_alone_and_this_hosts_names_are_never_asked() {
    let isp = Isp::start(&[0, 1]);
    isp.backups[0].hold(1);
    isp.backups[1].hold(2);
    let out = isp.etrn_send(&[DOMAIN]).output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let stdout = lines(&out.stdout);
    assert_eq!(stdout.len(), 2, "{stdout:?}");
    assert!(stdout[0].starts_with(&format!("b1.etrn.example {DOMAIN} 253 ")));
    assert!(stdout[1].starts_with(&format!("b2.etrn.example {DOMAIN} 253 ")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("etrn-send: b3.etrn.example: "),
        "{stderr}"
    );
    poll_until("the two live hosts' mail to reach the site", || {
        isp.queued() == 0 && isp.site.messages().len() >= 3
    });
    assert_eq!(isp.site.messages().len(), 3);

    // This host's own names are never asked: as b3, the site asks b1 and b2 only.
    let as_b3 = Site::named("b3.etrn.example", "");
    let out = as_b3
        .command("etrn-send")
        .args(["--mx", "--nameserver", &isp.dns.addr_text])
        .args(["-p", &isp.port.to_string(), DOMAIN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(lines(&out.stdout).len(), 2, "{out:?}");
}

#[test]
fn a_backup_without_an_address_is_reported_and_the_others_are_asked() {
    let isp = Isp::start(&[0]);
    isp.backups[0].hold(1);
    let out = isp
        .etrn_send(&["ghostly.etrn.example", DOMAIN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(68), "{out:?}");
    assert_eq!(
        lines(&out.stdout),
        [format!(
            "b1.etrn.example {DOMAIN} 253 2.0.0 OK, 1 pending messages for node {DOMAIN} started"
        )]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("etrn-send: ghost.etrn.example: "),
        "{stderr}"
    );
    poll_until("the held message to reach the site", || {
        isp.queued() == 0 && !isp.site.messages().is_empty()
    });
}

#[test]
fn domains_without_backups_and_bad_arguments_are_refused_with_one_line() {
    let isp = Isp::start(&[]);
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["lonely.etrn.example"],
            68,
            "etrn-send: lonely.etrn.example has no backup MX: every MX host has preference 10 or is this host\n",
        ),
        (
            &["nullmx.example"],
            68,
            "etrn-send: nullmx.example publishes a null MX: it accepts no mail\n",
        ),
        (
            &["no-such-domain.example"],
            68,
            "etrn-send: looking up the MX records of no-such-domain.example",
        ),
        (
            &["127.0.0.1"],
            64,
            "etrn-send: --mx needs a domain, not an address\n",
        ),
        (
            &["backups.etrn.example:25"],
            64,
            "etrn-send: with --mx, give the port with -p\n",
        ),
    ];
    for (args, code, stderr) in cases {
        let out = isp.etrn_send(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.starts_with(stderr), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let site = Site::new("");
    site.command("etrn-send")
        .args(["--nameserver", "127.0.0.1", "127.0.0.1", "x.example"])
        .assert()
        .code(64);
}
