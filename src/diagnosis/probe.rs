//! `mx-check --probe`: what every address of every MX host answers on the SMTP port.
//!
//! One thread per address, all at once, each bounded by the timeout per step; results are put
//! back in preference order. A probe reads the greeting, says EHLO (HELO when refused), takes
//! STARTTLS when offered (the certificate is recorded, not required to be trusted: MX-to-MX TLS
//! is opportunistic), says EHLO again, and with a recipient sends `MAIL FROM:<>` and
//! `RCPT TO:<recipient>`, then RSET and QUIT. It never sends DATA, so no probe delivers mail.
//!
//! When the recipient is accepted, a second RCPT in the same transaction names a local part no
//! site has, at the same domain. A host that accepts that too takes mail for any user and, when
//! the site refuses it later, bounces it to the sender, who is usually forged: a source of
//! backscatter, reported as a WARNING.

use std::net::SocketAddr;
use std::time::Duration;

pub use super::report::{Failure, ProbeReport, TlsReport};
use super::{Diagnosis, Exchanger, Severity};
use crate::address::{Address, Domain, ReversePath};
use crate::smtp::{
    Command, ConnectOptions, Connection, Endpoint, Opening, Reply, Setup, SmtpError, StartTls,
    Timeouts, TlsClient, TlsInfo, Verification, establish,
};

/// What `--probe` was asked to do.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub port: u16,
    /// The limit for connecting and for each reply.
    pub timeout: Duration,
    /// `--rcpt`: the recipient each host is asked to accept.
    pub rcpt: Option<Address>,
    /// The name this host gives in EHLO.
    pub helo: Domain,
}

/// Probes every address of every exchanger and adds the findings.
pub fn probe(diagnosis: &mut Diagnosis, options: &ProbeOptions) {
    let tls = TlsClient::new(Verification::Insecure);
    let unknown = options
        .rcpt
        .as_ref()
        .and_then(|rcpt| unlikely(rcpt.domain()));
    let unknown = unknown.as_ref();
    let targets: Vec<(usize, usize, String, SocketAddr)> = diagnosis
        .exchangers
        .iter()
        .enumerate()
        .flat_map(|(e, exchanger)| {
            exchanger
                .addresses
                .iter()
                .enumerate()
                .map(move |(a, address)| {
                    (
                        e,
                        a,
                        exchanger.host.clone(),
                        SocketAddr::new(address.address, options.port),
                    )
                })
        })
        .collect();
    let reports: Vec<(usize, usize, ProbeReport)> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(e, a, host, addr)| {
                let tls = &tls;
                let handle = scope.spawn(move || probe_address(host, *addr, options, unknown, tls));
                (*e, *a, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(e, a, handle)| {
                let report = handle.join().unwrap_or_else(|_| ProbeReport {
                    port: options.port,
                    error: Some(Failure {
                        peer: None,
                        detail: "the probe failed unexpectedly".to_string(),
                    }),
                    ..ProbeReport::default()
                });
                (e, a, report)
            })
            .collect()
    });
    for (e, a, report) in reports {
        diagnosis.exchangers[e].addresses[a].probe = Some(report);
    }
    judge(diagnosis, options);
}

/// A recipient at `domain` that no site has: a local part with a random tail.
fn unlikely(domain: &Domain) -> Option<Address> {
    let mut rng = fastrand::Rng::new();
    let tail: String = (0..12).map(|_| rng.lowercase()).collect();
    Address::parse_qualified(&format!("no-such-user-{tail}@{domain}")).ok()
}

fn probe_address(
    host: &str,
    addr: SocketAddr,
    options: &ProbeOptions,
    unknown: Option<&Address>,
    tls: &TlsClient,
) -> ProbeReport {
    let mut report = ProbeReport {
        port: addr.port(),
        ..ProbeReport::default()
    };
    let connect = ConnectOptions {
        timeouts: Timeouts::uniform(options.timeout),
        ..ConnectOptions::default()
    };
    // The certificate is recorded, not required to be trusted: MX-to-MX TLS is opportunistic.
    // A STARTTLS that fails is reported, not retried in clear.
    let setup = Setup {
        helo: &options.helo,
        starttls: StartTls::WhenOffered,
        tls,
    };
    let endpoint = Endpoint::Address {
        addr,
        name: Some(host.to_string()),
    };
    let failure = match establish(&endpoint, &connect, &setup) {
        Ok(session) => {
            record_opening(&mut report, &session.opening);
            converse(session.connection, options, unknown, &mut report).err()
        }
        Err(failed) => {
            record_opening(&mut report, &failed.opening);
            Some(failed.error)
        }
    };
    if let Some(err) = failure {
        if let Some(reply) = err.reply()
            && report.greeting.is_none()
        {
            report.greeting = Some(reply.to_string());
        }
        report.error = Some(Failure::from(&err));
    }
    report
}

