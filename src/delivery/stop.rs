//! Asking a run to stop: no new message, and the transactions in flight end and are recorded.
//!
//! A stop is shared by every run of a process and asked for once: by `SIGTERM`, `SIGINT` or
//! `SIGHUP` (see `Stop::on_signals`), or by the program that started the run. Asked to stop, a
//! run delivers nothing twice: what it has not begun stays queued for the next run, and what is
//! in flight ends and is recorded.
//!
//! A second signal, or `STOP_GRACE` without the process ending, ends the process at once with
//! `EX_TEMPFAIL`; what is in flight then stays queued, as after `kill -9`. A signal the process
//! was started with ignored stays ignored.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::maillog::MailLog;
use crate::sysexits::Status;

/// How long the transactions in progress may take to end once a run is asked to stop; after
/// that the process exits as if killed, and what is still in flight stays queued.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A request to stop: runs take no new message, finish the transactions in progress and record
/// every outcome. Shared by every run of a process; set once, never cleared.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    /// The signal that asked, 0 while none has.
    signal: AtomicI32,
    lock: Mutex<()>,
    asked: Condvar,
}

impl Stop {
    /// Asks every run sharing this value to stop; `signal` names the reason.
    pub fn request(&self, signal: i32) {
        let _guard = self.0.lock.lock();
        let _ = self
            .0
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.0.asked.notify_all();
    }

    /// The signal that asked for the stop, if one did.
    pub fn signal(&self) -> Option<i32> {
        match self.0.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    pub fn is_requested(&self) -> bool {
        self.signal().is_some()
    }

    /// Waits for `duration`, or until a stop is asked for; true when it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let Ok(mut guard) = self.0.lock.lock() else {
            return self.is_requested();
        };
        loop {
            if self.is_requested() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.0.asked.wait_timeout(guard, left) {
                Ok((guard, _)) => guard,
                Err(_) => return self.is_requested(),
            };
        }
    }

    /// A stop asked for by SIGTERM, SIGINT or SIGHUP (`systemctl stop`, Ctrl-C, a dropped ssh
    /// session). A second signal, or [`STOP_GRACE`] without the process ending, ends it at once
    /// with EX_TEMPFAIL: what is in flight then stays queued, as after `kill -9`. A signal the
    /// process was started with ignored (`nohup`, `&` in a script) stays ignored.
    pub fn on_signals(log: Arc<MailLog>) -> std::io::Result<Stop> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let ignored = ignored_signals();
        let wanted = [SIGTERM, SIGINT, SIGHUP]
            .into_iter()
            .filter(|&signal| !ignored.contains(&signal));
        let mut signals = signal_hook::iterator::Signals::new(wanted)?;
        let stop = Stop::default();
        let asked = stop.clone();
        std::thread::spawn(move || {
            let mut arriving = signals.forever();
            let Some(first) = arriving.next() else {
                return;
            };
            // Logged first: a run that was waiting between passes ends as soon as it is asked.
            log.info(&format!(
                "stopping on {}: no new message is taken; what is in flight ends within {}s",
                signal_name(first),
                STOP_GRACE.as_secs()
            ));
            asked.request(first);
            let watchdog = Arc::clone(&log);
            std::thread::spawn(move || {
                std::thread::sleep(STOP_GRACE);
                watchdog.warning(&format!(
                    "stop: still busy after {}s; exiting, what is in flight stays queued",
                    STOP_GRACE.as_secs()
                ));
                std::process::exit(i32::from(Status::TempFail.code()));
            });
            if let Some(second) = arriving.next() {
                log.warning(&format!(
                    "stopping at once on a second signal ({}); what is in flight stays queued",
                    signal_name(second)
                ));
                std::process::exit(i32::from(Status::TempFail.code()));
            }
        });
        Ok(stop)
    }
}

/// The signals this process ignores, from the kernel's view of it; none when that cannot be read.
fn ignored_signals() -> Vec<i32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    (1..=64)
        .filter(|signal| mask & (1u64 << (signal - 1)) != 0)
        .collect()
}

pub(super) fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_wakes_a_sleeper_and_stays() {
        let stop = Stop::default();
        assert!(!stop.sleep(Duration::ZERO));
        let asker = stop.clone();
        let sleeper = std::thread::spawn(move || stop.sleep(Duration::from_secs(3600)));
        asker.request(15);
        asker.request(2);
        assert!(sleeper.join().unwrap(), "woken by the stop");
        assert_eq!(asker.signal(), Some(15), "the first signal is kept");
    }

    #[test]
    fn signals_are_named_as_the_system_names_them() {
        for (signal, name) in [
            (15, "SIGTERM"),
            (2, "SIGINT"),
            (1, "SIGHUP"),
            (0, "signal 0"),
            (4242, "signal 4242"),
        ] {
            assert_eq!(signal_name(signal), name, "signal {signal}");
        }
    }
}
