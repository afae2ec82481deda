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

/// Ends a test that cannot run on this machine (no root, a package missing): outside CI it
/// prints "skipped: REASON" and the caller returns; under `CI=true` it fails instead, so a
/// green CI run proves every test ran. Every test that may skip goes through here.
pub fn skip(reason: impl std::fmt::Display) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI every test must run, and this one cannot: {reason}"
    );
    eprintln!("skipped: {reason}");
}

/// True when `program` is on the search path; else the test is skipped through [`skip`],
/// naming the Debian package (contrib/run-tests.sh installs it).
pub fn has_program(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if !found {
        skip(format!(
            "{program} is not installed (Debian package {package}; contrib/run-tests.sh installs it)"
        ));
    }
    found
}