/// The greeting and what the first EHLO announced, before any STARTTLS.
fn record_opening(report: &mut ProbeReport, opening: &Opening) {
    let Some(greeting) = &opening.greeting else {
        return;
    };
    report.greeting = Some(greeting.to_string());
    report.connected = true;
    let Some(hello) = &opening.hello else {
        return;
    };
    report.esmtp = hello.extended;
    let capabilities = &hello.capabilities;
    report.extensions = capabilities
        .keywords()
        .map(|keyword| {
            let parameters = capabilities.parameters(keyword);
            if parameters.is_empty() {
                keyword.to_string()
            } else {
                format!("{keyword} {}", parameters.join(" "))
            }
        })
        .collect();
    report.etrn = capabilities.etrn();
    report.starttls = capabilities.starttls();
    report.pipelining = capabilities.pipelining();
    report.eight_bit_mime = capabilities.eight_bit_mime();
    report.size = capabilities.size_limit();
    report.tls = opening.tls.as_ref().map(tls_report);
}

/// The conversation after the session is set up; each step's result goes into `report` as soon
/// as it is known, so an error leaves what was learnt before it.
fn converse(
    mut connection: Connection,
    options: &ProbeOptions,
    unknown: Option<&Address>,
    report: &mut ProbeReport,
) -> Result<(), SmtpError> {
    if let Some(recipient) = &options.rcpt {
        let mail = connection.command(&Command::Mail {
            from: ReversePath::Null,
            parameters: Vec::new(),
        })?;
        let accepted = mail.is_positive();
        report.mail_from = Some(mail);
        if accepted {
            let rcpt = connection.command(&Command::Rcpt {
                to: recipient.clone(),
                parameters: Vec::new(),
            })?;
            let accepted = rcpt.is_positive();
            record_rcpt(report, rcpt);
            if let (true, Some(unknown)) = (accepted, unknown) {
                let reply = connection.command(&Command::Rcpt {
                    to: unknown.clone(),
                    parameters: Vec::new(),
                })?;
                report.unknown_rcpt = Some(unknown.to_string());
                report.unknown_rcpt_reply = Some(reply.to_string());
                report.unknown_rcpt_accepted = Some(reply.is_positive());
            }
        }
        connection.reset()?;
    }
    connection.quit();
    Ok(())
}

fn record_rcpt(report: &mut ProbeReport, rcpt: Reply) {
    report.rcpt_accepted = Some(rcpt.is_positive());
    report.rcpt_code = Some(rcpt.code.value());
    report.rcpt = Some(rcpt);
}

fn tls_report(info: &TlsInfo) -> TlsReport {
    let certificate = info.certificate.as_ref();
    TlsReport {
        protocol: info.protocol.clone(),
        cipher_suite: info.cipher_suite.clone(),
        trusted: info.verified.is_ok(),
        trust_error: info.verified.clone().err(),
        common_names: certificate.map_or_else(Vec::new, |c| c.common_names.clone()),
        alt_names: certificate.map_or_else(Vec::new, |c| c.alt_names.clone()),
        issuer: certificate.map(|c| c.issuer.clone()),
        not_before: certificate.map(|c| c.not_before.to_rfc3339()),
        not_after: certificate.map(|c| c.not_after.to_rfc3339()),
        expired: certificate.is_some_and(|c| c.not_after < chrono::Utc::now()),
    }
}

