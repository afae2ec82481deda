//! etrnq: a store-and-forward mail queue for part-time connected sites.
//!
//! Every program in `src/bin/` is a page: argv parsed with its clap definition from [`args`],
//! one call into this library, and [`cli::finish`], which turns the outcome into one stderr line
//! and a `sysexits.h` status. Four kinds of program make four data flows through the modules,
//! each from argv to exit status:
//!
//! ```text
//! accept   queue-enqueue ─ submission ─┐
//!          queue-smtpd ─ smtpd ────────┴─ header, address ─ queue (draft → commit) ─ maillog
//!                        │                                  └─ queue::domains (per-domain record)
//!                        ├─ ETRN ─ smtpd::flush ─ starts queue-run -R DOMAIN
//!                        └─ ODMR ─ smtpd::odmr (AUTH, ATRN) ─ delivery down the same connection
//!
//! list     mailq ─ cli (selection) ─ queue (scan, index when current) ─ report
//!
//! deliver  queue-run ─ delivery (plan ← queue scan, selection)
//!                      ─ targets (route, dns) ─ smtp (session, transaction)
//!                      ─ outcome ─ queue (state, removal) ─ retry, bounce → queue ─ maillog
//!
//! change   queue-admin ─ admin (selection, lock) ─ queue (hold, state, removal)
//!                        └─ delivery::bounce ─ maillog
//!
//! ask      etrn-send ─ etrn ─┐
//!          mx-check ─ diagnosis (dns) ─┴─ smtp (session) ─ a line per finding
//!
//! fetch    odmr-fetch ─ odmr ─ smtp (session, AUTH, ATRN) ─ smtpd (wire, request) on the same
//!                       connection ─ hand-off (local SMTP server or command)
//! ```
//!
//! Below them all: `config` (the one configuration file), `address` (domains, addresses, hosts
//! and ports, parsed once at the edge) and `sysexits` (statuses, depending on nothing). The queue
//! module owns every path and every rename in the queue directory; nothing else writes there.

pub mod address;
pub mod admin;
pub mod args;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod diagnosis;
pub mod dns;
pub mod etrn;
pub mod header;
pub mod maillog;
pub mod odmr;
#[cfg(test)]
mod properties;
pub mod queue;
pub mod report;
pub mod route;
pub mod smtp;
pub mod smtpd;
pub mod submission;
pub mod sysexits;
