//! etrnq: a store-and-forward mail queue for part-time connected sites.
//!
//! The data flow reads top to bottom: argv → queue → route → smtp → retry/bounce → report. Each
//! program in `src/bin/` parses its arguments, calls into these modules and maps the outcome to a
//! `sysexits.h` status through [`cli::finish`].

pub mod address;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod diagnosis;
pub mod dns;
pub mod etrn;
pub mod header;
pub mod maillog;
#[cfg(test)]
mod properties;
pub mod queue;
pub mod report;
pub mod route;
pub mod smtp;
pub mod smtpd;
pub mod submission;
pub mod sysexits;
