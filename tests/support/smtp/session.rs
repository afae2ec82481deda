//! One connection of the scripted server: each command read, noted and answered as the script
//! says, the message data taken whole before the end of the data is answered.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Ehlo, End, Received, Script, Shared};
use crate::support::tls::Stream;

const IDLE: Duration = Duration::from_secs(30);

pub(super) struct Session<'a> {
    pub(super) stream: Stream,
    pub(super) buffer: Vec<u8>,
    pub(super) shared: &'a Shared,
    pub(super) connection: usize,
    /// The pause before each byte of a reply, once trickling has begun.
    pub(super) trickling: Option<Duration>,
    pub(super) tls: bool,
}

/// A mail transaction as far as it went.
#[derive(Default)]
struct Transaction {
    mail: Option<String>,
    recipients: Vec<String>,
    /// The BDAT chunks so far; `None` before the first.
    chunks: Option<Vec<u8>>,
}

impl Session<'_> {
    pub(super) fn serve(&mut self, script: &Script) -> Option<()> {
        if let Some(tcp) = self.stream.tcp() {
            tcp.set_read_timeout(Some(Duration::from_millis(100)))
                .ok()?;
        }
        let Some(greeting) = &script.greeting else {
            // Silent server: hold the connection until the client gives up.
            while self.read_line().is_some() {}
            return None;
        };
        std::thread::sleep(script.pause);
        self.trickle_from(script, "220");
        self.reply(greeting)?;
        let mut transaction = Transaction::default();
        loop {
            let line = self.read_line()?;
            self.note(line.clone())?;
            let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
            let verb = verb.to_ascii_uppercase();
            self.trickle_from(script, &verb);
            match verb.as_str() {
                "EHLO" => {
                    let reply = self.ehlo(script);
                    self.reply(&reply)?
                }
                "HELO" => self.reply(&format!("250 {}", script.name))?,
                "STARTTLS" => match (&script.tls, &script.starttls_refusal, self.tls) {
                    (_, Some(refusal), false) => self.reply(refusal)?,
                    (Some(config), None, false) => {
                        self.reply("220 2.0.0 Ready to start TLS")?;
                        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone)
                        else {
                            return None;
                        };
                        let conn = rustls::ServerConnection::new(config.clone()).ok()?;
                        self.stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                        self.buffer.clear();
                        self.tls = true;
                        transaction = Transaction::default();
                        self.note("-- TLS".to_string())?;
                    }
                    _ => self.reply("502 5.5.1 STARTTLS not available")?,
                },
                "AUTH" => {
                    let accepted = self.authenticate(script, rest)?;
                    if accepted {
                        self.reply("235 2.7.0 Authentication successful")?
                    } else {
                        self.reply("535 5.7.8 Authentication credentials invalid")?
                    }
                }
                "ETRN" => {
                    let reply = script
                        .etrn
                        .iter()
                        .find(|(argument, _)| argument == rest)
                        .map_or(script.etrn_default.as_str(), |(_, reply)| reply.as_str())
                        .to_string();
                    self.reply(&reply)?
                }
                "MAIL" => {
                    transaction = Transaction {
                        mail: Some(rest.trim_start_matches("FROM:").to_string()),
                        ..Transaction::default()
                    };
                    self.reply("250 2.1.0 Ok")?
                }
                "RCPT" if transaction.mail.is_none() => {
                    self.reply("503 5.5.1 Error: need MAIL command")?
                }
                "RCPT" => {
                    let reply = self.rcpt(script, rest, &mut transaction)?;
                    self.reply(&reply)?
                }
                "DATA" if transaction.mail.is_none() || transaction.recipients.is_empty() => {
                    self.reply("554 5.5.1 Error: no valid recipients")?
                }
                "DATA" => {
                    self.reply(&script.data)?;
                    if !script.data.starts_with("354") {
                        continue;
                    }
                    let wire = self.read_data()?;
                    let taken = std::mem::take(&mut transaction);
                    self.end_of_data(script, taken, wire)?;
                }
                "BDAT" => {
                    let (size, last) = rest.split_once(' ').unwrap_or((rest, ""));
                    let last = last.eq_ignore_ascii_case("LAST");
                    let size: usize = size.parse().ok()?;
                    let chunk = self.read_octets(size)?;
                    if transaction.mail.is_none() || transaction.recipients.is_empty() {
                        // RFC 3030: the chunk is consumed, and the transaction is over.
                        transaction = Transaction::default();
                        self.reply("554 5.5.1 Error: no valid recipients")?;
                        continue;
                    }
                    let data = transaction.chunks.get_or_insert_with(Vec::new);
                    data.extend_from_slice(&chunk);
                    if !last {
                        self.reply(&format!("250 2.0.0 {size} octets received"))?;
                        continue;
                    }
                    let taken = std::mem::take(&mut transaction);
                    let wire = taken.chunks.clone().unwrap_or_default();
                    self.end_of_data(script, taken, wire)?;
                }
                "RSET" => {
                    transaction = Transaction::default();
                    self.reply("250 2.0.0 Ok")?
                }
                "NOOP" => self.reply("250 2.0.0 Ok")?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Some(());
                }
                _ => self.reply("502 5.5.2 Error: command not recognized")?,
            }
        }
    }

    /// The EHLO reply: the name, the keywords, then STARTTLS and AUTH where the script has them.
    fn ehlo(&self, script: &Script) -> String {
        let keywords = match &script.ehlo {
            Ehlo::Refuse(reply) => return reply.clone(),
            Ehlo::Keywords(keywords) => keywords,
        };
        let mut lines = vec![script.name.clone()];
        lines.extend(keywords.iter().cloned());
        let starttls = script.tls.is_some() || script.starttls_refusal.is_some();
        if starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if script.auth.is_some() {
            lines.push(format!("AUTH {}", script.auth_mechanisms));
        }
        let last = lines.len() - 1;
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, text)| format!("250{}{text}", if i == last { ' ' } else { '-' }))
            .collect();
        lines.join("\n")
    }

    /// The reply to one RCPT, noting the recipient when it is accepted.
    fn rcpt(&self, script: &Script, rest: &str, transaction: &mut Transaction) -> Option<String> {
        let address = rest
            .trim_start_matches("TO:")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_string();
        let local = address.split('@').next().unwrap_or_default();
        let rules = self.shared.rules.lock().ok()?.clone();
        let rule = rules
            .iter()
            .chain(&script.rcpt)
            .find(|(prefix, _)| local.starts_with(prefix.as_str()));
        if let Some((_, reply)) = rule {
            if reply.starts_with('2') {
                transaction.recipients.push(address);
            }
            return Some(reply.clone());
        }
        if script
            .recipient_limit
            .is_some_and(|limit| transaction.recipients.len() >= limit)
        {
            return Some("452 4.5.3 Error: too many recipients".to_string());
        }
        transaction.recipients.push(address);
        Some("250 2.1.5 Ok".to_string())
    }

    /// Answers the end of a message's data, or closes the connection, as the script says.
    fn end_of_data(&mut self, script: &Script, taken: Transaction, wire: Vec<u8>) -> Option<()> {
        std::thread::sleep(script.per_message);
        let text = String::from_utf8_lossy(&wire).into_owned();
        self.trickle_from(script, ".");
        let end = script
            .end_of_data
            .iter()
            .find(|(containing, _)| text.contains(containing.as_str()))
            .map(|(_, end)| end.clone());
        let reply = match end {
            Some(End::Cut) => return None,
            Some(End::Reply(reply)) => reply,
            None => "250 2.0.0 Ok: queued".to_string(),
        };
        if reply.starts_with('2') {
            self.shared.messages.lock().ok()?.push(Received {
                connection: self.connection,
                mail: taken.mail.unwrap_or_default(),
                recipients: taken.recipients,
                wire,
                tls: self.tls,
                chunked: taken.chunks.is_some(),
            });
        }
        self.reply(&reply)
    }

    fn note(&self, line: String) -> Option<()> {
        self.shared.seen.lock().ok()?.push((self.connection, line));
        Some(())
    }

    fn trickle_from(&mut self, script: &Script, verb: &str) {
        if let Some((from, pause)) = script.trickle
            && from.eq_ignore_ascii_case(verb)
        {
            self.trickling = Some(pause);
        }
    }

    fn authenticate(&mut self, script: &Script, rest: &str) -> Option<bool> {
        let (user, password) = script.auth.clone()?;
        let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
        let mechanism = mechanism.to_ascii_uppercase();
        if !script.auth_mechanisms.split(' ').any(|m| m == mechanism) {
            return Some(false);
        }
        match mechanism.as_str() {
            "PLAIN" => {
                let token = BASE64.decode(initial).ok()?;
                Some(token == format!("\0{user}\0{password}").into_bytes())
            }
            "LOGIN" => {
                self.reply("334 VXNlcm5hbWU6")?;
                let given_user = BASE64.decode(self.read_line()?).ok()?;
                self.reply("334 UGFzc3dvcmQ6")?;
                let given_password = BASE64.decode(self.read_line()?).ok()?;
                Some(given_user == user.as_bytes() && given_password == password.as_bytes())
            }
            _ => Some(false),
        }
    }

    /// Writes a reply, lines separated by `\n`, each ended with CRLF: whole, or a byte at a
    /// time once trickling has begun, until the client goes or the test ends.
    fn reply(&mut self, text: &str) -> Option<()> {
        let mut wire = text.replace('\n', "\r\n");
        wire.push_str("\r\n");
        let Some(pause) = self.trickling else {
            self.stream.write_all(wire.as_bytes()).ok()?;
            return self.stream.flush().ok();
        };
        for byte in wire.as_bytes() {
            std::thread::sleep(pause);
            if self.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            self.stream.write_all(&[*byte]).ok()?;
            self.stream.flush().ok()?;
        }
        Some(())
    }

    /// The message data up to the line holding a lone dot, as received.
    fn read_data(&mut self) -> Option<Vec<u8>> {
        let mut wire = Vec::new();
        loop {
            let line = self.read_raw_line()?;
            if line == b".\r\n" {
                return Some(wire);
            }
            wire.extend_from_slice(&line);
        }
    }

    /// The next `count` octets, as received.
    fn read_octets(&mut self, count: usize) -> Option<Vec<u8>> {
        let mut idle = Instant::now();
        while self.buffer.len() < count {
            self.read_more(&mut idle)?;
        }
        Some(self.buffer.drain(..count).collect())
    }

    /// The next line without its CRLF.
    fn read_line(&mut self) -> Option<String> {
        let line = self.read_raw_line()?;
        let text = String::from_utf8_lossy(&line);
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// The next line with its line end, as received; `None` at the end of the connection, when
    /// the test is over, or after a long silence.
    fn read_raw_line(&mut self) -> Option<Vec<u8>> {
        let mut idle = Instant::now();
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                return Some(self.buffer.drain(..=end).collect());
            }
            self.read_more(&mut idle)?;
        }
    }

    /// Waits for more octets into the buffer; `None` at the end of the connection, when the
    /// test is over, or after a long silence.
    fn read_more(&mut self, idle: &mut Instant) -> Option<()> {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) || idle.elapsed() > IDLE {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    *idle = Instant::now();
                    return Some(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }
}
