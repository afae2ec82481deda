//! mx-check's two outputs: a table for people and JSON for machines.
//!
//! The table's first line is the monitoring summary (`MX OK - domain: ...`), as Nagios and
//! Icinga show a plugin's first line; the MX list follows, grouped by preference, then the
//! findings worst first. Colour only when the caller says stdout is a terminal.
//!
//! The JSON is one object, documented in mx-check(1): new keys may appear in later versions,
//! existing keys keep their meaning (`schema` changes when they do not).

use std::io::{self, Write};

use serde::Serialize;

use super::probe::{ProbeReport, TlsReport};
use super::{Diagnosis, Exchanger, HostAddress, LookupFailure, Routing, Severity, Verdict};
use crate::dns::DnsErrorKind;

/// The JSON schema version written as `schema`.
pub const JSON_SCHEMA: u32 = 1;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: u32,
    status: Verdict,
    exit_code: u8,
    #[serde(flatten)]
    diagnosis: &'a Diagnosis,
}

/// Writes the diagnosis as one JSON object and a newline.
pub fn json(diagnosis: &Diagnosis, out: &mut dyn Write) -> io::Result<()> {
    let verdict = diagnosis.verdict();
    let report = JsonReport {
        schema: JSON_SCHEMA,
        status: verdict,
        exit_code: verdict.exit_code(),
        diagnosis,
    };
    serde_json::to_writer_pretty(&mut *out, &report).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes the human table.
pub fn table(diagnosis: &Diagnosis, colour: bool, out: &mut dyn Write) -> io::Result<()> {
    let paint = Paint { colour };
    let verdict = diagnosis.verdict();
    writeln!(
        out,
        "MX {} - {}: {}",
        paint.verdict(verdict),
        clean(&diagnosis.domain),
        clean(&summary(diagnosis))
    )?;
    writeln!(out)?;
    writeln!(out, "name servers: {}", diagnosis.nameservers.join(", "))?;
    match diagnosis.routing {
        Routing::Implicit => writeln!(out, "no MX records: the domain itself receives mail")?,
        Routing::NullMx => writeln!(out, "null MX (RFC 7505): the domain accepts no mail")?,
        _ => {}
    }
    if let Some(err) = &diagnosis.mx_error {
        writeln!(out, "MX lookup: {}", clean(&err.message))?;
    }
    let width = address_width(diagnosis);
    let mut index = 0;
    while index < diagnosis.exchangers.len() {
        let preference = diagnosis.exchangers[index].preference;
        let group: Vec<&Exchanger> = diagnosis.exchangers[index..]
            .iter()
            .take_while(|e| e.preference == preference)
            .collect();
        index += group.len();
        if group.len() > 1 {
            writeln!(
                out,
                "preference {preference} ({} hosts, tried in random order)",
                group.len()
            )?;
        } else if group[0].implicit {
            writeln!(out, "implicit MX")?;
        } else {
            writeln!(out, "preference {preference}")?;
        }
        for exchanger in group {
            exchanger_lines(exchanger, width, out)?;
        }
    }
    if !diagnosis.findings.is_empty() {
        writeln!(out)?;
    }
    let mut findings: Vec<_> = diagnosis.findings.iter().collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity.rank()));
    for finding in findings {
        let subject = finding
            .subject
            .as_deref()
            .map(|s| format!("{}: ", clean(s)))
            .unwrap_or_default();
        writeln!(
            out,
            "{} {subject}{}",
            paint.severity(finding.severity),
            clean(&finding.message)
        )?;
    }
    Ok(())
}

