//! What mx-check reports: findings, their severity, the verdict, and what it saw of every host.
//!
//! These types are the whole report, from the domain down to one address's probe, and they are
//! what the JSON output serialises: the field names are the JSON keys documented in mx-check(1),
//! so renaming a field changes the output. Nothing here asks the network; [`super::lookup`] and
//! [`super::probe`] fill them in.
//!
//! A reply or a failure is kept as data and serialised as the one line it reads as; the
//! renderers replace control characters before anything reaches a terminal.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::dns::{DnsError, DnsErrorKind};
use crate::smtp::{Reply, SmtpError};

/// How bad a finding is for the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Unknown,
    Critical,
}

impl Severity {
    pub(super) fn rank(self) -> u8 {
        match self {
            Severity::Note => 0,
            Severity::Warning => 1,
            Severity::Unknown => 2,
            Severity::Critical => 3,
        }
    }
}

/// The outcome of a check, in the Nagios plugin convention: the exit status is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// One thing worth telling the administrator, about the domain or one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The host or address it concerns; `None` for the domain as a whole.
    pub subject: Option<String>,
    pub message: String,
}

/// A failed lookup, kept for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupFailure {
    pub query: String,
    /// Written `nxdomain`, `nodata`, `servfail`, `timeout` or `error`.
    pub kind: DnsErrorKind,
    pub message: String,
}

impl From<&DnsError> for LookupFailure {
    fn from(err: &DnsError) -> LookupFailure {
        let query = match err {
            DnsError::NxDomain { query, .. }
            | DnsError::NoData { query, .. }
            | DnsError::ServFail { query, .. }
            | DnsError::Timeout { query, .. }
            | DnsError::Other { query, .. } => query.to_string(),
            DnsError::Setup(_) => String::new(),
        };
        LookupFailure {
            query,
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

/// How the domain routes mail, as far as the DNS tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// MX records name the hosts.
    Mx,
    /// No MX records: the domain's own address receives mail (RFC 5321 §5.1).
    Implicit,
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// No MX and no address, or the domain does not exist: mail cannot be delivered.
    Undeliverable,
    /// The MX lookup failed: routing is unknown.
    Failed,
}

/// One address of an exchanger and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct HostAddress {
    pub address: IpAddr,
    pub reverse: Vec<String>,
    pub reverse_error: Option<LookupFailure>,
    /// What the address answered on the SMTP port, with `--probe`.
    pub probe: Option<ProbeReport>,
}

/// One MX target (or the domain itself for an implicit MX).
#[derive(Debug, Clone, Serialize)]
pub struct Exchanger {
    pub preference: u16,
    pub host: String,
    pub implicit: bool,
    pub this_host: bool,
    pub cname: Option<String>,
    pub ip_literal: bool,
    pub addresses: Vec<HostAddress>,
    pub lookup_errors: Vec<LookupFailure>,
}

/// This host's place among the exchangers, from the configuration's `hostnames`.
#[derive(Debug, Clone, Serialize)]
pub struct OwnPlace {
    pub preference: u16,
    pub best: bool,
    /// The hosts mail for the domain is relayed to from here, strictly better than us.
    pub better: Vec<(u16, String)>,
}

/// Everything mx-check found about one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub domain: String,
    /// `system` or the name servers asked.
    pub nameservers: Vec<String>,
    pub routing: Routing,
    pub mx_error: Option<LookupFailure>,
    pub exchangers: Vec<Exchanger>,
    pub this_host: Option<OwnPlace>,
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// The worst finding as a monitoring verdict.
    pub fn verdict(&self) -> Verdict {
        match self
            .findings
            .iter()
            .map(|f| f.severity)
            .max_by_key(|s| s.rank())
        {
            None | Some(Severity::Note) => Verdict::Ok,
            Some(Severity::Warning) => Verdict::Warning,
            Some(Severity::Unknown) => Verdict::Unknown,
            Some(Severity::Critical) => Verdict::Critical,
        }
    }

    pub(super) fn add(
        &mut self,
        severity: Severity,
        subject: Option<&str>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            subject: subject.map(str::to_string),
            message: message.into(),
        });
    }
}

/// What one address answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeReport {
    pub port: u16,
    /// True when the server greeted with 2xx.
    pub connected: bool,
    /// The failure that ended the conversation early, if any.
    #[serde(serialize_with = "as_text")]
    pub error: Option<Failure>,
    pub greeting: Option<String>,
    /// True when EHLO was accepted (false after a HELO fallback).
    pub esmtp: bool,
    /// The EHLO keywords with their parameters, as announced before STARTTLS.
    pub extensions: Vec<String>,
    pub etrn: bool,
    pub starttls: bool,
    pub pipelining: bool,
    #[serde(rename = "8bitmime")]
    pub eight_bit_mime: bool,
    /// The SIZE limit in octets; `None` when not announced or announced without a limit.
    pub size: Option<u64>,
    pub tls: Option<TlsReport>,
    #[serde(serialize_with = "as_text")]
    pub mail_from: Option<Reply>,
    #[serde(serialize_with = "as_text")]
    pub rcpt: Option<Reply>,
    /// The RCPT reply's class: true for 2xx, false otherwise; `None` when not asked or not reached.
    pub rcpt_accepted: Option<bool>,
    /// The RCPT reply code, for telling 4xx from 5xx.
    pub rcpt_code: Option<u16>,
    /// The unlikely recipient tried after an accepted one, at the same domain.
    pub unknown_rcpt: Option<String>,
    /// The reply to it.
    pub unknown_rcpt_reply: Option<String>,
    /// True when it was accepted (2xx): the host takes any local part.
    pub unknown_rcpt_accepted: Option<bool>,
}

/// The failure that ended a conversation: the server it concerns and what happened, apart, so
/// that a finding whose subject names the server already can say what happened alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `host[ip]:port`, when the failure concerns the server.
    pub peer: Option<String>,
    pub detail: String,
}

impl From<&SmtpError> for Failure {
    fn from(error: &SmtpError) -> Failure {
        Failure {
            peer: error.peer().map(str::to_string),
            detail: error.detail(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{peer}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// A reply or a failure appears in the JSON report as the one line it reads as.
fn as_text<T: fmt::Display, S: Serializer>(value: &Option<T>, out: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => out.collect_str(value),
        None => out.serialize_none(),
    }
}

/// The STARTTLS handshake and the server's certificate.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    pub protocol: String,
    pub cipher_suite: String,
    /// True when the chain leads to a trusted root and names the host.
    pub trusted: bool,
    pub trust_error: Option<String>,
    pub common_names: Vec<String>,
    pub alt_names: Vec<String>,
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub expired: bool,
}
