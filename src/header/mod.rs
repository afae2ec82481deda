//! The header section of an arriving message, and the one trace field etrnq adds to it.
//!
//! Both ways into the queue, local submission (`queue-enqueue`) and SMTP (`queue-smtpd`), read
//! the header section the same way: field by field, continuation lines kept with their field,
//! raw bytes kept as they came so that what is queued is what was sent. The section ends at the
//! empty line, or at the first line that is not a header field (that line is the first line of
//! the body). Local submission drops a leading mbox `From ` line ([`LeadingFrom::Drop`]), since
//! it is not a header and would push the real headers into the body; over SMTP such a line is
//! the sender's text and is kept ([`LeadingFrom::Keep`]).
//!
//! Both count `Received:` fields the same way to stop mail loops ([`exceeds_hop_limit`]), and
//! both write their `Received:` field through [`Received`], so the queue holds one trace format.
//!
//! Memory: the header section is held, and bounded: at most [`MAX_HEADER_SECTION`] octets of
//! field text (Postfix's `header_size_limit`) and one 4-octet index entry per field, so never
//! more than about 500 KB whatever the message size limit. A larger header section is refused
//! ([`HeaderError::TooLarge`]), not cut: a relay that dropped header fields would change the
//! message it was trusted to pass on (a signature, a `Received:` trail), and one that kept
//! them without a bound would give each client as much memory as it cares to send. The body
//! is never read here.
//!
//! Lines may arrive in pieces: a piece that does not end in LF is continued by the next one,
//! so a reader of unbounded local input can hand over a very long line without holding it.
//!
//! Reading the section is in `section`, the trace field and the hop limit in `trace`.

#[cfg(test)]
mod properties;
mod section;
#[cfg(test)]
mod tests;
mod trace;

pub use section::{
    Field, HeaderError, HeaderSection, LeadingFrom, Lines, MAX_HEADER_SECTION, field_name,
};
pub use trace::{Received, exceeds_hop_limit, rfc5322_date};