fn summary(diagnosis: &Diagnosis) -> String {
    let worst = diagnosis
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .max_by_key(|f| f.severity.rank());
    if let Some(finding) = worst {
        let others = diagnosis
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Note)
            .count()
            - 1;
        let subject = finding
            .subject
            .as_deref()
            .map(|s| format!("{s}: "))
            .unwrap_or_default();
        return match others {
            0 => format!("{subject}{}", finding.message),
            n => format!("{subject}{} (+{n} more)", finding.message),
        };
    }
    let hosts = diagnosis.exchangers.len();
    let groups = {
        let mut preferences: Vec<u16> = diagnosis.exchangers.iter().map(|e| e.preference).collect();
        preferences.dedup();
        preferences.len()
    };
    let addresses: usize = diagnosis.exchangers.iter().map(|e| e.addresses.len()).sum();
    format!(
        "{hosts} MX host{} in {groups} preference group{}, {addresses} address{}",
        plural(hosts, "s"),
        plural(groups, "s"),
        plural(addresses, "es")
    )
}

fn plural(count: usize, suffix: &str) -> &str {
    if count == 1 { "" } else { suffix }
}

fn exchanger_lines(exchanger: &Exchanger, width: usize, out: &mut dyn Write) -> io::Result<()> {
    let mut tags = Vec::new();
    if exchanger.this_host {
        tags.push("[this host]".to_string());
    }
    if let Some(target) = &exchanger.cname {
        tags.push(format!("CNAME -> {}", clean(target)));
    }
    if exchanger.ip_literal {
        tags.push("IP address, not a name".to_string());
    }
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!("  {}", tags.join("  "))
    };
    writeln!(out, "  {}{tags}", clean(&exchanger.host))?;
    for address in &exchanger.addresses {
        address_lines(address, width, out)?;
    }
    if exchanger.addresses.is_empty() && !exchanger.ip_literal {
        let why = exchanger
            .lookup_errors
            .iter()
            .map(failure_tag)
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(out, "    no address ({why})")?;
    }
    Ok(())
}

fn address_lines(address: &HostAddress, width: usize, out: &mut dyn Write) -> io::Result<()> {
    let reverse = match (&address.reverse_error, address.reverse.is_empty()) {
        (Some(err), _) => format!("(PTR {})", failure_tag(err)),
        (None, true) => "(no PTR)".to_string(),
        (None, false) => address
            .reverse
            .iter()
            .map(|r| clean(r))
            .collect::<Vec<_>>()
            .join(", "),
    };
    writeln!(
        out,
        "    {:<width$}  {reverse}",
        address.address.to_string()
    )?;
    match &address.probe {
        Some(report) => probe_lines(report, out),
        None => Ok(()),
    }
}

fn probe_lines(report: &ProbeReport, out: &mut dyn Write) -> io::Result<()> {
    let mut line = |label: &str, text: &str| writeln!(out, "      {label:<9} {}", clean(text));
    if let Some(greeting) = &report.greeting {
        line("greeting", greeting)?;
    }
    if report.connected {
        let hello = if !report.esmtp {
            "HELO only (no ESMTP extensions)".to_string()
        } else if report.extensions.is_empty() {
            "no extensions".to_string()
        } else {
            report.extensions.join(", ")
        };
        line("EHLO", &hello)?;
    }
    if let Some(tls) = &report.tls {
        line("TLS", &tls_line(tls))?;
    }
    if let Some(mail) = &report.mail_from {
        line("MAIL", &mail.to_string())?;
    }
    if let Some(rcpt) = &report.rcpt {
        line("RCPT", &rcpt.to_string())?;
    }
    if let (Some(unknown), Some(reply)) = (&report.unknown_rcpt, &report.unknown_rcpt_reply) {
        line(
            "RCPT",
            &format!("{reply} (for <{unknown}>, a user no site has)"),
        )?;
    }
    if let Some(error) = &report.error {
        line("error", &error.to_string())?;
    }
    Ok(())
}

/// `TLSv1.3, certificate CN=mx.example (mx.example, 192.0.2.1), not trusted, expires 2027-01-01`
fn tls_line(tls: &TlsReport) -> String {
    let mut parts = vec![tls.protocol.clone()];
    let mut certificate = format!("certificate CN={}", tls.common_names.join(","));
    if !tls.alt_names.is_empty() {
        certificate.push_str(&format!(" ({})", tls.alt_names.join(", ")));
    }
    parts.push(certificate);
    parts.push(
        if tls.trusted {
            "trusted"
        } else {
            "not trusted"
        }
        .to_string(),
    );
    if let Some(not_after) = &tls.not_after {
        let date = not_after.get(..10).unwrap_or(not_after);
        let verb = if tls.expired { "expired" } else { "expires" };
        parts.push(format!("{verb} {date}"));
    }
    parts.join(", ")
}

