//! The SMTP server of the backup-MX role: it takes mail for the sites it backs up, holds it in
//! the queue, and answers ETRN by starting a queue run for the site.
//!
//! # Summary
//!
//! ```no_run
//! use std::sync::Arc;
//! use etrnq::config::Config;
//! use etrnq::maillog::MailLog;
//! use etrnq::smtpd::{self, Limits, RunCommand, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(None)?;
//! let log = Arc::new(MailLog::open(&config.log, "queue-smtpd"));
//! let run = RunCommand {
//!     program: "/usr/sbin/queue-run".into(),
//!     config: None,
//!     queue_dir: config.queue_dir.clone(),
//!     hand_off: None,
//! };
//! let server = Arc::new(Server::new(config.clone(), Limits::new(&config), run, log)?);
//! let listeners = smtpd::listen(&["127.0.0.1:2525".parse()?])?;
//! smtpd::serve(server, listeners)?; // until SIGTERM or SIGINT
//! # Ok(())
//! # }
//! ```
//!
//! # Description
//!
//! A session (`session`) is in one phase at a time (connected, greeted, inside a mail
//! transaction) and answers every command with a [`crate::smtp::Reply`], the type the client
//! side parses replies into, written to the wire in one place. It greets with this host's name
//! (`hostnames[0]`), answers HELO and EHLO (PIPELINING, SIZE, 8BITMIME, CHUNKING,
//! ENHANCEDSTATUSCODES, ETRN, and STARTTLS when `tls_cert` and `tls_key` are configured), and
//! takes MAIL, RCPT, DATA, BDAT, RSET, NOOP, VRFY (252), HELP, QUIT and STARTTLS. A
//! recipient is accepted only when its domain is one of `relay_domains` or `hold_domains`,
//! exactly (a subdomain must be listed itself; lists in files are read again when they change,
//! [`taken`]); every other recipient gets `554 5.7.1 relay access denied`, and so does one
//! whose local part routes onward (`%`, `!`, a quoted `@`) unless `allow_untrusted_routing` is
//! set. Where `[relay_recipients]` lists a domain's users ([`recipients`]), anyone else there gets
//! `550 5.1.1` at RCPT. `RCPT TO:<postmaster>` without a domain is taken for the configured
//! `postmaster` address, else postmaster at this host's name (RFC 5321 §4.5.1). The message is
//! written to a queue draft as it arrives, after one added `Received:` field, and committed
//! ([`crate::queue::Draft::commit`]) before the 250 is sent. While the queue's file system has
//! less free space than `queue_min_free`, MAIL (and a commit) get `452 4.3.1`.
//!
//! ETRN `domain` and `@domain` ([`flush`]) are answered for the same domains: 251 when nothing
//! waits, 253 with the number of messages when something does, and then a `queue-run -R` for
//! that node is started, or, while one is going, one more is scheduled to follow it.
//! `#queue` gets 459: there are no named queues. Each client address has an ETRN allowance
//! ([`clients`]); beyond it, 458.
//!
//! STARTTLS (RFC 3207, `tls`) answers 220 and runs the TLS handshake on the same connection;
//! the session then starts over from the greeting: the client must EHLO again, and what it said
//! before counts for nothing. A message received over TLS gets `with ESMTPS` in its `Received:`
//! field. Without a certificate STARTTLS gets 502, as any command not implemented.
//!
//! [`serve`] runs the daemon: listeners on several addresses, one thread per connection, a
//! connection limit and a smaller one per client address (421 beyond either), shorter time
//! limits while most connections are taken, and a clean stop on SIGTERM or SIGINT.
//! [`serve_stdio`] runs one session on standard input and output, as under inetd, tcpserver or
//! a systemd socket with `Accept=yes`; the queue runs its ETRNs ask for are handed to processes
//! of their own, so the session ends when its client leaves.
//!
//! It is written here, not taken from a crate, because the state machine is the product: its
//! replies, its limits and the instant it says 250 are what the ISP's administrator relies on,
//! and the SMTP server crates available are asynchronous frameworks that leave exactly those
//! decisions to their user.
//!
//! # Promises
//!
//! - A 250 after DATA, or after `BDAT LAST` (RFC 3030 CHUNKING), means the message is on disk:
//!   data and envelope fsynced and renamed into the queue. Anything refused, cut off or timed
//!   out leaves nothing in the queue.
//! - Replies follow commands in order, however many the client pipelines.
//! - Only `<CRLF>.<CRLF>` ends message data, and a BDAT chunk ends after the octets its command
//!   counted. A bare CR or LF, in a command or in the data, is refused, never reinterpreted
//!   (SMTP smuggling); the data is still read to its real end, every chunk to its last octet.
//! - Limits: message size (552 at MAIL for a larger `SIZE=`, and after DATA for larger data,
//!   which is read to its end first), a header section of at most 100 KiB (552 after DATA),
//!   recipients per message (452 beyond), 512-octet command lines (500), 1000-octet data lines
//!   (the message is refused), a deadline for each whole command line and a minimum data rate
//!   during DATA and BDAT chunks, a time limit on each write, errors per session (421 and hang-up), ETRN
//!   commands per session and per client address (458 beyond), sessions per client address
//!   (421 beyond).
//! - Memory per session is fixed, whatever `max_message_size` says: at most 100 KiB of header
//!   text and its field index (under 400 KiB together), 32 KiB of socket buffers, a 64 KiB
//!   queue-file buffer, one data line, and the TLS buffers; the body streams to disk.
//! - The hop limit (`max_hops`) counts `Received:` fields exactly as local submission does.
//! - Every session is logged: connect, HELO, each message with its recipients, each refusal,
//!   each ETRN and what it started, disconnect.
//!
//! # Security
//!
//! - Never an open relay: acceptance is a list lookup on the recipient's validated domain, and
//!   a local part that names another hop is refused, since the site's own MTA may honour it.
//! - Nothing from the network reaches a shell. A queue run is started with an argument vector:
//!   the program fixed at start-up, `-R` and a validated [`crate::queue::selection::DomainPattern`].
//!   ETRN leads to at most one run per node going and one waiting, across every session and
//!   process on the queue, and only for configured domains, so the number of processes clients
//!   can cause is bounded by the configuration.
//! - Every line has a length limit and every step a deadline; the header section is the only
//!   part of a message held in memory, and it is bounded. The deadlines stay on the socket
//!   under TLS, and so cover the handshake and every record.
//! - No plaintext injection (CVE-2011-0411 and its kin): a client that sends anything after
//!   STARTTLS before the handshake gets 501 and the connection is closed, so nothing sent in clear
//!   is ever taken as a command of the TLS session. Bytes that arrive only after that check reach
//!   the TLS layer, where they are not a valid record and fail the handshake.
//! - The certificate and key are read when the server starts: a missing or malformed file stops
//!   it with EX_CONFIG naming the key, rather than failing every handshake later.
//!
//! # Limits
//!
//! - No AUTH, DSN, SMTPUTF8 or CHUNKING: a backup MX takes mail from other MTAs.
//! - STARTTLS encrypts; it authenticates neither side: no client certificates are asked for,
//!   and what the sending MTA checks of ours is its own policy. A failed handshake ends the
//!   session (it is logged); the client retries, in clear or elsewhere, as its policy says.
//! - The certificate is read once: a renewed one is used after a restart (in inetd mode, by
//!   the next session).
//! - STARTTLS needs a socket: in inetd mode over a pipe it gets 502.
//! - No reverse DNS: the client is named by its address in logs and in `Received:`.
//! - A client is its address: IPv6 clients that spread over a prefix count as many clients.
//! - In inetd mode each session is its own process: the per-client session limit is the inetd
//!   server's business (tcpserver `-c`, systemd `MaxConnectionsPerSource=`), and the ETRN
//!   allowance holds per session only. The order of queue runs holds across processes.
//! - In inetd mode over a pipe (not a socket) there are no time limits.

