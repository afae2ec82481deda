//! Fills a queue with COUNT copies of a message, through the queue library, from THREADS threads
//! at once: the fast way to build the queues `bench/run` lists and flushes. Every message is
//! committed exactly as `queue-enqueue` commits one, fsyncs included; the threads only let the
//! file system batch those syncs.
//!
//! Usage: queue-fill QUEUE_DIR COUNT THREADS [DOMAIN [SPREAD]] < message
//!
//! Recipients are `uN@customer.test`, or `uN@DOMAIN`; with SPREAD, `uN@dK.DOMAIN` for K = N modulo
//! SPREAD, so the copies go to SPREAD domains. With DOMAIN, each copy also starts with a
//! `Message-ID` header naming its queue id, so that what a receiving end got can be checked for
//! loss and duplicates.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use etrnq::queue::Queue;
use etrnq::queue::envelope::{Envelope, Recipient};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(Ok(count)), Some(Ok(threads))) = (
        args.get(1),
        args.get(2).map(|n| n.parse::<usize>()),
        args.get(3).map(|n| n.parse::<usize>()),
    ) else {
        eprintln!("usage: queue-fill QUEUE_DIR COUNT THREADS [DOMAIN [SPREAD]] < message");
        return ExitCode::from(64);
    };
    let spread = match args.get(5).map(|n| n.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("queue-fill: SPREAD is a positive count");
            return ExitCode::from(64);
        }
    };
    let mut message = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut message) {
        eprintln!("queue-fill: cannot read the message: {e}");
        return ExitCode::from(66);
    }
    let dir = PathBuf::from(dir);
    let domain = args.get(4).map(String::as_str);
    let threads = threads.max(1);
    let outcome = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (dir, message) = (&dir, &message);
                let share = count / threads + usize::from(t < count % threads);
                // Thread t's recipients are numbered t, t + threads, ...: spread evenly.
                let first = t;
                scope.spawn(move || fill(dir, message, (first, threads, share), domain, spread))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a filler thread panicked".into()))
            })
            .collect::<Result<Vec<()>, String>>()
    });
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queue-fill: {e}");
            ExitCode::from(74)
        }
    }
}

/// Commits `count` copies, recipients numbered `first`, `first + step`, ...
fn fill(
    dir: &Path,
    message: &[u8],
    (first, step, count): (usize, usize, usize),
    domain: Option<&str>,
    spread: Option<usize>,
) -> Result<(), String> {
    let queue = Queue::open(dir).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    for n in (0..count).map(|i| first + i * step) {
        let mut draft = queue.draft().map_err(|e| e.to_string())?;
        let mut size = message.len();
        if domain.is_some() {
            let header = format!("Message-ID: <{}@queue-fill.test>\n", draft.id());
            draft
                .write_all(header.as_bytes())
                .map_err(|e| e.to_string())?;
            size += header.len();
        }
        draft.write_all(message).map_err(|e| e.to_string())?;
        let envelope = Envelope {
            id: draft.id(),
            arrival: now,
            size: size as u64,
            sender: "bench@example.test".into(),
            notify: None,
            ret: None,
            envid: None,
            warned: None,
            recipients: vec![Recipient::new(match (domain, spread) {
                (Some(domain), Some(spread)) => format!("u{n}@d{}.{domain}", n % spread),
                (domain, _) => format!("u{n}@{}", domain.unwrap_or("customer.test")),
            })],
        };
        draft.commit(&envelope).map_err(|e| e.to_string())?;
    }
    Ok(())
}