/// `A NXDOMAIN`, `AAAA NODATA`, `A SERVFAIL`, ...
fn failure_tag(failure: &LookupFailure) -> String {
    let kind = match failure.kind {
        DnsErrorKind::NxDomain => "NXDOMAIN",
        DnsErrorKind::NoData => "NODATA",
        DnsErrorKind::ServFail => "SERVFAIL",
        DnsErrorKind::Timeout => "TIMEOUT",
        DnsErrorKind::Error => "FAILED",
    };
    if failure.query.is_empty() || failure.query == "PTR" {
        kind.to_string()
    } else {
        format!("{} {kind}", failure.query)
    }
}

fn address_width(diagnosis: &Diagnosis) -> usize {
    diagnosis
        .exchangers
        .iter()
        .flat_map(|e| &e.addresses)
        .map(|a| a.address.to_string().len())
        .max()
        .unwrap_or(0)
}

/// Text from the network, made safe for a terminal: control characters become `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

struct Paint {
    colour: bool,
}

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn verdict(&self, verdict: Verdict) -> String {
        let code = match verdict {
            Verdict::Ok => "32",
            Verdict::Warning => "33",
            Verdict::Critical => "1;31",
            Verdict::Unknown => "35",
        };
        self.wrap(code, verdict.label())
    }

    fn severity(&self, severity: Severity) -> String {
        let (code, label) = match severity {
            Severity::Note => ("2", "note:"),
            Severity::Warning => ("33", "WARNING:"),
            Severity::Unknown => ("35", "UNKNOWN:"),
            Severity::Critical => ("1;31", "CRITICAL:"),
        };
        self.wrap(code, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::Finding;

    fn sample() -> Diagnosis {
        Diagnosis {
            domain: "customer.example".into(),
            nameservers: vec!["127.0.0.1:53".into()],
            routing: Routing::Mx,
            mx_error: None,
            exchangers: vec![
                Exchanger {
                    preference: 10,
                    host: "mx.customer.example".into(),
                    implicit: false,
                    this_host: false,
                    cname: None,
                    ip_literal: false,
                    addresses: vec![HostAddress {
                        address: "127.0.0.2".parse().unwrap(),
                        reverse: vec!["mx.customer.example".into()],
                        reverse_error: None,
                        probe: None,
                    }],
                    lookup_errors: vec![],
                },
                Exchanger {
                    preference: 20,
                    host: "bad\x1b[2Jname".into(),
                    implicit: false,
                    this_host: false,
                    cname: None,
                    ip_literal: false,
                    addresses: vec![],
                    lookup_errors: vec![],
                },
            ],
            this_host: None,
            findings: vec![Finding {
                severity: Severity::Warning,
                subject: Some("x".into()),
                message: "something".into(),
            }],
        }
    }

    #[test]
    fn table_starts_with_the_monitoring_line_and_has_no_escapes_without_colour() {
        let mut out = Vec::new();
        table(&sample(), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("MX WARNING - customer.example: x: something\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("bad?[2Jname"));
    }

    #[test]
    fn colour_only_when_asked() {
        let mut out = Vec::new();
        table(&sample(), true, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\x1b[33mWARNING\x1b[0m")
        );
    }

    #[test]
    fn json_carries_status_and_schema() {
        let mut out = Vec::new();
        json(&sample(), &mut out).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["schema"], 1);
        assert_eq!(value["status"], "WARNING");
        assert_eq!(value["exit_code"], 1);
        assert_eq!(
            value["exchangers"][0]["addresses"][0]["address"],
            "127.0.0.2"
        );
    }
}
