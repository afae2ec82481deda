//! The scripted server the client's unit tests talk to: one connection on 127.0.0.1, a greeting,
//! then [`Step`]s in order. It returns every line the client sent, line ends included.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
}

/// Serves one connection: the greeting (nothing when empty), then the steps.
pub(super) fn server(
    greeting: &'static str,
    steps: Vec<Step>,
) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        writer.write_all(greeting.as_bytes()).unwrap();
        for step in steps {
            match step {
                Step::Lines(count, reply) => {
                    if !read_lines(&mut reader, &mut seen, Some(count)) {
                        return seen;
                    }
                    // The client may have given up and gone; that is what some tests want.
                    let _ = writer.write_all(reply.as_bytes());
                }
                Step::Message(reply) => {
                    if !read_lines(&mut reader, &mut seen, None) {
                        return seen;
                    }
                    let _ = writer.write_all(reply.as_bytes());
                }
                Step::After(wait, reply) => {
                    std::thread::sleep(wait);
                    let _ = writer.write_all(reply.as_bytes());
                }
                Step::Trickle(count, reply, pause) => {
                    if !read_lines(&mut reader, &mut seen, Some(count)) {
                        return seen;
                    }
                    if !trickle(&mut writer, reply, pause) {
                        seen.push("-- cut off".to_string());
                        return seen;
                    }
                }
                Step::CloseAfterMessage => {
                    read_lines(&mut reader, &mut seen, None);
                    return seen;
                }
            }
        }
        seen
    });
    (addr, handle)
}

/// Reads `count` lines, or up to the lone dot; false when the client closed first.
fn read_lines(
    reader: &mut BufReader<TcpStream>,
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
fn trickle(writer: &mut TcpStream, reply: &str, pause: Duration) -> bool {
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
