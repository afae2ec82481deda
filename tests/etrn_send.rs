//! etrn-send end to end: the real binary against servers on loopback that the tests start.
//!
//! The scripted SMTP server (`support::smtp`) gives every reply and failure; a private Postfix
//! instance is a real ETRN server. Conversations that differ only in what the server says and
//! how etrn-send ends are one table.

mod support;

use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use support::site::Site;
use support::smtp::{Script, Server, self_signed_tls};
use tempfile::TempDir;

/// No test may run longer than this, whatever the program under test does.
const LIMIT: Duration = Duration::from_secs(60);

/// A site named site.example.test and branch.example.test, so that no test depends on
/// /etc/etrnq.
fn site() -> Site {
    Site::with_text("hostnames = [\"site.example.test\", \"branch.example.test\"]\n")
}

fn server_arg(server: &Server) -> String {
    format!("127.0.0.1:{}", server.port())
}

fn etrn_lines(server: &Server) -> Vec<String> {
    server
        .seen()
        .into_iter()
        .filter(|line| line.starts_with("ETRN"))
        .collect()
}

#[test]
fn every_success_code_exits_0_with_one_line_per_domain() {
    let server = Server::start(
        Script::default()
            .etrn(
                "a.example.test",
                "250 2.0.0 Queuing for node a.example.test started",
            )
            .etrn(
                "b.example.test",
                "251 OK, no messages waiting for node b.example.test",
            )
            .etrn(
                "@c.example.test",
                "252 OK, pending messages for node c.example.test started",
            )
            .etrn(
                "#mqueue",
                "253 OK, 14 pending messages for queue mqueue started",
            ),
    );
    let site = site();
    site.command("etrn-send")
        .args([&server_arg(&server), "a.example.test", "b.example.test"])
        .args(["@c.example.test", "#mqueue"])
        .assert()
        .code(0)
        .stderr("")
        .stdout(
            "a.example.test 250 2.0.0 Queuing for node a.example.test started\n\
             b.example.test 251 OK, no messages waiting for node b.example.test\n\
             @c.example.test 252 OK, pending messages for node c.example.test started\n\
             #mqueue 253 OK, 14 pending messages for queue mqueue started\n",
        );
    let seen = server.seen();
    assert_eq!(
        etrn_lines(&server),
        [
            "ETRN a.example.test",
            "ETRN b.example.test",
            "ETRN @c.example.test",
            "ETRN #mqueue"
        ]
    );
    assert!(seen[0].starts_with("EHLO "), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn each_failure_code_has_its_exit_status() {
    let cases = [
        ("458 Unable to queue messages for node x.example.test", 75),
        ("459 <x.example.test>: service unavailable", 77),
        ("500 Syntax: ETRN domain", 76),
        ("501 Error: invalid parameter syntax", 76),
        ("502 5.7.0 Sorry, we do not allow this operation", 76),
        ("504 Unrecognized node", 76),
    ];
    let site = site();
    for (reply, status) in cases {
        let server = Server::start(Script::default().etrn("x.example.test", reply));
        site.command("etrn-send")
            .args([&server_arg(&server), "x.example.test"])
            .assert()
            .code(status)
            .stdout(format!("x.example.test {reply}\n"));
        assert_eq!(etrn_lines(&server), ["ETRN x.example.test"], "{reply}");
    }
}

/// One conversation: what the server says, what etrn-send asks for, and how it ends.
struct Conversation {
    what: &'static str,
    script: Script,
    /// Options before the server, and the domains after it.
    flags: &'static [&'static str],
    domains: &'static [&'static str],
    code: i32,
    /// Standard output whole, and a piece of standard error ("" for any).
    stdout: &'static str,
    stderr: &'static str,
    /// The ETRN lines the server got.
    etrn: &'static [&'static str],
}

