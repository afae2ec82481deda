//! ETRN's work behind the reply: what waits for a node, and one `queue-run -R` for it.
//!
//! A request counts what waits for the node and sees that one run goes for it: now, or right
//! after the one that is going.
//!
//! A run is a separate `queue-run` process, started without a shell: the program path is fixed
//! when the server starts, and the node is a validated [`DomainPattern`] passed as one argument.
//! Runs for a node are ordered by two lock files in the queue ([`Queue::flush_lock`]), so the
//! daemon's threads, inetd sessions (each a process of its own) and the runs they handed off
//! all agree:
//!
//! - `NODE.run` is held while a run for the node is going;
//! - `NODE.next` is held by the one request waiting for that run to end.
//!
//! A request takes `next` without waiting (when another request holds it, a run is already
//! waiting and this request is answered by it), waits for `run`, lets `next` go and runs. So at
//! most one run per node is going and at most one waits. An ETRN that arrives while a run is
//! going always leads to one more run, which starts after that one ends and so sees the mail
//! that came in meanwhile; any number of ETRNs in that time lead to that one run.
//!
//! The daemon watches its runs on threads: each run's standard error goes to the mail log, its
//! end is logged, no child is left a zombie, and the daemon waits for them when it stops (one
//! still waiting to start is dropped then). A session in inetd mode hands each request to a
//! process of its own ([`RunCommand::hand_off`]: this program with `--flush NODE`), which does
//! the same and outlives the session, so the session ends when its client leaves.
//!
//! Locks die with their holder: after a crash the next request simply finds the node free.

use std::fs::{File, TryLockError};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::maillog::MailLog;
use crate::queue::selection::{DomainPattern, Selection};
use crate::queue::{Place, Queue, QueueError};

/// How to start a queue run.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The `queue-run` program.
    pub program: PathBuf,
    /// `-C FILE` to pass on, when the server was given one.
    pub config: Option<PathBuf>,
    /// `--queue-dir DIR`, always passed so the run works on the server's queue.
    pub queue_dir: PathBuf,
    /// In inetd mode: this program, started as `PROGRAM --flush NODE` to see a request through
    /// after the session has ended. `None`: threads of this process watch the runs.
    pub hand_off: Option<PathBuf>,
}

/// What [`Flusher::request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// No run was going: one starts now.
    Started,
    /// A run is going: one more follows it.
    Scheduled,
    /// A run is going and one more already waits for it: nothing more to do.
    AlreadyScheduled,
}

/// The queue runs ETRN asked for.
pub struct Flusher {
    command: RunCommand,
    log: Arc<MailLog>,
    /// Threads watching a run, or waiting to start one.
    watchers: Mutex<usize>,
    finished: Condvar,
    stopping: AtomicBool,
}

/// The two lock files of a node.
struct NodeLocks {
    next: File,
    run: File,
}

impl NodeLocks {
    fn open(queue: &Queue, node: &DomainPattern) -> Result<NodeLocks, QueueError> {
        let key = node.to_string().to_ascii_lowercase();
        Ok(NodeLocks {
            next: queue.flush_lock(&format!("{key}.next"))?,
            run: queue.flush_lock(&format!("{key}.run"))?,
        })
    }
}

/// `Ok(true)` when the lock was taken, `Ok(false)` when someone holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

