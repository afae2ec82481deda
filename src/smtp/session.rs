//! Opening a session: the greeting, EHLO (HELO when EHLO is refused), STARTTLS.
//!
//! After STARTTLS the server forgets what it said before (RFC 3207 §4.2), so the extensions are
//! cleared and the caller says EHLO again. Bytes received after STARTTLS's 220 and before the
//! handshake are a protocol error: they were sent in clear and would be read as if protected.

use std::sync::{Arc, Mutex};

use super::capabilities::Capabilities;
use super::command::Command;
use super::connection::{Connection, Step, Timed};
use super::error::SmtpError;
use super::reply::Reply;
use super::tls::{self, TlsClient, TlsInfo};
use crate::address::Domain;

impl Connection {
    /// Reads the greeting. A 4xx or 5xx greeting is an error carrying the server's reply.
    pub fn greeting(&mut self) -> Result<Reply, SmtpError> {
        let reply = self.read_reply()?;
        if !reply.is_positive() {
            return Err(self.rejected("greeting", reply));
        }
        Ok(reply)
    }

    /// Says EHLO, and HELO when the server refuses EHLO with a 5xx (RFC 5321 §3.2). Returns the
    /// positive reply; the extensions are in [`Connection::capabilities`].
    pub fn hello(&mut self, name: &Domain) -> Result<Reply, SmtpError> {
        let reply = self.command(&Command::Ehlo(name.clone()))?;
        if reply.is_positive() {
            self.capabilities = Capabilities::from_ehlo(&reply);
            self.extended = true;
            return Ok(reply);
        }
        if !reply.is_permanent() {
            return Err(self.rejected("EHLO", reply));
        }
        self.note(&format!(
            "server refused EHLO ({}); trying HELO",
            reply.code
        ));
        let reply = self.command(&Command::Helo(name.clone()))?;
        if !reply.is_positive() {
            return Err(self.rejected("HELO", reply));
        }
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(reply)
    }

    /// Sends STARTTLS and performs the handshake. The server forgets the session's state, so the
    /// caller says [`Connection::hello`] again next (RFC 3207 §4.2).
    pub fn starttls(&mut self, client: &TlsClient) -> Result<&TlsInfo, SmtpError> {
        let reply = self.command(&Command::StartTls)?;
        if !reply.is_positive() {
            return Err(self.rejected("STARTTLS", reply));
        }
        // Anything already received was sent in clear but would be read as if protected: the
        // STARTTLS command injection attack (CVE-2011-0411 and kin).
        if !self.received.is_empty() {
            return Err(self.protocol("server sent data before the TLS handshake"));
        }
        let verdict = Arc::new(Mutex::new(None));
        let config = client
            .config(verdict.clone())
            .map_err(|detail| self.tls_error(detail))?;
        let name = tls::server_name(self.peer.name.as_deref(), self.peer.addr.ip());
        let mut conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| self.tls_error(e.to_string()))?;
        // The whole handshake, every turn of reads and writes, is one step.
        let mut step = Step::new(self.timeouts.command);
        let mut timed = Timed {
            tcp: &self.tcp,
            step: &mut step,
            limits: &mut self.limits,
        };
        let mut handshake = Ok(());
        while handshake.is_ok() && conn.is_handshaking() {
            handshake = conn.complete_io(&mut timed).map(|_| ());
        }
        handshake.map_err(|e| self.failure(e, "during the TLS handshake"))?;
        let (protocol, cipher_suite) = tls::negotiated(&conn);
        let certificate = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| tls::certificate_info(der));
        let verified = verdict
            .lock()
            .ok()
            .and_then(|mut v| v.take())
            .unwrap_or_else(|| Err("no certificate was checked".to_string()));
        self.note(&format!(
            "TLS established: {protocol} {cipher_suite}, certificate {}",
            match &verified {
                Ok(()) => "trusted".to_string(),
                Err(reason) => format!("NOT trusted: {reason}"),
            }
        ));
        self.tls = Some(Box::new(conn));
        self.capabilities = Capabilities::default();
        self.extended = false;
        Ok(self.tls_info.insert(TlsInfo {
            protocol,
            cipher_suite,
            verified,
            certificate,
        }))
    }
}