fn conversations() -> Vec<Conversation> {
    vec![
        Conversation {
            what: "the worst outcome decides and every domain is reported",
            script: Script::default()
                .etrn("held.example.test", "458 Unable to queue messages")
                .etrn(
                    "other.example.test",
                    "459 <other.example.test>: service unavailable",
                ),
            flags: &[],
            domains: &["ok.example.test", "held.example.test", "other.example.test"],
            code: 77,
            stdout: "ok.example.test 250 2.0.0 Queuing started\n\
                     held.example.test 458 Unable to queue messages\n\
                     other.example.test 459 <other.example.test>: service unavailable\n",
            stderr: "",
            etrn: &[
                "ETRN ok.example.test",
                "ETRN held.example.test",
                "ETRN other.example.test",
            ],
        },
        Conversation {
            what: "a 421 to ETRN ends the session and says so",
            script: Script::default().etrn("b.example.test", "421 4.3.0 shutting down"),
            flags: &[],
            domains: &["a.example.test", "b.example.test", "c.example.test"],
            code: 75,
            stdout: "a.example.test 250 2.0.0 Queuing started\n\
                     b.example.test 421 4.3.0 shutting down\n",
            stderr: "server closed the session: 421 4.3.0 shutting down",
            etrn: &["ETRN a.example.test", "ETRN b.example.test"],
        },
        Conversation {
            what: "multi-line replies are read whole",
            script: Script::default().etrn(
                "m.example.test",
                "250-2.0.0 Queuing for node m.example.test started\n250 2.0.0 3 messages waiting",
            ),
            flags: &[],
            domains: &["m.example.test", "n.example.test"],
            code: 0,
            stdout: "m.example.test 250 2.0.0 Queuing for node m.example.test started 2.0.0 3 messages waiting\n\
                     n.example.test 250 2.0.0 Queuing started\n",
            stderr: "",
            etrn: &["ETRN m.example.test", "ETRN n.example.test"],
        },
        Conversation {
            what: "a 5xx greeting is a protocol failure",
            script: Script::default().greeting(Some("554 5.3.2 no service here")),
            flags: &[],
            domains: &["x.example.test"],
            code: 76,
            stdout: "",
            stderr: "554 5.3.2 no service here",
            etrn: &[],
        },
        // From ETRN on, each byte of a reply comes 300 ms after the last: well within the
        // two-second limit every time, the whole reply in about nine seconds. The limit bounds
        // the reply, not each read, so the session ends without an answer.
        Conversation {
            what: "a trickling server is cut off when the step's limit is spent",
            script: Script::default().trickle("ETRN", Duration::from_millis(300)),
            flags: &["--timeout", "2"],
            domains: &["customer.example.test"],
            code: 75,
            stdout: "",
            stderr: "timed out waiting for the reply to ETRN",
            etrn: &["ETRN customer.example.test"],
        },
    ]
}

#[test]
fn each_conversation_ends_with_its_status_and_report() {
    let site = site();
    for case in conversations() {
        let server = Server::start(case.script);
        site.command("etrn-send")
            .args(case.flags)
            .arg(server_arg(&server))
            .args(case.domains)
            .assert()
            .code(case.code)
            .stdout(case.stdout)
            .stderr(predicate::str::contains(case.stderr));
        assert_eq!(etrn_lines(&server), case.etrn, "{}", case.what);
    }
}

#[test]
fn a_server_without_etrn_is_a_protocol_failure_unless_forced() {
    let script = Script::default().keywords(&["PIPELINING", "8BITMIME"]);
    let server = Server::start(script.clone());
    let site = site();
    site.command("etrn-send")
        .args([&server_arg(&server), "x.example.test"])
        .assert()
        .code(76)
        .stdout("")
        .stderr(
            predicate::str::contains("does not advertise ETRN")
                .and(predicate::str::contains("--force")),
        );
    assert!(etrn_lines(&server).is_empty());
    assert_eq!(server.seen().last().map(String::as_str), Some("QUIT"));

    let server = Server::start(script);
    site.command("etrn-send")
        .args(["--force", &server_arg(&server), "x.example.test"])
        .assert()
        .code(0)
        .stdout("x.example.test 250 2.0.0 Queuing started\n");
    assert_eq!(etrn_lines(&server), ["ETRN x.example.test"]);
}

#[test]
fn a_server_refusing_ehlo_gets_helo_and_still_etrn() {
    let server =
        Server::start(Script::default().refuse_ehlo("502 5.5.1 Error: command not implemented"));
    let site = site();
    site.command("etrn-send")
        .args(["-v", "--helo", "client.example.test"])
        .args([&server_arg(&server), "x.example.test"])
        .assert()
        .code(0)
        .stdout("x.example.test 250 2.0.0 Queuing started\n")
        .stderr(
            predicate::str::contains(">>> HELO client.example.test")
                .and(predicate::str::contains("trying HELO"))
                .and(predicate::str::contains("trying ETRN anyway")),
        );
    assert_eq!(
        server.seen()[..3],
        [
            "EHLO client.example.test",
            "HELO client.example.test",
            "ETRN x.example.test"
        ]
    );
}

