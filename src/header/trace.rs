//! The trace etrnq adds to a message: the `Received:` field, the RFC 5322 date it carries, and
//! the hop count that stops a mail loop.

use crate::queue::QueueId;

/// True when a message that has made `hops` hops must be refused: the `Received:` field we add
/// would take it past `max_hops`.
pub fn exceeds_hop_limit(hops: usize, max_hops: u32) -> bool {
    hops >= max_hops as usize
}

/// An RFC 5322 date, as the added `Date:` and `Received:` fields write it.
pub fn rfc5322_date(now: &chrono::DateTime<chrono::Local>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The `Received:` field etrnq adds (RFC 5321 §4.4), laid out as
///
/// ```text
/// Received: from HELO-NAME (CLIENT)        <- only for mail received over the network
///         by THIS-HOST (COMMENT) with ESMTP
///         id QUEUE-ID for <RCPT>; DATE
/// ```
///
/// Without `from`, `by` opens the first line.
pub struct Received<'a> {
    /// `helo-name (client address)`, for mail received over the network.
    pub from: Option<&'a str>,
    /// This host and a comment: `mx2.isp.example (etrnq)`.
    pub by: &'a str,
    /// The protocol: `ESMTP` or `SMTP`.
    pub with: Option<&'a str>,
    pub id: QueueId,
    /// The recipient, when there is exactly one (naming more would disclose Bcc recipients).
    pub for_recipient: Option<&'a str>,
    pub date: &'a str,
}

impl Received<'_> {
    /// The field, with `eol` after each of its lines.
    pub fn render(&self, eol: &str) -> String {
        let by = match self.with {
            Some(with) => format!("by {} with {with}", self.by),
            None => format!("by {}", self.by),
        };
        let mut out = match self.from {
            Some(from) => format!("Received: from {from}{eol}\t{by}{eol}"),
            None => format!("Received: {by}{eol}"),
        };
        out.push_str(&format!("\tid {}", self.id));
        if let Some(rcpt) = self.for_recipient {
            out.push_str(&format!(" for <{rcpt}>"));
        }
        out.push_str(&format!("; {}{eol}", self.date));
        out
    }
}
