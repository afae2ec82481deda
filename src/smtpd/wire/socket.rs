//! The socket under a session's channel: reads that keep the deadline, and the two halves of a
//! TLS stream on it.
//!
//! Each read waits only for what is left of the deadline the channel set on the shared
//! [`Clock`], and under [`Stress`] (most of the daemon's connections taken) for no longer than
//! the short limit counted from the start of the command or the last data received. While a
//! daemon runs, a waiting read looks at the load again every second, so a limit that starts to
//! apply reaches reads already waiting. Once the deadline has passed, a read fails with
//! `TimedOut`.
//!
//! After STARTTLS both ends of the channel are [`TlsHalf`]s over one rustls stream on this same
//! socket, so the handshake and every TLS record keep the deadline too.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When the client must have sent what it is sending now, shared by the channel and the socket
/// reader under it (directly or under TLS).
pub(super) type Clock = Arc<Mutex<Timer>>;

#[derive(Debug, Default)]
pub(super) struct Timer {
    /// `None`: no limit.
    pub(super) deadline: Option<Instant>,
    /// The start of the command, or the last data received: what a stress limit counts from.
    pub(super) since: Option<Instant>,
}

/// How long a read waits at most before it looks at the load again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The daemon's load, and the short time limit while three quarters of its connections are
/// taken (Postfix's `smtpd_timeout` under stress).
#[derive(Debug, Clone)]
pub struct Stress {
    pub load: Arc<Load>,
    pub timeout: Duration,
}

/// Sessions going on now, of at most `max`.
#[derive(Debug)]
pub struct Load {
    pub active: AtomicUsize,
    pub max: usize,
}

impl Load {
    pub fn new(max: usize) -> Load {
        Load {
            active: AtomicUsize::new(0),
            max,
        }
    }

    pub fn stressed(&self) -> bool {
        self.max > 0 && self.active.load(Ordering::SeqCst) * 4 >= self.max * 3
    }
}

/// The socket under a session: each read waits only for what is left of the deadline (and,
/// under stress, of the short limit).
pub(super) struct Socket {
    pub(super) stream: TcpStream,
    pub(super) clock: Clock,
    pub(super) stress: Option<Stress>,
}

impl Socket {
    /// How long the next read may wait; an error once the deadline has passed.
    fn wait(&self) -> io::Result<Option<Duration>> {
        let timer = self
            .clock
            .lock()
            .map_err(|_| io::Error::other("clock lock poisoned"))?;
        let Some(mut deadline) = timer.deadline else {
            return Ok(None);
        };
        if let (Some(stress), Some(since)) = (&self.stress, timer.since)
            && stress.load.stressed()
        {
            deadline = deadline.min(since + stress.timeout);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // Under a daemon the load may change while this read waits: look at it again soon.
        let wait = match self.stress {
            Some(_) => left.min(LOOK_AGAIN),
            None => left,
        };
        // A zero time limit would mean none at all.
        Ok(Some(wait.max(Duration::from_millis(1))))
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let wait = self.wait()?;
            self.stream.set_read_timeout(wait)?;
            match self.stream.read(buf) {
                Err(e) if wait.is_some() && is_timeout(&e) => continue,
                other => return other,
            }
        }
    }
}

/// What a socket read that ran out of time returns.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The reading or the writing end of a TLS session. Both share one rustls stream, since TLS
/// state is one for both directions; a session reads and writes from one thread, so the lock is
/// never contended.
pub(super) struct TlsHalf(
    pub(super) Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, Socket>>>,
);

impl TlsHalf {
    fn stream(
        &self,
    ) -> io::Result<std::sync::MutexGuard<'_, rustls::StreamOwned<rustls::ServerConnection, Socket>>>
    {
        self.0
            .lock()
            .map_err(|_| io::Error::other("TLS stream lock poisoned"))
    }
}

impl Read for TlsHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream()?.read(buf)
    }
}

impl Write for TlsHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream()?.flush()
    }
}