#[test]
fn a_421_greeting_is_a_temporary_failure_with_the_servers_text() {
    let server = Server::start(Script::default().greeting(Some(
        "421 4.3.2 mx.isp.test Service not available, try later",
    )));
    let site = site();
    site.command("etrn-send")
        .args([&server_arg(&server), "x.example.test"])
        .assert()
        .code(75)
        .stdout("")
        .stderr(predicate::str::contains(
            "greeting: 421 4.3.2 mx.isp.test Service not available, try later",
        ));
    assert!(server.seen().is_empty());
}

#[test]
fn a_silent_server_times_out() {
    let server = Server::start(Script::default().greeting(None));
    let site = site();
    let started = Instant::now();
    site.command("etrn-send")
        .args(["--timeout", "1", &server_arg(&server), "x.example.test"])
        .assert()
        .code(75)
        .stderr(predicate::str::contains(
            "timed out waiting for the greeting",
        ));
    // The reply names the timeout that fired; the lower bound shows it was the one asked for.
    // No upper bound: a loaded machine may be slow to start the program.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
}

#[test]
fn a_refused_connection_is_a_temporary_failure() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let site = site();
    site.command("etrn-send")
        .args([&format!("127.0.0.1:{port}"), "x.example.test"])
        .assert()
        .code(75)
        .stderr(predicate::str::contains("cannot connect"));
}

#[test]
fn port_flag_ipv6_literal_and_family() {
    let server = Server::start(Script::default());
    let site = site();
    site.command("etrn-send")
        .args([
            "-4",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "x.example.test",
        ])
        .assert()
        .code(0);
    site.command("etrn-send")
        .args([
            "-6",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "x.example.test",
        ])
        .assert()
        .code(68)
        .stderr(predicate::str::contains("no IPv6 address"));
    site.command("etrn-send")
        .args([&server_arg(&server), "-p", "1", "x.example.test"])
        .assert()
        .code(64);
    if let Ok(listener) = std::net::TcpListener::bind("[::1]:0") {
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        site.command("etrn-send")
            .args([&format!("[::1]:{port}"), "x.example.test"])
            .assert()
            .code(75)
            .stderr(predicate::str::contains(format!(
                "[::1]:{port}: cannot connect"
            )));
    }
}

#[test]
fn without_domains_the_configured_hostnames_are_asked_for() {
    let server = Server::start(Script::default());
    let site = site();
    site.command("etrn-send")
        .arg(server_arg(&server))
        .assert()
        .code(0)
        .stdout(
            "site.example.test 250 2.0.0 Queuing started\n\
             branch.example.test 250 2.0.0 Queuing started\n",
        );
    assert_eq!(
        server.seen()[0],
        "EHLO site.example.test",
        "HELO name from the configuration"
    );
    let bare = Site::with_text("");
    bare.command("etrn-send")
        .arg(server_arg(&server))
        .assert()
        .code(64)
        .stderr(predicate::str::contains("no DOMAIN given"));
}