pub mod clients;
mod daemon;
pub mod flush;
pub mod odmr;
pub mod recipients;
pub(crate) mod request;
mod session;
pub mod taken;
mod tls;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::address::{Address, Domain};
use crate::config::{Config, ConfigError};
use crate::maillog::MailLog;
use crate::queue::{Queue, QueueError};
use crate::sysexits::{Status, Sysexit};

pub use daemon::{listen, serve, serve_all, serve_stdio};
pub use flush::RunCommand;
use wire::Channel;

/// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for a command; here, for a whole
/// command line.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// The data window: how long DATA may go without the minimum rate paying for more time (the
/// client's own limit per block is 3 minutes).
pub const DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// Octets per second message data must average (Postfix's `smtpd_min_data_rate`).
pub const MIN_DATA_RATE: u64 = 500;
/// The time limit for commands and data while most connections are taken (Postfix's
/// `smtpd_timeout` under stress).
pub const STRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions at once.
pub const MAX_CONNECTIONS: usize = 100;
/// Sessions at once from one client address (Postfix's anvil has 50 of 100).
pub const MAX_CLIENT_CONNECTIONS: usize = 10;
/// RFC 5321 §4.5.3.1.8 asks servers to accept at least 100 recipients.
pub const MAX_RECIPIENTS: usize = 100;
/// Client errors after which a session is ended with 421, as Postfix's hard error limit.
pub const MAX_ERRORS: u32 = 20;
/// ETRN commands one session may send; sendmail starts to slow a session down after 7.
pub const MAX_ETRN: u32 = 10;

