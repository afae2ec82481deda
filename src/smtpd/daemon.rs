//! Where sessions come from: listening sockets (the daemon) or standard input (inetd mode).
//!
//! The daemon listens on every address given, runs each session on a thread of its own, and
//! admits at most `max_connections` sessions at once and `max_client_connections` from one
//! address. A client beyond either limit gets one `421 4.7.0` line, written without a thread
//! and without waiting, and the connection is closed. A signal (SIGTERM, SIGINT) closes the
//! listeners, tells every session to end after the command or commit it is in, and waits for
//! the sessions and for the queue runs ETRN started.
//!
//! In inetd mode one session runs on standard input and output; when standard input is a
//! socket the client's address is known and time limits apply, over a pipe there are none.
//!
//! Limits: a client is counted by its address only, and a descriptor shortage at accept drops
//! that client (it retries) without stopping the daemon.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, sockopt};

use crate::smtp::Reply;

use super::{Channel, Client, Profile, Server, SmtpdError};

/// Opens a listening socket on each address. An IPv6 socket takes IPv6 only, so `0.0.0.0:25`
/// and `[::]:25` can both be given, as administrators list them for Postfix and sendmail.
pub fn listen(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, SmtpdError> {
    addrs
        .iter()
        .map(|&addr| {
            let bound = match addr {
                SocketAddr::V4(_) => TcpListener::bind(addr),
                SocketAddr::V6(v6) => listen_v6_only(SockaddrIn6::from(v6)),
            };
            bound.map_err(|source| SmtpdError::Listen { addr, source })
        })
        .collect()
}

fn listen_v6_only(addr: SockaddrIn6) -> io::Result<TcpListener> {
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    socket::listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Serves every listener until SIGTERM or SIGINT, at most `max_connections` sessions at once
/// and `max_client_connections` from one address; a client beyond either gets 421 at once.
///
/// On a signal: the listeners close, sessions are told to end (each finishes the command or
/// the commit it is in, then gets 421), the program waits for them and for the queue runs ETRN
/// started, and returns.
pub fn serve(server: Arc<Server>, listeners: Vec<TcpListener>) -> Result<(), SmtpdError> {
    let listeners = listeners.into_iter().map(|l| (l, Profile::Smtp)).collect();
    serve_all(server, listeners)
}

/// [`serve`] with listeners of either service: each session gets its listener's profile.
pub fn serve_all(
    server: Arc<Server>,
    listeners: Vec<(TcpListener, Profile)>,
) -> Result<(), SmtpdError> {
    let io = |action| move |source| SmtpdError::Io { action, source };
    // A signal writes a byte here; the accept loop polls it beside the listeners.
    let (wake, alarm) = UnixStream::pair().map_err(io("cannot create a socket pair"))?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let alarm = alarm.try_clone().map_err(io("cannot duplicate a socket"))?;
        signal_hook::low_level::pipe::register(signal, alarm)
            .map_err(io("cannot handle signals"))?;
    }
    for (listener, _) in &listeners {
        listener
            .set_nonblocking(true)
            .map_err(io("cannot set up a listener"))?;
    }
    let names: Vec<String> = listeners
        .iter()
        .filter_map(|(l, profile)| {
            let addr = l.local_addr().ok()?;
            Some(match profile {
                Profile::Smtp => addr.to_string(),
                Profile::Odmr => format!("{addr} (ODMR)"),
            })
        })
        .collect();
    server
        .log
        .info(&format!("daemon started: listening on {}", names.join(" ")));

    let sessions: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    'accepting: loop {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = listeners
                .iter()
                .map(|(l, _)| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .chain([PollFd::new(wake.as_fd(), PollFlags::POLLIN)])
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io("cannot wait for connections")(e.into())),
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready.last() == Some(&true) {
            break 'accepting;
        }
        for ((listener, profile), _) in listeners.iter().zip(&ready).filter(|(_, ready)| **ready) {
            loop {
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of descriptors and the like: the client was not accepted and
                        // will retry; the daemon goes on.
                        server.log.warning(&format!("accept failed: {e}"));
                        break;
                    }
                };
                let limits = &server.limits;
                if server.load.active.load(Ordering::SeqCst) >= limits.max_connections {
                    refuse(&server, stream, peer, Crowd::Server(limits.max_connections));
                    continue;
                }
                let ip = peer.ip().to_canonical();
                if !server.clients.admit(ip, limits.max_client_connections) {
                    refuse(
                        &server,
                        stream,
                        peer,
                        Crowd::Client(limits.max_client_connections),
                    );
                    continue;
                }
                next_id += 1;
                let id = (next_id, *profile);
                threads.push(start_session(&server, stream, peer, id, &sessions));
            }
        }
        threads.retain(|thread| !thread.is_finished());
    }

    drop(listeners);
    server.stop();
    server.log.info("stopping: no longer accepting connections");
    if let Ok(sessions) = sessions.lock() {
        for stream in sessions.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    server.wait_for_runs();
    server.log.info("daemon stopped");
    Ok(())
}