#[test]
fn bad_arguments_exit_64_with_one_line() {
    let site = site();
    let cases: &[&[&str]] = &[
        &[],
        &["127.0.0.1", "bad domain.example"],
        &["127.0.0.1", "x.example\r\nQUIT"],
        &["127.0.0.1", "x.exa\u{7}mple"],
        &["127.0.0.1", "#"],
        &["127.0.0.1", "# q"],
        &["127.0.0.1:0", "x.example"],
        &["[::1", "x.example"],
        &["-p", "99999", "127.0.0.1", "x.example"],
        &["--timeout", "0", "127.0.0.1", "x.example"],
        &["-4", "-6", "127.0.0.1", "x.example"],
        &["--starttls=sometimes", "127.0.0.1", "x.example"],
        &["--no-such-flag", "127.0.0.1", "x.example"],
        &[
            "--auth-password-file",
            "/dev/null",
            "127.0.0.1",
            "x.example",
        ],
        &["--auth-user", "site", "127.0.0.1", "x.example"],
    ];
    for args in cases {
        let output = site.command("etrn-send").args(*args).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("etrn-send: "), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_configuration_file_exits_78() {
    let site = Site::with_text("hostnames = 1\n");
    site.command("etrn-send")
        .args(["127.0.0.1", "x.example"])
        .assert()
        .code(78)
        .stderr(predicate::str::contains("hostnames"));
}

#[test]
fn help_describes_the_program() {
    Command::cargo_bin("etrn-send")
        .expect("binary")
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("ETRN").and(predicate::str::contains("--retry-wait")));
}

#[test]
fn starttls_with_a_self_signed_certificate_needs_tls_insecure() {
    let script = Script::default().tls(self_signed_tls());
    let site = site();

    let server = Server::start(script.clone());
    site.command("etrn-send")
        .args(["--starttls", &server_arg(&server), "x.example.test"])
        .assert()
        .code(75)
        .stdout("")
        .stderr(predicate::str::contains("TLS").and(predicate::str::contains("not trusted")));
    assert!(etrn_lines(&server).is_empty());

    let server = Server::start(script.clone());
    site.command("etrn-send")
        .args(["--starttls", "--tls-insecure", "-v", &server_arg(&server)])
        .arg("x.example.test")
        .assert()
        .code(0)
        .stdout("x.example.test 250 2.0.0 Queuing started\n")
        .stderr(predicate::str::contains("TLS established"));
    let seen = server.seen();
    let tls_at = seen
        .iter()
        .position(|l| l == "-- TLS")
        .expect("STARTTLS done");
    assert_eq!(seen[tls_at - 1], "STARTTLS");
    assert!(seen[tls_at + 1].starts_with("EHLO "), "{seen:?}");
    assert_eq!(seen[tls_at + 2], "ETRN x.example.test");

    let server = Server::start(script);
    site.command("etrn-send")
        .args([
            "--starttls=opportunistic",
            &server_arg(&server),
            "x.example.test",
        ])
        .assert()
        .code(0);
    assert!(server.seen().contains(&"-- TLS".to_string()));
}

#[test]
fn starttls_required_but_not_offered_is_a_protocol_failure() {
    let server = Server::start(Script::default());
    let site = site();
    site.command("etrn-send")
        .args(["--starttls", &server_arg(&server), "x.example.test"])
        .assert()
        .code(76)
        .stderr(predicate::str::contains("does not offer STARTTLS"));
    assert!(etrn_lines(&server).is_empty());

    let server = Server::start(Script::default());
    site.command("etrn-send")
        .args([
            "--starttls=opportunistic",
            &server_arg(&server),
            "x.example.test",
        ])
        .assert()
        .code(0);
}

/// etrn-send with `flags`, authenticating as `site` with `password` from the environment, asks
/// `server` to flush x.example.test.
fn as_site(
    site: &Site,
    server: &Server,
    password: &str,
    flags: &[&str],
) -> assert_cmd::assert::Assert {
    site.command("etrn-send")
        .env("ETRN_PASSWORD", password)
        .args(flags)
        .args(["--auth-user", "site", &server_arg(server), "x.example.test"])
        .assert()
}

#[test]
fn auth_plain_with_the_password_from_a_file_or_the_environment() {
    const SECRET: &str = "s3cret-pass";
    let script = Script::default().auth("site", SECRET, "PLAIN LOGIN");
    let site = site();
    let password_file = site.file("password", &format!("{SECRET}\n"));

    let server = Server::start(script.clone());
    site.command("etrn-send")
        .args(["-v", "--auth-user", "site", "--auth-password-file"])
        .arg(&password_file)
        .args([&server_arg(&server), "x.example.test"])
        .assert()
        .code(0)
        .stdout("x.example.test 250 2.0.0 Queuing started\n")
        .stderr(
            predicate::str::contains(">>> AUTH PLAIN ****")
                .and(predicate::str::contains(SECRET).not())
                .and(predicate::str::contains("AHNpdGUA").not()),
        );
    assert!(server.seen().iter().any(|l| l.starts_with("AUTH PLAIN ")));

    let server = Server::start(script.clone());
    as_site(&site, &server, SECRET, &[]).code(0);

    let server = Server::start(script);
    as_site(&site, &server, "wrong", &[])
        .code(77)
        .stderr(predicate::str::contains("535 5.7.8"));
    assert!(etrn_lines(&server).is_empty());

    site.command("etrn-send")
        .args(["--auth-user", "site", "--auth-password-file"])
        .arg(site.dir.path().join("missing"))
        .args(["127.0.0.1", "x.example.test"])
        .assert()
        .code(66)
        .stderr(predicate::str::contains("password file"));
}

#[test]
fn auth_login_when_plain_is_not_offered() {
    const SECRET: &str = "login-pass";
    let server = Server::start(Script::default().auth("site", SECRET, "LOGIN CRAM-MD5"));
    let site = site();
    as_site(&site, &server, SECRET, &["-v"]).code(0).stderr(
        predicate::str::contains(">>> AUTH LOGIN\n")
            .and(predicate::str::contains(">>> ****\n"))
            .and(predicate::str::contains(SECRET).not()),
    );
    assert!(server.seen().contains(&"AUTH LOGIN".to_string()));

    let server = Server::start(Script::default().auth("site", SECRET, "CRAM-MD5"));
    as_site(&site, &server, SECRET, &[])
        .code(76)
        .stderr(predicate::str::contains("only PLAIN and LOGIN"));
}

#[test]
fn retry_repeats_temporary_failures_only() {
    let site = site();
    let busy = Script::default().greeting(Some("421 4.3.2 busy"));

    let server = Server::start_sequence(vec![busy.clone(), Script::default()]);
    site.command("etrn-send")
        .args(["--retry", "2", "--retry-wait", "1", &server_arg(&server)])
        .arg("x.example.test")
        .assert()
        .code(0)
        .stdout("x.example.test 250 2.0.0 Queuing started\n");
    assert_eq!(server.connections(), 2);

    let server = Server::start_sequence(vec![busy.clone(), Script::default()]);
    site.command("etrn-send")
        .args([&server_arg(&server), "x.example.test"])
        .assert()
        .code(75);
    assert_eq!(server.connections(), 1, "no retry unless asked");

    let server = Server::start(busy);
    site.command("etrn-send")
        .args(["--retry", "1", "--retry-wait", "1", &server_arg(&server)])
        .arg("x.example.test")
        .assert()
        .code(75);
    assert_eq!(server.connections(), 2, "one try and one retry");

    // 458 is asked again; the domain that already succeeded is not.
    let server = Server::start_sequence(vec![
        Script::default().etrn("b.example.test", "458 Unable to queue messages"),
        Script::default(),
    ]);
    site.command("etrn-send")
        .args(["--retry", "3", "--retry-wait", "1", &server_arg(&server)])
        .args(["a.example.test", "b.example.test"])
        .assert()
        .code(0)
        .stdout(
            "a.example.test 250 2.0.0 Queuing started\n\
             b.example.test 250 2.0.0 Queuing started\n",
        );
    assert_eq!(
        etrn_lines(&server),
        [
            "ETRN a.example.test",
            "ETRN b.example.test",
            "ETRN b.example.test"
        ]
    );

    // Permanent answers are final: no second connection.
    let server = Server::start(Script::default().etrn("x.example.test", "501 bad"));
    site.command("etrn-send")
        .args(["--retry", "3", "--retry-wait", "1", &server_arg(&server)])
        .arg("x.example.test")
        .assert()
        .code(76);
    assert_eq!(server.connections(), 1);
}

/// Runs `etrn-send` in a private mount namespace whose /etc/hosts names `mx.etrnq.test` and
/// whose resolver is 127.0.0.1 (where nothing answers), so that no name lookup leaves the
/// machine. `None` when this machine cannot make such a namespace.
fn with_loopback_resolver(site: &Site) -> Option<Command> {
    if !nix::unistd::geteuid().is_root() {
        support::skip("a resolver namespace needs root");
        return None;
    }
    let resolv = site.file(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    let hosts = site.file(
        "hosts",
        "127.0.0.1 localhost\n127.0.0.1 mx.etrnq.test\n::1 localhost\n",
    );
    let script = "mount --bind \"$1\" /etc/resolv.conf && mount --bind \"$2\" /etc/hosts \
                  && shift 2 && exec \"$@\"";
    let usable = Process::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&resolv)
        .arg(&hosts)
        .arg("true")
        .output()
        .is_ok_and(|out| out.status.success());
    if !usable {
        support::skip("unshare -m or mount --bind is not available here");
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&resolv)
        .arg(&hosts)
        .arg(assert_cmd::cargo::cargo_bin("etrn-send"))
        .arg("-C")
        .arg(site.config_path())
        .env_remove("ETRN_PASSWORD")
        .env_remove("ETRNQ_CONFIG")
        .timeout(LIMIT);
    Some(cmd)
}

#[test]
fn an_unresolvable_server_exits_68_quickly() {
    let site = site();
    let Some(mut cmd) = with_loopback_resolver(&site) else {
        return;
    };
    let started = Instant::now();
    cmd.args(["no-such-host.invalid", "x.example.test"])
        .assert()
        .code(68)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "etrn-send: no-such-host.invalid: host name lookup failed",
        ));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_server_name_is_resolved() {
    let site = site();
    let Some(mut cmd) = with_loopback_resolver(&site) else {
        return;
    };
    let server = Server::start(Script::default());
    cmd.args([
        "-v",
        &format!("mx.etrnq.test:{}", server.port()),
        "x.example.test",
    ])
    .assert()
    .code(0)
    .stderr(predicate::str::contains(format!(
        "connecting to mx.etrnq.test[127.0.0.1]:{}",
        server.port()
    )));
}

