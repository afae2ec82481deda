//! After `250 OK now reversing the connection`: the provider becomes the SMTP client on the
//! same connection and delivers the domains' held mail down it.
//!
//! The channel gives up its socket and TLS session ([`Channel::into_parts`]); a client session
//! goes on over them ([`Connection::over`]): the customer's greeting, EHLO (HELO when refused),
//! no STARTTLS (the link is as protected as it was before ATRN). The delivery engine then runs
//! as `queue-run -R` for the domains would, each exactly, with the connection as the one
//! destination ([`Turnaround`]), and QUIT ends it.
//!
//! Promises: nothing is counted as delivered but a 250 to a final dot; when the customer goes
//! away mid-way, what it did not take stays queued (deferred) for its next ATRN.

use std::sync::Arc;

use crate::address::Domain;
use crate::delivery::{self, RunOptions, Turnaround};
use crate::queue::selection::{DomainPattern, Selection};
use crate::smtp::{ConnectOptions, Connection, Peer};
use crate::smtpd::wire::Channel;
use crate::smtpd::{Client, Server};

/// Delivers the mail for `domains` down the connection; returns what the disconnect log line
/// adds.
pub fn deliver(
    server: &Server,
    channel: Channel,
    client: Client,
    user: &str,
    domains: &[Domain],
) -> String {
    let (tcp, tls) = match channel.into_parts() {
        Ok(parts) => parts,
        Err(e) => return format!(" (cannot turn the connection around: {e})"),
    };
    let Client::Tcp(addr) = client else {
        return " (no socket to turn around)".to_string();
    };
    let peer = Peer {
        name: Some(user.to_string()),
        addr,
    };
    let mut connection = Connection::over(
        tcp,
        tls.map(rustls::Connection::Server),
        peer,
        &ConnectOptions::default(),
    );
    let opened = connection
        .greeting()
        .and_then(|_| connection.hello(&server.hostname));
    if let Err(e) = opened {
        server.log.warning(&format!(
            "ODMR turnaround with {client} user={user} failed: {e}"
        ));
        return format!(" (turnaround failed: {e})");
    }
    let turnaround = Arc::new(Turnaround::new(connection));
    let options = RunOptions {
        selection: Selection {
            domains: domains
                .iter()
                .filter_map(|d| DomainPattern::parse(d.as_str()).ok())
                .collect(),
            ..Selection::default()
        },
        force: true,
        jobs: 1,
        turnaround: Some(Arc::clone(&turnaround)),
        ..RunOptions::default()
    };
    let ran = delivery::run(&server.queue, &server.config, &options, &server.log);
    drop(options);
    if let Some(connection) = Arc::into_inner(turnaround).and_then(Turnaround::into_connection) {
        connection.quit();
    }
    match ran {
        Ok(summary) => format!(
            " sent={} deferred={} failed={} busy={}",
            summary.sent, summary.deferred, summary.failed, summary.busy
        ),
        Err(e) => {
            server
                .log
                .warning(&format!("ODMR run for {client} user={user} failed: {e}"));
            format!(" (run failed: {e})")
        }
    }
}
