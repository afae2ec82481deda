//! mx-check end to end: the real binary against a DNS server and SMTP servers the test starts.
//!
//! Every run names the test's name server and its own configuration file, so the machine's
//! resolver and /etc/etrnq are never read. Each kind of MX trouble in the test zones is a row of
//! one table, checked in the text report and in JSON; the probes meet scripted servers, several
//! on one port at different loopback addresses.

mod support;

use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

use support::dns::{DnsServer, SilentDns};
use support::site::Site;
use support::smtp::{Script, Server};
use support::tls;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs mx-check with the given configuration text and arguments.
fn mx_check_with(config: &str, args: &[&str]) -> Run {
    let site = Site::with_text(config);
    let output = site
        .command("mx-check")
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("mx-check runs");
    Run {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn mx_check(dns: &DnsServer, args: &[&str]) -> Run {
    let mut all = vec!["--nameserver", &dns.addr_text];
    all.extend_from_slice(args);
    mx_check_with("", &all)
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn messages(value: &Value) -> Vec<(String, String)> {
    value["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap_or_default().to_string(),
                f["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn has_finding(value: &Value, severity: &str, text: &str) -> bool {
    messages(value)
        .iter()
        .any(|(s, m)| s == severity && m.contains(text))
}

#[test]
fn mx_10_20_20_listed_by_preference_with_equal_group() {
    let dns = DnsServer::start();
    let run = mx_check(&dns, &["customer.example"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with(
            "MX OK - customer.example: 3 MX hosts in 2 preference groups, 4 addresses\n"
        ),
        "{out}"
    );
    let order: Vec<usize> = [
        "preference 10\n  mx.customer.example\n",
        "    127.0.0.2  localhost\n",
        "    ::1        localhost\n",
        "preference 20 (2 hosts, tried in random order)\n  mx2.isp.example\n    192.0.2.3  mx2.isp.example\n",
        "  mx3.isp.example\n    192.0.2.4  (PTR NXDOMAIN)\n",
    ]
    .iter()
    .map(|piece| out.find(piece).unwrap_or_else(|| panic!("{piece:?} missing in\n{out}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(!out.contains('\x1b'), "colour without a terminal");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn json_output_follows_the_schema() {
    let dns = DnsServer::start();
    let run = mx_check(&dns, &["--json", "customer.example"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v = json(&run);
    assert_eq!(v["schema"], 1);
    assert_eq!(v["status"], "OK");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["domain"], "customer.example");
    assert_eq!(v["routing"], "mx");
    assert_eq!(v["nameservers"][0], dns.addr_text.as_str());
    let hosts: Vec<(u64, &str)> = v["exchangers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["preference"].as_u64().unwrap(),
                e["host"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            (10, "mx.customer.example"),
            (20, "mx2.isp.example"),
            (20, "mx3.isp.example")
        ]
    );
    let first = &v["exchangers"][0]["addresses"];
    assert_eq!(first[0]["address"], "127.0.0.2");
    assert_eq!(first[0]["reverse"][0], "localhost");
    assert_eq!(first[1]["address"], "::1");
    assert_eq!(
        v["exchangers"][1]["addresses"][0]["reverse"][0],
        "mx2.isp.example"
    );
    assert_eq!(
        v["exchangers"][2]["addresses"][0]["reverse_error"]["kind"],
        "nxdomain"
    );
}

/// What mx-check must say about one domain of the test zones, in its text report and in JSON.
struct Finding {
    domain: &'static str,
    /// The exit status, the same with and without `--json`.
    code: i32,
    /// The start of the text report ("" for any), pieces it must contain, and pieces it must not.
    begins: &'static str,
    shows: &'static [&'static str],
    hides: &'static [&'static str],
    /// JSON fields by pointer, each with its value as JSON text; findings as (severity, a piece
    /// of the message); pieces the JSON output must not contain.
    fields: &'static [(&'static str, &'static str)],
    findings: &'static [(&'static str, &'static str)],
    json_hides: &'static [&'static str],
}

const FINDING: Finding = Finding {
    domain: "",
    code: 0,
    begins: "",
    shows: &[],
    hides: &[],
    fields: &[],
    findings: &[],
    json_hides: &[],
};

/// Each kind of MX trouble in the test zones, and how it is reported.
const FINDINGS: &[Finding] = &[
    // A null MX is critical.
    Finding {
        domain: "nullmx.example",
        code: 2,
        begins: "MX CRITICAL - nullmx.example: nullmx.example has a null MX (RFC 7505)",
        fields: &[("/routing", "\"null_mx\""), ("/status", "\"CRITICAL\"")],
        ..FINDING
    },
    // No MX but an address: the implicit MX, a warning.
    Finding {
        domain: "implicit.example",
        code: 1,
        shows: &[
            "implicit MX\n  implicit.example\n    127.0.0.5",
            "WARNING: implicit.example has no MX records",
        ],
        fields: &[
            ("/routing", "\"implicit\""),
            ("/exchangers/0/implicit", "true"),
        ],
        ..FINDING
    },
    // Neither MX nor address is critical.
    Finding {
        domain: "nothing.example",
        code: 2,
        shows: &["has neither MX records nor an address"],
        ..FINDING
    },
    // A domain that does not exist is critical, and said to be NXDOMAIN.
    Finding {
        domain: "no-such-domain.example",
        code: 2,
        fields: &[("/mx_error/kind", "\"nxdomain\"")],
        findings: &[("critical", "does not exist (NXDOMAIN)")],
        ..FINDING
    },
    // A CNAME as MX target is a warning; the alias's addresses are shown.
    Finding {
        domain: "aliased.example",
        code: 1,
        shows: &[
            "alias.aliased.example  CNAME -> mx.customer.example",
            "127.0.0.2",
        ],
        fields: &[("/exchangers/0/cname", "\"mx.customer.example\"")],
        findings: &[("warning", "is a CNAME for mx.customer.example")],
        ..FINDING
    },
    // Targets without an address are warnings; NODATA and NXDOMAIN are told apart.
    Finding {
        domain: "noaddr.example",
        code: 1,
        shows: &[
            "  ghost.noaddr.example\n    no address (A NODATA, AAAA NODATA)",
            "  missing.noaddr.example\n    no address (A NXDOMAIN, AAAA NXDOMAIN)",
        ],
        findings: &[
            (
                "warning",
                "MX 20 target ghost.noaddr.example has no A or AAAA record",
            ),
            (
                "warning",
                "MX 30 target missing.noaddr.example does not exist (NXDOMAIN)",
            ),
        ],
        ..FINDING
    },
    // No target with an address is critical.
    Finding {
        domain: "allgone.example",
        code: 2,
        shows: &["no MX target of allgone.example has an address"],
        ..FINDING
    },
    // An IP literal as target is a warning.
    Finding {
        domain: "literal.example",
        code: 1,
        fields: &[
            ("/exchangers/0/host", "\"127.0.0.2\""),
            ("/exchangers/0/ip_literal", "true"),
        ],
        findings: &[("warning", "is an IP address, not a host name")],
        ..FINDING
    },
    // SERVFAIL on the domain is critical, and not taken for NXDOMAIN.
    Finding {
        domain: "servfail.example",
        code: 2,
        fields: &[("/mx_error/kind", "\"servfail\"")],
        findings: &[("critical", "SERVFAIL (not NXDOMAIN)")],
        json_hides: &["does not exist"],
        ..FINDING
    },
    // SERVFAIL on one target is a warning, and not taken for NXDOMAIN.
    Finding {
        domain: "brokenmx.example",
        code: 1,
        shows: &[
            "  mx.servfail.example\n    no address (A SERVFAIL, AAAA SERVFAIL",
            "WARNING: mx.servfail.example: lookup failed: mx.servfail.example A: name server failure (SERVFAIL)",
        ],
        hides: &["NXDOMAIN"],
        ..FINDING
    },
];

#[test]
fn each_kind_of_mx_trouble_is_reported_in_text_and_json() {
    let dns = DnsServer::start();
    for case in FINDINGS {
        let domain = case.domain;
        let run = mx_check(&dns, &[domain]);
        assert_eq!(
            run.code, case.code,
            "{domain}: {}{}",
            run.stdout, run.stderr
        );
        let out = &run.stdout;
        assert!(out.starts_with(case.begins), "{domain}: {out}");
        for piece in case.shows {
            assert!(out.contains(piece), "{domain}: {piece:?} missing in\n{out}");
        }
        for piece in case.hides {
            assert!(!out.contains(piece), "{domain}: {piece:?} shown in\n{out}");
        }
        let run = mx_check(&dns, &["--json", domain]);
        assert_eq!(
            run.code, case.code,
            "{domain}: {}{}",
            run.stdout, run.stderr
        );
        for piece in case.json_hides {
            assert!(!run.stdout.contains(piece), "{domain}: {}", run.stdout);
        }
        let v = json(&run);
        for (pointer, value) in case.fields {
            let value: Value = serde_json::from_str(value).expect("a JSON value");
            assert_eq!(v.pointer(pointer), Some(&value), "{domain} {pointer}: {v}");
        }
        for (severity, text) in case.findings {
            assert!(
                has_finding(&v, severity, text),
                "{domain}: {severity} {text:?} in {v}"
            );
        }
    }
}

#[test]
fn a_silent_name_server_is_unknown_after_the_timeout() {
    let silent = SilentDns::start();
    let started = Instant::now();
    let run = mx_check_with(
        "",
        &[
            "--nameserver",
            &silent.addr.to_string(),
            "--dns-timeout",
            "1",
            "customer.example",
        ],
    );
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("MX UNKNOWN - customer.example: cannot tell where mail goes"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("no answer from the name servers within 1s"),
        "{}",
        run.stdout
    );
    // The output names the limit applied; this bound only catches a hang, with room for what
    // a loaded machine adds to a 1 s limit.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn this_host_as_backup_mx_names_the_better_host() {
    let dns = DnsServer::start();
    let run = mx_check_with(
        "hostnames = [\"MX2.isp.example\"]\n",
        &["--nameserver", &dns.addr_text, "customer.example"],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("  mx2.isp.example  [this host]\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("note: this host is MX 20; 10 is mx.customer.example\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn this_host_as_best_mx() {
    let dns = DnsServer::start();
    let run = mx_check_with(
        "hostnames = [\"mx.customer.example\"]\n",
        &["--nameserver", &dns.addr_text, "--json", "customer.example"],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v = json(&run);
    assert_eq!(v["this_host"]["preference"], 10);
    assert_eq!(v["this_host"]["best"], true);
}

#[test]
fn config_nameservers_are_used_without_the_option() {
    let dns = DnsServer::start();
    let config = format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr_text);
    let run = mx_check_with(&config, &["customer.example"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("name servers: {}", dns.addr_text)),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_and_config_errors_are_unknown_with_one_line() {
    let dns = DnsServer::start();
    let run = mx_check(&dns, &["bad domain"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("bad domain"), "{}", run.stderr);

    let run = mx_check_with(
        "bogus = 1\n",
        &["--nameserver", &dns.addr_text, "customer.example"],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("mx-check: ") && run.stderr.contains("bogus: unknown key"),
        "{}",
        run.stderr
    );

    let run = mx_check_with("", &["--nameserver", "not-an-ip", "customer.example"]);
    assert_eq!(run.code, 3, "{}", run.stderr);

    Command::cargo_bin("mx-check")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("--nameserver"));
}

fn loopback(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, last])
}

/// mx-check with `--probe` on `port`, and `args`.
fn probe(dns: &DnsServer, port: &str, args: &[&str]) -> Run {
    let mut all = vec!["--probe", "--port", port];
    all.extend_from_slice(args);
    mx_check(dns, &all)
}

/// The verbs of the commands a server got, in order.
fn verbs(server: &Server) -> Vec<String> {
    server
        .commands()
        .iter()
        .map(|c| c.split(' ').next().unwrap_or("").to_string())
        .collect()
}

/// A backup MX as the probe should find one: ETRN, SIZE, PIPELINING, 8BITMIME; it knows its
/// users (postmaster and user, no one else) and takes no DATA from a probe.
fn accepting() -> Script {
    knowing_its_users(Script::named("accept.probe.example"))
        .greeting(Some("220 accept.probe.example ESMTP test server"))
        .keywords(&["PIPELINING", "SIZE 10240000", "ETRN", "8BITMIME"])
}

/// A backup MX that was never told about the domain: 554 Relay access denied to every RCPT.
fn denying_relay() -> Script {
    Script::named("deny.probe.example")
        .greeting(Some("220 deny.probe.example ESMTP test server"))
        .keywords(&["PIPELINING", "SIZE 10240000", "8BITMIME"])
        .rcpt("", "554 5.7.1 Relay access denied")
        .data("554 5.5.1 This test server takes no DATA")
}

/// A backup MX offering STARTTLS with a self-signed certificate for `tls.probe.example`.
fn offering_starttls() -> Script {
    knowing_its_users(Script::named("tls.probe.example"))
        .greeting(Some("220 tls.probe.example ESMTP test server"))
        .keywords(&["PIPELINING", "SIZE 10240000", "8BITMIME"])
        .tls(tls::self_signed(&["tls.probe.example"]))
}

/// Accepts postmaster and user, refuses everyone else as unknown, and takes no DATA.
fn knowing_its_users(script: Script) -> Script {
    script
        .rcpt("postmaster", "250 2.1.5 Ok")
        .rcpt("user", "250 2.1.5 Ok")
        .rcpt("", "550 5.1.1 User unknown")
        .data("554 5.5.1 This test server takes no DATA")
}

#[test]
fn probe_reports_greeting_capabilities_and_accepted_rcpt() {
    let dns = DnsServer::start();
    let (port, servers) = Server::start_group(&[(loopback(11), accepting())]);
    let port = port.to_string();
    let run = probe(
        &dns,
        &port,
        &["--timeout", "5", "--rcpt", "postmaster", "ok.probe.example"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("      greeting  220 accept.probe.example ESMTP test server\n"),
        "{out}"
    );
    assert!(
        out.contains("      EHLO      8BITMIME, ETRN, PIPELINING, SIZE 10240000\n"),
        "{out}"
    );
    assert!(
        out.contains("      MAIL      250 2.1.0 Ok\n      RCPT      250 2.1.5 Ok\n"),
        "{out}"
    );
    assert!(
        out.contains("note: accept.probe.example [127.0.0.11]:"),
        "{out}"
    );
    let commands = servers[0].commands();
    assert_eq!(
        verbs(&servers[0]),
        ["EHLO", "MAIL", "RCPT", "RCPT", "RSET", "QUIT"],
        "{commands:?}"
    );
    assert_eq!(commands[1], "MAIL FROM:<>");
    assert_eq!(commands[2], "RCPT TO:<postmaster@ok.probe.example>");
    assert!(
        commands[3].starts_with("RCPT TO:<no-such-user-")
            && commands[3].ends_with("@ok.probe.example>"),
        "a user no site has: {commands:?}"
    );

    let v = json(&probe(
        &dns,
        &port,
        &["--json", "--rcpt", "postmaster", "ok.probe.example"],
    ));
    let probe = &v["exchangers"][0]["addresses"][0]["probe"];
    assert_eq!(probe["connected"], true);
    assert_eq!(probe["etrn"], true);
    assert_eq!(probe["starttls"], false);
    assert_eq!(probe["pipelining"], true);
    assert_eq!(probe["8bitmime"], true);
    assert_eq!(probe["size"], 10240000);
    assert_eq!(probe["rcpt_accepted"], true);
    assert_eq!(probe["port"].as_u64(), Some(port.parse().unwrap()));
}

#[test]
fn backup_mx_refusing_relay_is_critical_and_never_gets_data() {
    let dns = DnsServer::start();
    let (port, servers) =
        Server::start_group(&[(loopback(11), accepting()), (loopback(12), denying_relay())]);
    let port = port.to_string();
    let run = probe(
        &dns,
        &port,
        &[
            "--rcpt",
            "user@relaydenied.probe.example",
            "relaydenied.probe.example",
        ],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with(&format!(
            "MX CRITICAL - relaydenied.probe.example: deny.probe.example [127.0.0.12]:{port}: refuses RCPT TO:<user@relaydenied.probe.example>: 554 5.7.1 Relay access denied (a backup MX must accept mail for the domain and hold it)"
        )),
        "{out}"
    );
    // Preference order in the output although both were probed at once.
    let accept = out
        .find("  accept.probe.example\n")
        .expect("accept host listed");
    let deny = out
        .find("  deny.probe.example\n")
        .expect("deny host listed");
    assert!(accept < deny, "{out}");
    assert!(out.contains("backup MX does not offer ETRN"), "{out}");
    for server in &servers {
        let received = server.commands();
        assert!(
            received.iter().any(|c| c.starts_with("RCPT")),
            "{received:?}"
        );
        assert!(
            !received.iter().any(|c| c.eq_ignore_ascii_case("DATA")),
            "{received:?}"
        );
        assert_eq!(
            received.last().map(String::as_str),
            Some("QUIT"),
            "{received:?}"
        );
        assert!(received.iter().any(|c| c == "RSET"), "{received:?}");
    }
}

#[test]
fn starttls_certificate_is_reported() {
    let dns = DnsServer::start();
    let (port, servers) = Server::start_group(&[(loopback(13), offering_starttls())]);
    let port = port.to_string();
    let run = probe(
        &dns,
        &port,
        &["--rcpt", "postmaster", "tls-site.probe.example"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains("STARTTLS"), "{out}");
    assert!(out.contains("      TLS       TLSv1.3, certificate CN=rcgen self signed cert (tls.probe.example), not trusted, expires "), "{out}");
    assert!(out.contains(": TLS: certificate not trusted: "), "{out}");
    let received = servers[0].commands();
    assert_eq!(
        verbs(&servers[0]),
        [
            "EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "RCPT", "RSET", "QUIT"
        ],
        "{received:?}"
    );

    let v = json(&probe(&dns, &port, &["--json", "tls-site.probe.example"]));
    let tls = &v["exchangers"][0]["addresses"][0]["probe"]["tls"];
    assert_eq!(tls["protocol"], "TLSv1.3");
    assert_eq!(tls["trusted"], false);
    assert_eq!(tls["expired"], false);
    assert_eq!(tls["alt_names"][0], "tls.probe.example");
    assert!(
        tls["not_after"].as_str().is_some_and(|d| d.len() >= 10),
        "{tls}"
    );
}

#[test]
fn silent_backup_is_a_warning_within_the_timeout() {
    let dns = DnsServer::start();
    let (port, _servers) = Server::start_group(&[
        (loopback(11), accepting()),
        (loopback(14), Script::default().greeting(None)),
    ]);
    let port = port.to_string();
    let started = Instant::now();
    let run = probe(&dns, &port, &["--timeout", "1", "slow.probe.example"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    // The output names the limit applied; this bound only catches a hang, with room for what
    // a loaded machine adds to a 1 s limit.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stdout.contains(&format!(
            "WARNING: silent.probe.example [127.0.0.14]:{port}: no SMTP service: timed out"
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn a_trickling_server_is_cut_off_when_the_steps_limit_is_spent() {
    // The greeting comes a byte every 300 ms: each within the two-second limit, the whole in
    // about nine seconds. The limit bounds the greeting, not each read.
    let dns = DnsServer::start();
    let server = Server::start_on(
        std::net::SocketAddr::new(loopback(14), 0),
        vec![Script::default().trickle("220", Duration::from_millis(300))],
    );
    let port = server.port().to_string();
    let run = probe(&dns, &port, &["--timeout", "2", "dead.probe.example"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("MX CRITICAL - dead.probe.example: silent.probe.example [127.0.0.14]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("timed out waiting for the greeting"),
        "{}",
        run.stdout
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}

#[test]
fn no_host_answering_is_critical() {
    let dns = DnsServer::start();
    let (port, _servers) = Server::start_group(&[(loopback(14), Script::default().greeting(None))]);
    let run = probe(
        &dns,
        &port.to_string(),
        &["--timeout", "1", "dead.probe.example"],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("MX CRITICAL - dead.probe.example: silent.probe.example [127.0.0.14]"),
        "{}",
        run.stdout
    );
}