/// A private Postfix instance: its own configuration, queue and data directories under a
/// temporary directory, smtpd on 127.0.0.1 at a free port. Stopped when dropped.
struct Postfix {
    dir: TempDir,
    port: u16,
}

impl Postfix {
    fn start(relay_domains: &str) -> Result<Postfix, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path();
        // Postfix opens its data files as the mail owner, which must be able to reach them.
        set_mode(root, 0o755)?;
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir(root.join(sub)).map_err(|e| e.to_string())?;
        }
        let status = Process::new("chown")
            .arg("postfix")
            .arg(root.join("data"))
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("chown postfix failed".to_string());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let root_text = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root_text}/queue\n\
             data_directory = {root_text}/data\n\
             meta_directory = /etc/postfix\n\
             maillog_file = {root_text}/maillog\n\
             maillog_file_prefixes = {root_text}\n\
             myhostname = mx.etrnq.test\n\
             mydomain = etrnq.test\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relay_domains = {relay_domains}\n\
             fast_flush_domains = $relay_domains\n\
             smtpd_peername_lookup = no\n\
             smtp_dns_support_level = disabled\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             biff = no\n"
        );
        std::fs::write(root.join("conf/main.cf"), main_cf).map_err(|e| e.to_string())?;
        let dist = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .map_err(|e| format!("/usr/share/postfix/master.cf.dist: {e}"))?;
        let master_cf: String = dist
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with("smtp ") && fields.get(1) == Some(&"inet") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd\n")
                } else if fields.len() >= 8 && !line.starts_with([' ', '#']) && fields[4] == "y" {
                    // No chroot: the private queue directory holds no copy of /etc.
                    let mut fields = fields;
                    fields[4] = "n";
                    format!("{}\n", fields.join(" "))
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(root.join("conf/master.cf"), master_cf).map_err(|e| e.to_string())?;
        let postfix = Postfix { dir, port };
        let output = postfix.control("start")?;
        if !output.status.success() {
            return Err(format!("postfix start failed: {}", postfix.log_with(&[])));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("smtpd did not listen: {}", postfix.log_with(&[])));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(postfix)
    }

    fn control(&self, action: &str) -> Result<std::process::Output, String> {
        Process::new("postfix")
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg(action)
            .output()
            .map_err(|e| format!("postfix {action}: {e}"))
    }

    /// Postfix's log once it holds every one of `wanted` (smtpd logs a session after it
    /// ends, so the test may get there first), or as it is after ten seconds.
    fn log_with(&self, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default();
            if wanted.iter().all(|w| log.contains(w)) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.control("stop");
        // The master removes its pid file as it exits; wait for that so the directory can go.
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

#[test]
fn postfix_as_the_etrn_server() {
    if !nix::unistd::geteuid().is_root() {
        support::skip("a private Postfix instance needs root");
        return;
    }
    if !Path::new("/usr/sbin/postfix").exists() {
        support::skip("postfix is not installed (contrib/run-tests.sh installs it)");
        return;
    }
    let postfix = match Postfix::start("customer.example.test") {
        Ok(postfix) => postfix,
        Err(reason) => panic!("cannot start a private Postfix: {reason}"),
    };
    let server = format!("127.0.0.1:{}", postfix.port);
    let site = site();
    site.command("etrn-send")
        .args([
            "-v",
            &server,
            "customer.example.test",
            "@customer.example.test",
        ])
        .assert()
        .code(0)
        .stdout(
            "customer.example.test 250 Queuing started\n\
             @customer.example.test 250 Queuing started\n",
        )
        .stderr(predicate::str::contains("server advertises ETRN"));
    site.command("etrn-send")
        .args([&server, "customer.example.test", "unknown.example.test"])
        .assert()
        .code(77)
        .stdout(
            "customer.example.test 250 Queuing started\n\
             unknown.example.test 459 <unknown.example.test>: service unavailable\n",
        );
    // Postfix's own account of the two sessions: both ETRNs taken, then one of two refused.
    let log = postfix.log_with(&[" etrn=2 ", " etrn=1/2 "]);
    assert!(log.contains(" etrn=2 "), "{log}");
    assert!(log.contains(" etrn=1/2 "), "{log}");
}
