//! The scripted server the client's unit tests talk to: connections on 127.0.0.1, each a
//! greeting, then [`Step`]s in order. It returns every line the client sent, line ends included.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{AddressFamily, ConnectOptions, Timeouts, Transcript};
use crate::address::Domain;

/// What the scripted server does next.
pub(super) enum Step {
    /// Read this many lines, then write the reply text.
    Lines(usize, &'static str),
    /// Read up to the lone dot, then write the reply text.
    Message(&'static str),
    /// Wait, then write the reply text without reading anything.
    After(Duration, &'static str),
    /// Read this many lines, then write the reply text one byte at a time with this pause
    /// before each byte, until it is all written or the client has gone; a client that went
    /// first leaves the line `-- cut off` among those seen.
    Trickle(usize, &'static str, Duration),
    /// Read up to the lone dot, then close the connection without a word.
    CloseAfterMessage,
    /// Read one line (STARTTLS), answer 220 and take the TLS handshake with a self-signed
    /// certificate for `sink.example`; the line `-- TLS` is seen once it is done.
    StartTls,
}

/// The connection as the server sees it, in clear or in TLS after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// Serves one connection: the greeting (nothing when empty), then the steps.
pub(super) fn server(
    greeting: &'static str,
    steps: Vec<Step>,
) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let (addr, handle) = servers(vec![(greeting, steps)]);
    let handle = std::thread::spawn(move || handle.join().unwrap().concat());
    (addr, handle)
}

/// Serves one connection after another on the same address, each with its own greeting and
/// steps; returns the lines seen on each.
pub(super) fn servers(
    scripts: Vec<(&'static str, Vec<Step>)>,
) -> (SocketAddr, JoinHandle<Vec<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        scripts
            .into_iter()
            .map(|(greeting, steps)| {
                let (stream, _) = listener.accept().unwrap();
                serve(stream, greeting, steps)
            })
            .collect()
    });
    (addr, handle)
}

fn serve(stream: TcpStream, greeting: &'static str, steps: Vec<Step>) -> Vec<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(Stream::Plain(stream));
    let mut seen = Vec::new();
    reader.get_mut().write_all(greeting.as_bytes()).unwrap();
    for step in steps {
        match step {
            Step::Lines(count, reply) => {
                if !read_lines(&mut reader, &mut seen, Some(count)) {
                    return seen;
                }
                // The client may have given up and gone; that is what some tests want.
                let _ = reader.get_mut().write_all(reply.as_bytes());
            }
            Step::Message(reply) => {
                if !read_lines(&mut reader, &mut seen, None) {
                    return seen;
                }
                let _ = reader.get_mut().write_all(reply.as_bytes());
            }
            Step::After(wait, reply) => {
                std::thread::sleep(wait);
                let _ = reader.get_mut().write_all(reply.as_bytes());
            }
            Step::Trickle(count, reply, pause) => {
                if !read_lines(&mut reader, &mut seen, Some(count)) {
                    return seen;
                }
                if !trickle(reader.get_mut(), reply, pause) {
                    seen.push("-- cut off".to_string());
                    return seen;
                }
            }
            Step::CloseAfterMessage => {
                read_lines(&mut reader, &mut seen, None);
                return seen;
            }
            Step::StartTls => {
                if !read_lines(&mut reader, &mut seen, Some(1)) {
                    return seen;
                }
                let Stream::Plain(mut tcp) = reader.into_inner() else {
                    panic!("STARTTLS twice");
                };
                tcp.write_all(b"220 2.0.0 go ahead\r\n").unwrap();
                let mut tls = rustls::ServerConnection::new(tls_config()).unwrap();
                // A client that refuses the certificate ends the handshake: nothing more to see.
                while tls.is_handshaking() {
                    if tls.complete_io(&mut tcp).is_err() {
                        seen.push("-- TLS refused".to_string());
                        return seen;
                    }
                }
                seen.push("-- TLS".to_string());
                reader = BufReader::new(Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))));
            }
        }
    }
    seen
}

/// A server configuration with a fresh self-signed certificate for `sink.example`.
fn tls_config() -> Arc<rustls::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["sink.example".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

/// Reads `count` lines, or up to the lone dot; false when the client closed first.
fn read_lines(
    reader: &mut BufReader<Stream>,
    seen: &mut Vec<String>,
    count: Option<usize>,
) -> bool {
    if count == Some(0) {
        return true;
    }
    let mut read = 0;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        read += 1;
        let line = String::from_utf8_lossy(&line).into_owned();
        let done = match count {
            Some(count) => read >= count,
            None => line == ".\r\n",
        };
        seen.push(line);
        if done {
            return true;
        }
    }
}

/// False when the client closed the connection before the whole reply was written.
fn trickle(writer: &mut Stream, reply: &str, pause: Duration) -> bool {
    reply.as_bytes().iter().all(|byte| {
        std::thread::sleep(pause);
        writer.write_all(&[*byte]).is_ok()
    })
}

/// Options with the same generous limit for every step.
pub(super) fn options(transcript: Transcript) -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
        family: AddressFamily::Any,
        transcript,
    }
}

pub(super) fn domain(text: &str) -> Domain {
    Domain::parse(text).unwrap()
}
