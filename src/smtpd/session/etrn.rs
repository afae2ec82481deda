//! ETRN (RFC 1985) in a session: the reply to a request for a queue run, and the run it starts.
//!
//! ETRN is answered between transactions of a greeted session, for the domains this server
//! takes mail for, and only as often as the client's allowance and the session's `max_etrn`
//! say: 251 when nothing waits, 253 with the number of messages when something does, after the
//! run for the node was started or scheduled ([`super::super::flush`]); 458 when it cannot be
//! (an allowance spent, a queue that cannot be read, a run that cannot start), 459 for a node
//! that is not allowed (a named queue, a domain not ours). Each ETRN is logged with its reply.
//! ETRNs beyond the session's limit count as client errors.

use std::io;

use crate::queue::selection::DomainPattern;
use crate::smtp::{EtrnArgument, Reply};

use super::super::flush::{self, Requested};
use super::{Flow, Session};

impl Session<'_> {
    pub(super) fn etrn(&mut self, argument: EtrnArgument) -> io::Result<Flow> {
        self.last = "ETRN";
        if let Err(wrong) = self.phase.may_etrn() {
            return self.error(wrong.reply());
        }
        self.etrns += 1;
        let reply = self.etrn_reply(&argument);
        self.server.log.info(&format!(
            "etrn from {}: ETRN {argument}: {reply}",
            self.client
        ));
        if self.etrns > self.server.limits.max_etrn {
            return self.error(reply);
        }
        self.reply(reply)
    }

    fn etrn_reply(&self, argument: &EtrnArgument) -> Reply {
        let server = self.server;
        if self.etrns > server.limits.max_etrn {
            return Reply::new(
                458,
                format!(
                    "4.7.0 Unable to queue messages for node {argument}: more than {} ETRN commands in one session",
                    server.limits.max_etrn
                ),
            );
        }
        let node = match argument {
            EtrnArgument::Domain(domain) => DomainPattern::Exact(domain.clone()),
            EtrnArgument::Subdomains(domain) => DomainPattern::WithSubdomains(domain.clone()),
            EtrnArgument::Queue(_) => {
                return Reply::new(
                    459,
                    format!(
                        "4.5.4 Node {argument} not allowed: this server has no named queues; ETRN a domain"
                    ),
                );
            }
        };
        let (DomainPattern::Exact(domain) | DomainPattern::WithSubdomains(domain)) = &node;
        if !server.accepts(domain) {
            return Reply::new(
                459,
                format!(
                    "4.7.1 Node {argument} not allowed: not a domain this server queues mail for"
                ),
            );
        }
        if let Some(ip) = self.client.ip()
            && !server.clients.take_etrn(ip, std::time::Instant::now())
        {
            return Reply::new(
                458,
                format!(
                    "4.7.0 Unable to queue messages for node {argument}: too many ETRN requests from {}; try again later",
                    self.client.literal()
                ),
            );
        }
        let count = match flush::pending(&server.queue, &node) {
            Ok(count) => count,
            Err(e) => {
                server
                    .log
                    .warning(&format!("etrn: cannot read the queue: {e}"));
                return Reply::new(
                    458,
                    format!("4.3.0 Unable to queue messages for node {argument}"),
                );
            }
        };
        if count == 0 {
            return Reply::new(
                251,
                format!("2.0.0 OK, no messages waiting for node {argument}"),
            );
        }
        match server.flusher.request(&server.queue, &node) {
            Ok(Requested::Started) => Reply::new(
                253,
                format!("2.0.0 OK, {count} pending messages for node {argument} started"),
            ),
            Ok(Requested::Scheduled) => {
                server.log.info(&format!(
                    "etrn: a run for {node} is going; one more is scheduled to follow it"
                ));
                Reply::new(
                    253,
                    format!(
                        "2.0.0 OK, {count} pending messages for node {argument}; delivery already in progress, one more run follows it"
                    ),
                )
            }
            Ok(Requested::AlreadyScheduled) => {
                server.log.info(&format!(
                    "etrn: a run for {node} is going and one more is scheduled; nothing more to do"
                ));
                Reply::new(
                    253,
                    format!(
                        "2.0.0 OK, {count} pending messages for node {argument}; delivery already in progress, one more run already scheduled"
                    ),
                )
            }
            Err(e) => {
                server
                    .log
                    .warning(&format!("etrn: cannot start queue-run: {e}"));
                Reply::new(
                    458,
                    format!("4.3.0 Unable to queue messages for node {argument}"),
                )
            }
        }
    }
}
