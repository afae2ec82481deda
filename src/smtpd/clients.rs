//! What each client address holds: its sessions, and its allowance of ETRN requests.
//!
//! A client is its IP address (IPv4-mapped IPv6 counts as the IPv4 address). The daemon admits
//! a session only while its address has fewer than `max_client_connections`, so one address
//! cannot take every slot of the MX, as Postfix's anvil limits
//! `smtpd_client_connection_count_limit`. ETRN is allowed [`ETRN_BURST`] requests at once per
//! address, and one more every [`ETRN_REFILL`], across all the address's sessions, since each
//! ETRN costs a look through the queue.
//!
//! Memory: one small entry per address with a session, and one per address that used ETRN
//! recently; entries whose allowance is full again are dropped when the table grows, so the
//! table holds only addresses that are busy now.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// ETRN requests a client address may make at once.
pub const ETRN_BURST: u32 = 10;
/// The time after which a client address may make one more ETRN request.
pub const ETRN_REFILL: Duration = Duration::from_secs(6);
/// Entries in the ETRN table above which full allowances are forgotten.
const ETRN_TABLE_PRUNE: usize = 4096;

/// The daemon's table of client addresses.
#[derive(Debug, Default)]
pub struct Clients {
    sessions: Mutex<HashMap<IpAddr, usize>>,
    etrn: Mutex<HashMap<IpAddr, Allowance>>,
}

/// A token bucket: `tokens` requests left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    tokens: f64,
    at: Instant,
}

impl Allowance {
    fn now(self, now: Instant) -> Allowance {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / ETRN_REFILL.as_secs_f64();
        Allowance {
            tokens: (self.tokens + earned).min(f64::from(ETRN_BURST)),
            at: now,
        }
    }

    fn is_full(self, now: Instant) -> bool {
        self.now(now).tokens >= f64::from(ETRN_BURST)
    }
}

impl Clients {
    /// Counts one more session from `ip`, unless it already has `limit`; then `false`.
    pub fn admit(&self, ip: IpAddr, limit: usize) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else {
            return false;
        };
        let count = sessions.entry(ip).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                sessions.remove(&ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Counts a session from `ip` as ended.
    pub fn leave(&self, ip: IpAddr) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        if let Some(count) = sessions.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sessions.remove(&ip);
            }
        }
    }

    /// Sessions from `ip` now.
    pub fn sessions(&self, ip: IpAddr) -> usize {
        self.sessions
            .lock()
            .map(|sessions| sessions.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Takes one ETRN request from `ip`'s allowance; `false` when it has none left.
    pub fn take_etrn(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut table) = self.etrn.lock() else {
            return false;
        };
        if table.len() >= ETRN_TABLE_PRUNE {
            table.retain(|_, allowance| !allowance.is_full(now));
        }
        let full = Allowance {
            tokens: f64::from(ETRN_BURST),
            at: now,
        };
        let allowance = table.entry(ip).or_insert(full);
        let mut current = allowance.now(now);
        let granted = current.tokens >= 1.0;
        if granted {
            current.tokens -= 1.0;
        }
        *allowance = current;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn sessions_per_address_are_counted_and_capped() {
        let clients = Clients::default();
        assert!(clients.admit(ip(1), 2));
        assert!(clients.admit(ip(1), 2));
        assert!(!clients.admit(ip(1), 2));
        assert!(clients.admit(ip(2), 2), "another address is not affected");
        clients.leave(ip(1));
        assert_eq!(clients.sessions(ip(1)), 1);
        assert!(clients.admit(ip(1), 2));
        clients.leave(ip(2));
        assert_eq!(clients.sessions(ip(2)), 0);
        assert!(!clients.admit(ip(3), 0));
        assert_eq!(clients.sessions(ip(3)), 0);
    }

    #[test]
    fn etrn_allowance_runs_out_and_comes_back() {
        let clients = Clients::default();
        let start = Instant::now();
        for _ in 0..ETRN_BURST {
            assert!(clients.take_etrn(ip(1), start));
        }
        assert!(!clients.take_etrn(ip(1), start));
        assert!(clients.take_etrn(ip(2), start), "per address");
        assert!(!clients.take_etrn(ip(1), start + ETRN_REFILL / 2));
        assert!(clients.take_etrn(ip(1), start + ETRN_REFILL));
        assert!(!clients.take_etrn(ip(1), start + ETRN_REFILL));
        let later = start + ETRN_REFILL * (ETRN_BURST * 10);
        for _ in 0..ETRN_BURST {
            assert!(clients.take_etrn(ip(1), later), "never more than the burst");
        }
        assert!(!clients.take_etrn(ip(1), later));
    }

    #[test]
    fn the_etrn_table_forgets_idle_addresses() {
        let clients = Clients::default();
        let start = Instant::now();
        for n in 0..ETRN_TABLE_PRUNE as u32 {
            clients.take_etrn(IpAddr::from(n.to_be_bytes()), start);
        }
        let later = start + ETRN_REFILL * 2;
        clients.take_etrn(ip(1), later);
        assert!(clients.etrn.lock().unwrap().len() < 10);
    }
}
