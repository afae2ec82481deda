//! Queue ids, and the two places where a message's envelope lives.
//!
//! A [`QueueId`] is 14 characters from `[0-9A-Za-z]`: safe as a file name, unique across processes
//! and hosts that share the queue directory, and ordered by arrival when compared as strings. This
//! module depends on nothing else in the queue, so that the envelope and index formats can name
//! ids and places without depending on the queue that stores them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A queue id: 14 characters from `[0-9A-Za-z]`, unique across processes and hosts, and ordered
/// by arrival when compared as strings. Six characters of seconds since the epoch, four of
/// microseconds, four random.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId([u8; QueueId::LEN]);

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl QueueId {
    pub const LEN: usize = 14;

    /// A fresh id for a message arriving now.
    pub fn generate() -> QueueId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut bytes = [0u8; QueueId::LEN];
        encode(now.as_secs(), &mut bytes[0..6]);
        encode(u64::from(now.subsec_micros()), &mut bytes[6..10]);
        let noise = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            h.write_u128(now.as_nanos());
            h.finish()
        };
        encode(noise, &mut bytes[10..14]);
        QueueId(bytes)
    }

    /// Accepts exactly the shape `generate` makes; anything else is not a queue file.
    pub fn parse(text: &str) -> Option<QueueId> {
        let bytes: [u8; QueueId::LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(QueueId(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??????????????")
    }
}

/// Writes `value` in base 62, most significant digit first, into exactly `out.len()` characters.
fn encode(mut value: u64, out: &mut [u8]) {
    let modulus = 62u64.pow(out.len() as u32);
    value %= modulus;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

/// Where a message's envelope lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Active,
    Held,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sorted_and_safe() {
        let mut ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        for id in &ids {
            assert_eq!(QueueId::parse(id.as_str()), Some(*id));
        }
        let before = ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
        let first = before[0].as_str()[..6].to_string();
        let last = before[9_999].as_str()[..6].to_string();
        assert!(first <= last);
        assert!(QueueId::parse("../../etc/pwd!").is_none());
        assert!(QueueId::parse("short").is_none());
    }
}