/// The limits the server enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub max_etrn: u32,
    /// The deadline for each whole command line.
    pub command_timeout: Duration,
    /// The data window (see [`MIN_DATA_RATE`]).
    pub data_timeout: Duration,
    /// Octets per second; 0: the data window is a fixed deadline.
    pub min_data_rate: u64,
    /// Both time limits while three quarters of the connections are taken.
    pub stress_timeout: Duration,
    pub max_connections: usize,
    pub max_client_connections: usize,
}

impl Limits {
    /// The defaults, with the configuration's size limit.
    pub fn new(config: &Config) -> Limits {
        Limits {
            max_message_size: config.max_message_size,
            max_recipients: MAX_RECIPIENTS,
            max_errors: MAX_ERRORS,
            max_etrn: MAX_ETRN,
            command_timeout: COMMAND_TIMEOUT,
            data_timeout: DATA_TIMEOUT,
            min_data_rate: MIN_DATA_RATE,
            stress_timeout: STRESS_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_client_connections: MAX_CLIENT_CONNECTIONS,
        }
    }
}

/// A server failure that stops the program (never a session's trouble, which is logged).
#[derive(Debug, thiserror::Error)]
pub enum SmtpdError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// `tls_cert` or `tls_key` cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Sysexit for SmtpdError {
    fn status(&self) -> Status {
        match self {
            // Another daemon on the port, or an address not up yet: worth retrying.
            SmtpdError::Listen { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                Status::TempFail
            }
            SmtpdError::Listen { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Status::NoPerm
            }
            SmtpdError::Listen { .. } | SmtpdError::Io { .. } => Status::OsErr,
            SmtpdError::Queue(e) => e.status(),
            SmtpdError::Config(e) => e.status(),
        }
    }
}

/// What `queue-smtpd --flush NODE` does: the ETRN request an inetd session handed off, seen
/// through in this process, which waits as long as the run before it takes (see [`flush`]).
pub fn flush_handed_off(
    config: &Config,
    run: RunCommand,
    log: Arc<MailLog>,
    node: &crate::queue::selection::DomainPattern,
) -> Result<(), SmtpdError> {
    let queue = Queue::open(&config.queue_dir)?;
    let flusher = flush::Flusher::new(
        RunCommand {
            hand_off: None,
            ..run
        },
        log,
    );
    flusher
        .request_here(&queue, node)
        .map_err(|source| SmtpdError::Io {
            action: "cannot order the queue run",
            source,
        })
}

/// Who is on the other end of a session.
#[derive(Debug, Clone, Copy)]
enum Client {
    Tcp(SocketAddr),
    /// Standard input that is not a socket.
    Unknown,
}

