//! What the end-to-end suites share: one sandbox, one scripted SMTP server, and the servers and
//! clients around them.
//!
//! - `site`: a mail site in a temporary directory (queue, configuration, log) and the programs
//!   run against it; `queue_files`: its queue read and written file by file.
//! - `smtp`: the scripted SMTP server, every hostile behaviour a suite needs one builder call.
//! - `daemon`: queue-smtpd on a free loopback port, raw SMTP sessions and swaks against it.
//! - `odmr`: a provider with the ODMR service and two accounts, and the customer up to ATRN.
//! - `dns`: a DNS server on loopback with the zones the MX tests need; `tls`: certificates made
//!   for one run.
//! - `rng`: a seeded generator for the trials that need chance.
//!
//! Everything here works on 127.0.0.0/8 and temporary directories only, and everything a test
//! starts stops when its handle is dropped. Each suite uses its own part of this tree, so unused
//! items are not warned about.

#![allow(dead_code)]

pub mod daemon;
pub mod dns;
pub mod odmr;
pub mod queue_files;
pub mod rng;
pub mod site;
pub mod smtp;
pub mod tls;