/// Runs a session on a thread of its own; the client was counted in by [`Clients::admit`] and
/// is counted out when the session ends.
///
/// [`Clients::admit`]: super::clients::Clients::admit
fn start_session(
    server: &Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    (id, profile): (u64, Profile),
    sessions: &Arc<Mutex<HashMap<u64, TcpStream>>>,
) -> JoinHandle<()> {
    let (server, sessions) = (Arc::clone(server), Arc::clone(sessions));
    server.load.active.fetch_add(1, Ordering::SeqCst);
    std::thread::spawn(move || {
        let registered = stream
            .try_clone()
            .ok()
            .and_then(|clone| sessions.lock().ok().map(|mut map| map.insert(id, clone)));
        // An accepted socket may inherit the listener's non-blocking mode on some systems.
        let channel = stream
            .set_nonblocking(false)
            .and_then(|()| Channel::tcp(stream, Some(server.stress())));
        match channel {
            Ok(channel) => server.session(channel, Client::Tcp(peer), profile),
            Err(e) => server
                .log
                .warning(&format!("cannot set up a session for [{}]: {e}", peer.ip())),
        }
        if registered.is_some()
            && let Ok(mut map) = sessions.lock()
        {
            map.remove(&id);
        }
        server.clients.leave(peer.ip().to_canonical());
        server.load.active.fetch_sub(1, Ordering::SeqCst);
    })
}

/// Which limit a refused client ran into.
enum Crowd {
    Server(usize),
    Client(usize),
}

/// Says 421 to a client beyond a connection limit and closes, without a thread and without
/// waiting: the socket is new, so its send buffer takes the line at once, and a client that
/// does not read it loses nothing but the explanation.
fn refuse(server: &Server, mut stream: TcpStream, peer: SocketAddr, crowd: Crowd) {
    let ip = peer.ip().to_canonical();
    let (log, reply) = match crowd {
        Crowd::Server(limit) => (
            format!(
                "too many connections ({limit}); refused [{ip}]:{}",
                peer.port()
            ),
            "too many connections".to_string(),
        ),
        Crowd::Client(limit) => (
            format!(
                "too many connections from [{ip}] ({limit}); refused [{ip}]:{}",
                peer.port()
            ),
            format!("too many connections from [{ip}]"),
        ),
    };
    server.log.warning(&log);
    let reply = Reply::new(
        421,
        format!("4.7.0 {} Error: {reply}; try again later", server.hostname),
    );
    let mut wire = Vec::new();
    let _ = reply.write_to(&mut wire);
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(&wire);
}

/// One session on standard input and output (inetd, tcpserver, systemd `Accept=yes`). When
/// standard input is a socket the client's address is known and time limits apply.
///
/// When the session ends, standard input and output are pointed at `/dev/null` so the client
/// sees the connection close. Queue runs asked for by ETRN were handed to processes of their
/// own (see [`super::flush`]) when the server was set up to; only runs watched by threads of
/// this process are waited for.
pub fn serve_stdio(server: &Server, profile: Profile) -> Result<(), SmtpdError> {
    let io = |action| move |source| SmtpdError::Io { action, source };
    let stdin: OwnedFd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(io("cannot use standard input"))?;
    let socket = TcpStream::from(stdin);
    let (channel, client) = match socket.peer_addr() {
        Ok(peer) => (
            Channel::tcp(socket, None).map_err(io("cannot use standard input"))?,
            Client::Tcp(peer),
        ),
        Err(_) => (
            Channel::new(Box::new(io::stdin()), Box::new(io::stdout()), None),
            Client::Unknown,
        ),
    };
    server.session(channel, client, profile);
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    server.wait_for_runs();
    Ok(())
}