impl Flusher {
    pub fn new(command: RunCommand, log: Arc<MailLog>) -> Flusher {
        Flusher {
            command,
            log,
            watchers: Mutex::new(0),
            finished: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Sees that a run for `node` starts now, or after the one that is going.
    pub fn request(
        self: &Arc<Self>,
        queue: &Queue,
        node: &DomainPattern,
    ) -> std::io::Result<Requested> {
        let locks = NodeLocks::open(queue, node).map_err(std::io::Error::other)?;
        if !try_lock(&locks.next)? {
            return Ok(Requested::AlreadyScheduled);
        }
        let free = try_lock(&locks.run)?;
        let requested = if free {
            Requested::Started
        } else {
            Requested::Scheduled
        };
        match &self.command.hand_off {
            None => self.watch(locks, node.clone())?,
            Some(program) => {
                // The process takes the locks itself; what was learnt here is only the reply.
                drop(locks);
                self.hand_off(program, node)?;
            }
        }
        Ok(requested)
    }

    /// A thread that waits for the node's run to end (when one is going), then runs.
    fn watch(self: &Arc<Self>, locks: NodeLocks, node: DomainPattern) -> std::io::Result<()> {
        if let Ok(mut watchers) = self.watchers.lock() {
            *watchers += 1;
        }
        let flusher = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("etrn {node}"))
            .spawn(move || {
                flusher.follow(locks, &node);
                if let Ok(mut watchers) = flusher.watchers.lock() {
                    *watchers = watchers.saturating_sub(1);
                }
                flusher.finished.notify_all();
            });
        if let Err(e) = spawned {
            if let Ok(mut watchers) = self.watchers.lock() {
                *watchers = watchers.saturating_sub(1);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Holding `next`: waits for `run`, lets `next` go, runs, lets `run` go.
    fn follow(&self, locks: NodeLocks, node: &DomainPattern) {
        let NodeLocks { next, run } = locks;
        match try_lock(&run) {
            Ok(true) => {}
            Ok(false) => self
                .log
                .info(&format!("etrn: waiting for the run of {node} to end")),
            Err(e) => {
                self.log
                    .warning(&format!("etrn: cannot wait for the run of {node}: {e}"));
                return;
            }
        }
        if let Err(e) = run.lock() {
            self.log
                .warning(&format!("etrn: cannot wait for the run of {node}: {e}"));
            return;
        }
        drop(next);
        if self.stopping.load(Ordering::SeqCst) {
            self.log.info(&format!(
                "etrn: stopping; the run scheduled for {node} is not started"
            ));
            return;
        }
        self.run_once(node);
        drop(run);
    }

    /// Starts `PROGRAM --flush NODE` in a process group of its own, so that it outlives this
    /// process and its signals. A thread reaps it, while this process lasts.
    fn hand_off(&self, program: &Path, node: &DomainPattern) -> std::io::Result<()> {
        let mut command = Command::new(program);
        command.arg("--flush").arg(node.to_string());
        command.arg("--queue-dir").arg(&self.command.queue_dir);
        command.arg("--queue-run").arg(&self.command.program);
        if let Some(config) = &self.command.config {
            command.arg("-C").arg(config);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        self.log.info(&format!(
            "etrn: handed the run for {node} to pid {}",
            child.id()
        ));
        std::thread::spawn(move || child.wait());
        Ok(())
    }

    /// What `PROGRAM --flush NODE` does: the whole request in this process, waiting as long as
    /// the run before it takes.
    pub fn request_here(&self, queue: &Queue, node: &DomainPattern) -> std::io::Result<()> {
        let locks = NodeLocks::open(queue, node).map_err(std::io::Error::other)?;
        if !try_lock(&locks.next)? {
            self.log.info(&format!(
                "etrn: a run for {node} is already scheduled; nothing more to do"
            ));
            return Ok(());
        }
        self.follow(locks, node);
        Ok(())
    }

    /// Starts `queue-run -R NODE`, copies its standard error to the log, and waits for it.
    fn run_once(&self, node: &DomainPattern) {
        let mut command = Command::new(&self.command.program);
        command.arg("-R").arg(node.to_string());
        command.arg("--queue-dir").arg(&self.command.queue_dir);
        if let Some(config) = &self.command.config {
            command.arg("-C").arg(config);
        }
        let spawned = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.log.warning(&format!(
                    "etrn: cannot start {} -R {node}: {e}",
                    self.command.program.display()
                ));
                return;
            }
        };
        let pid = child.id();
        self.log.info(&format!(
            "etrn: started {} -R {node} (pid {pid})",
            self.command.program.display()
        ));
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                self.log.warning(&format!("queue-run[{pid}]: {line}"));
            }
        }
        let outcome = match child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot wait: {e}"),
        };
        self.log.info(&format!(
            "etrn: queue-run -R {node} (pid {pid}) ended: {outcome}"
        ));
    }

    /// From now on a run that waits for another is dropped instead of started.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits until every run this process watches has ended.
    pub fn wait_all(&self) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        while *watchers > 0 {
            watchers = match self.finished.wait(watchers) {
                Ok(guard) => guard,
                Err(_) => return,
            };
        }
    }
}

/// The active messages with at least one open recipient in `node`, as `queue-run -R` selects
/// them. Held (administrative hold) messages are not counted: a run does not deliver them. Only
/// the envelopes of the messages the per-domain record names for `node` are read, so an ETRN
/// costs what that node's mail costs, not what the queue holds (see [`Queue::scan_domains`]).
/// A message whose envelope cannot be read is not counted and does not stop the count; the run
/// it starts reports it.
pub fn pending(queue: &Queue, node: &DomainPattern) -> Result<usize, QueueError> {
    let selection = Selection {
        domains: vec![node.clone()],
        ..Selection::default()
    };
    let scan = queue.scan_domains(std::slice::from_ref(node))?;
    let mut count = 0;
    let active = |_, place| place == Place::Active;
    scan.for_each_where(&active, |inspection| -> Result<(), QueueError> {
        if inspection
            .envelope
            .is_ok_and(|envelope| selection.selects(&envelope))
        {
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}
