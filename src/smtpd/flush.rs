//! ETRN's work behind the reply: count what waits for a node, start one `queue-run -R` for it.
//!
//! A run is a separate `queue-run` process, started without a shell: the program path is fixed
//! when the server starts, and the node is a validated [`DomainPattern`] passed as one argument.
//! At most one run per node is going at a time; an ETRN for a node whose run is still going
//! starts nothing (the queue's locks would keep two runs from delivering the same message, but a
//! second process would only find every message busy). Each run's standard error is copied to
//! the mail log, and a thread per run waits for it, so no child is left a zombie.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use crate::maillog::MailLog;
use crate::queue::{Place, Queue, QueueError};
use crate::selection::{DomainPattern, Selection};

/// How to start a queue run.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The `queue-run` program.
    pub program: PathBuf,
    /// `-C FILE` to pass on, when the server was given one.
    pub config: Option<PathBuf>,
    /// `--queue-dir DIR`, always passed so the run works on the server's queue.
    pub queue_dir: PathBuf,
}

/// What [`Flusher::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new run, with its process id.
    New(u32),
    /// A run for this node is still going; nothing was started.
    AlreadyRunning(u32),
}

/// The queue runs ETRN started that are still going, by node.
pub struct Flusher {
    command: RunCommand,
    log: Arc<MailLog>,
    running: Mutex<HashMap<String, u32>>,
    finished: Condvar,
}

impl Flusher {
    pub fn new(command: RunCommand, log: Arc<MailLog>) -> Flusher {
        Flusher {
            command,
            log,
            running: Mutex::new(HashMap::new()),
            finished: Condvar::new(),
        }
    }

    /// Starts `queue-run -R NODE` unless one is going for `node`.
    pub fn start(self: &Arc<Self>, node: &DomainPattern) -> std::io::Result<Started> {
        let key = node.to_string().to_ascii_lowercase();
        let mut running = self
            .running
            .lock()
            .map_err(|_| std::io::Error::other("flush table poisoned"))?;
        if let Some(&pid) = running.get(&key) {
            return Ok(Started::AlreadyRunning(pid));
        }
        let mut command = Command::new(&self.command.program);
        command.arg("-R").arg(node.to_string());
        command.arg("--queue-dir").arg(&self.command.queue_dir);
        if let Some(config) = &self.command.config {
            command.arg("-C").arg(config);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        running.insert(key.clone(), pid);
        drop(running);
        self.log.info(&format!(
            "etrn: started {} -R {node} (pid {pid})",
            self.command.program.display()
        ));
        let flusher = Arc::clone(self);
        let node = node.to_string();
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            if let Some(stderr) = stderr {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    flusher.log.warning(&format!("queue-run[{pid}]: {line}"));
                }
            }
            let outcome = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot wait: {e}"),
            };
            flusher.log.info(&format!(
                "etrn: queue-run -R {node} (pid {pid}) ended: {outcome}"
            ));
            if let Ok(mut running) = flusher.running.lock() {
                running.remove(&key);
            }
            flusher.finished.notify_all();
        });
        Ok(Started::New(pid))
    }

    /// Waits until every run this server started has ended.
    pub fn wait_all(&self) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        while !running.is_empty() {
            running = match self.finished.wait(running) {
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
    let active: Vec<_> = scan
        .ids()
        .iter()
        .copied()
        .filter(|&(_, place)| place == Place::Active)
        .collect();
    let mut count = 0;
    scan.for_each(&active, |inspection| -> Result<(), QueueError> {
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