impl Client {
    /// The address as RFC 5321 writes it in a `Received:` field: `[192.0.2.1]`,
    /// `[IPv6:2001:db8::1]`.
    /// The address sessions are counted and ETRN allowances kept under.
    fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Client::Tcp(addr) => Some(addr.ip().to_canonical()),
            Client::Unknown => None,
        }
    }

    fn literal(&self) -> String {
        match self {
            Client::Tcp(addr) => match addr.ip().to_canonical() {
                std::net::IpAddr::V4(ip) => format!("[{ip}]"),
                std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
            },
            Client::Unknown => "unknown".to_string(),
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Tcp(addr) => write!(f, "[{}]:{}", addr.ip().to_canonical(), addr.port()),
            Client::Unknown => f.write_str("unknown"),
        }
    }
}

/// What every session shares: configuration, queue, log, the ETRN runs, the clients.
pub struct Server {
    hostname: Domain,
    config: Config,
    limits: Limits,
    queue: Queue,
    log: Arc<MailLog>,
    flusher: Arc<flush::Flusher>,
    recipients: recipients::RelayRecipients,
    /// The relay and hold domains in use, read again when their files change.
    taken: taken::Taken,
    clients: clients::Clients,
    /// Present when `tls_cert` and `tls_key` are configured: STARTTLS is offered.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The daemon's sessions going on now (an inetd session counts none).
    load: Arc<wire::Load>,
    stopping: AtomicBool,
    /// Present when the ODMR service runs ([`Server::with_odmr`]).
    odmr: Option<odmr::Provider>,
}

/// Which service a listener or a session offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Mail for the relay and hold domains, and ETRN.
    Smtp,
    /// ODMR (RFC 2645): AUTH and ATRN, no mail taken ([`odmr`]).
    Odmr,
}

impl Server {
    /// Opens the queue and loads the STARTTLS certificate, if one is configured; `run` says how
    /// ETRN starts a queue run.
    pub fn new(
        config: Config,
        limits: Limits,
        run: RunCommand,
        log: Arc<MailLog>,
    ) -> Result<Server, SmtpdError> {
        let tls = tls::server_config(&config)?;
        let recipients = recipients::RelayRecipients::load(&config)?;
        let load = Arc::new(wire::Load::new(limits.max_connections));
        let queue = Queue::open(&config.queue_dir)?;
        Ok(Server {
            tls,
            hostname: config.primary_hostname(),
            flusher: Arc::new(flush::Flusher::new(run, Arc::clone(&log))),
            recipients,
            taken: taken::Taken::new(&config),
            clients: clients::Clients::default(),
            config,
            limits,
            queue,
            log,
            load,
            stopping: AtomicBool::new(false),
            odmr: None,
        })
    }

    /// Sets up the ODMR service: reads `odmr_accounts`, which must exist and be usable.
    pub fn with_odmr(mut self) -> Result<Server, SmtpdError> {
        self.odmr = Some(odmr::Provider::load(&self.config)?);
        Ok(self)
    }

    /// Where mail to the bare `postmaster` goes.
    pub fn postmaster(&self) -> Address {
        self.config
            .postmaster
            .clone()
            .unwrap_or_else(|| Address::postmaster(&self.hostname))
    }

    /// The short time limits that apply while three quarters or more of the daemon's
    /// connections are taken, so that idle and slow clients make room.
    fn stress(&self) -> wire::Stress {
        wire::Stress {
            load: Arc::clone(&self.load),
            timeout: self.limits.stress_timeout,
        }
    }

    /// True when mail for `domain` is taken: it is listed itself in `relay_domains` or
    /// `hold_domains`, as they are now ([`taken`]).
    pub fn accepts(&self, domain: &Domain) -> bool {
        self.taken.accepts(domain, &self.log)
    }

    /// Runs one session of `profile` over `channel` to its end.
    fn session(&self, channel: Channel, client: Client, profile: Profile) {
        match (profile, &self.odmr) {
            (Profile::Odmr, Some(provider)) => odmr::run(self, provider, channel, client),
            (Profile::Odmr, None) => self.log.warning(&format!(
                "ODMR connection from {client}, but ODMR is not set up"
            )),
            (Profile::Smtp, _) => session::run(self, channel, client),
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.flusher.stop();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits for the queue runs ETRN started.
    fn wait_for_runs(&self) {
        self.flusher.wait_all();
    }
}