/// Findings from the probes. Unreachable hosts are a warning while another host answers and
/// critical when none does; a refused recipient is critical, a deferred one a warning.
fn judge(diagnosis: &mut Diagnosis, options: &ProbeOptions) {
    let reports = || {
        diagnosis.exchangers.iter().flat_map(|e| {
            e.addresses
                .iter()
                .filter_map(move |a| a.probe.as_ref().map(|p| (e, a.address, p)))
        })
    };
    let any_answered = reports().any(|(_, _, p)| p.connected);
    let probed = reports().count();
    let best = diagnosis.exchangers.iter().map(|e| e.preference).min();
    let mut findings: Vec<(Severity, String, String)> = Vec::new();
    for (exchanger, ip, report) in reports() {
        let subject = format!("{} [{ip}]:{}", exchanger.host, report.port);
        if !report.connected {
            let severity = if any_answered {
                Severity::Warning
            } else {
                Severity::Critical
            };
            let why = report.error.as_ref().map_or("", |e| e.detail.as_str());
            findings.push((severity, subject, format!("no SMTP service: {why}")));
            continue;
        }
        findings.extend(conversation_findings(
            exchanger, report, best, options, &subject,
        ));
    }
    if probed == 0 && !diagnosis.exchangers.is_empty() {
        findings.push((
            Severity::Critical,
            diagnosis.domain.clone(),
            "no address to probe".to_string(),
        ));
    }
    for (severity, subject, message) in findings {
        diagnosis.add(severity, Some(&subject), message);
    }
}

fn conversation_findings(
    exchanger: &Exchanger,
    report: &ProbeReport,
    best: Option<u16>,
    options: &ProbeOptions,
    subject: &str,
) -> Vec<(Severity, String, String)> {
    let mut findings = Vec::new();
    let mut add =
        |severity, message: String| findings.push((severity, subject.to_string(), message));
    if let Some(error) = &report.error {
        add(
            Severity::Warning,
            format!("conversation failed: {}", error.detail),
        );
    }
    if let Some(tls) = &report.tls {
        if tls.expired {
            add(
                Severity::Warning,
                format!(
                    "TLS certificate expired {}",
                    tls.not_after.as_deref().unwrap_or("")
                ),
            );
        }
        if let Some(reason) = &tls.trust_error {
            add(Severity::Note, format!("TLS: {reason}"));
        }
    } else if report.error.is_none() && !report.starttls {
        add(Severity::Note, "does not offer STARTTLS".to_string());
    }
    let is_backup = best.is_some_and(|b| exchanger.preference > b);
    if is_backup && report.esmtp && !report.etrn {
        add(
            Severity::Note,
            "backup MX does not offer ETRN: the site cannot ask it to send held mail".to_string(),
        );
    }
    if let Some(mail) = &report.mail_from
        && !mail.is_positive()
    {
        let severity = if mail.is_transient() {
            Severity::Warning
        } else {
            Severity::Critical
        };
        add(
            severity,
            format!("refuses the null sender: MAIL FROM:<> answered {mail}"),
        );
    }
    if let (Some(recipient), Some(rcpt)) = (&options.rcpt, &report.rcpt)
        && !rcpt.is_positive()
    {
        if rcpt.is_transient() {
            add(
                Severity::Warning,
                format!("defers RCPT TO:<{recipient}>: {rcpt}"),
            );
        } else {
            add(
                Severity::Critical,
                format!(
                    "refuses RCPT TO:<{recipient}>: {rcpt}{}",
                    if is_backup {
                        " (a backup MX must accept mail for the domain and hold it)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    if let (Some(true), Some(unknown), Some(reply)) = (
        report.unknown_rcpt_accepted,
        &report.unknown_rcpt,
        &report.unknown_rcpt_reply,
    ) {
        add(
            Severity::Warning,
            format!(
                "accepts any local part: RCPT TO:<{unknown}> answered {reply}; mail for users the site does not have is bounced later to senders that are usually forged (backscatter): give the host the site's users (queue-smtpd: [relay_recipients])"
            ),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_reads_as_the_error_and_its_detail_without_the_peer() {
        let error = SmtpError::Timeout {
            peer: "mx.example[127.0.0.1]:25".to_string(),
            during: "waiting for the greeting".to_string(),
        };
        let failure = Failure::from(&error);
        assert_eq!(failure.detail, "timed out waiting for the greeting");
        assert_eq!(failure.to_string(), error.to_string());
        let report = ProbeReport {
            error: Some(failure),
            mail_from: Some(Reply::from_lines(&["451 4.3.0 try later"]).unwrap()),
            ..ProbeReport::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["error"],
            "mx.example[127.0.0.1]:25: timed out waiting for the greeting"
        );
        assert_eq!(json["mail_from"], "451 4.3.0 try later");
        assert_eq!(json["rcpt"], serde_json::Value::Null);
    }
}
