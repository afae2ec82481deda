//! When to try again, and when to give up.
//!
//! A temporary failure (4xx, connection trouble) defers a recipient; the wait before the next
//! attempt starts at `retry_first` and grows by `retry_factor` with every attempt (1h, 1.5h,
//! 2.25h, ... with the defaults), never beyond the queue lifetime. A recipient whose message is
//! older than its domain's lifetime (`queue_lifetimes`, else `queue_lifetime`) has expired and
//! fails, held domains included; the message's other recipients keep their own lifetimes. An arrival time
//! in the future counts from the run that finds it, which writes that time into the envelope.
//! Runs that name what they want (`-R`, `-I`, `-S`, `-f`) ignore the wait, never the lifetime.

use std::time::Duration;

use crate::config::Config;
use crate::queue::envelope::Envelope;

/// The wait after the `attempts`-th failed attempt (counting from 1).
pub fn delay_after(config: &Config, attempts: u32) -> Duration {
    let growth = config
        .retry_factor
        .powi(attempts.saturating_sub(1).min(200) as i32);
    let seconds = config.retry_first.as_secs_f64() * growth;
    let cap = config.queue_lifetime.as_secs_f64();
    Duration::from_secs_f64(seconds.min(cap))
}

/// The epoch second of the next attempt after the `attempts`-th failure at `now`.
pub fn next_attempt(config: &Config, attempts: u32, now: i64) -> i64 {
    now.saturating_add(delay_after(config, attempts).as_secs() as i64)
}

/// True when a message that arrived at `arrival` has outlived `lifetime` at `now`.
pub fn is_expired(lifetime: Duration, arrival: i64, now: i64) -> bool {
    now.saturating_sub(arrival) >= i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)
}

/// The open recipients of `envelope` whose domain's lifetime the message has outlived at `now`.
pub fn expired_recipients(config: &Config, envelope: &Envelope, now: i64) -> Vec<usize> {
    (0..envelope.recipients.len())
        .filter(|&i| {
            let recipient = &envelope.recipients[i];
            recipient.status.is_open()
                && is_expired(
                    config.lifetime_of(recipient.domain()),
                    envelope.arrival,
                    now,
                )
        })
        .collect()
}

/// The arrival time to keep for a message: one in the future (a clock set wrong when it was
/// queued) counts from `now`, or it would never expire.
pub fn clamp_arrival(arrival: i64, now: i64) -> i64 {
    arrival.min(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_the_factor_and_stop_at_the_lifetime() {
        let config = Config::default();
        assert_eq!(delay_after(&config, 1), Duration::from_secs(3600));
        assert_eq!(delay_after(&config, 2), Duration::from_secs(5400));
        assert_eq!(delay_after(&config, 3), Duration::from_secs(8100));
        assert_eq!(delay_after(&config, 1000), config.queue_lifetime);
        assert_eq!(next_attempt(&config, 1, 1000), 4600);
    }

    #[test]
    fn expiry_is_age_against_lifetime() {
        let config = Config::default();
        let lifetime = config.queue_lifetime.as_secs() as i64;
        assert!(!is_expired(config.queue_lifetime, 0, lifetime - 1));
        assert!(is_expired(config.queue_lifetime, 0, lifetime));
    }

    #[test]
    fn an_arrival_in_the_future_counts_from_now() {
        assert_eq!(clamp_arrival(5000, 1000), 1000);
        assert_eq!(clamp_arrival(999, 1000), 999);
        let config = Config::default();
        let lifetime = config.queue_lifetime.as_secs() as i64;
        let now = 1_000_000_000;
        assert!(!is_expired(
            config.queue_lifetime,
            now + 10 * lifetime,
            now + lifetime
        ));
        assert!(is_expired(
            config.queue_lifetime,
            clamp_arrival(now + 10 * lifetime, now),
            now + lifetime
        ));
    }

    #[test]
    fn the_schedule_grows_from_the_first_wait_and_is_capped_by_the_lifetime() {
        let config = Config {
            retry_first: Duration::from_secs(600),
            retry_factor: 2.0,
            queue_lifetime: Duration::from_secs(86400),
            ..Config::default()
        };
        let steady = Config {
            retry_factor: 1.0,
            ..config.clone()
        };
        let cases = [
            (&config, 0, 600),
            (&config, 1, 600),
            (&config, 2, 1200),
            (&config, 3, 2400),
            (&config, 8, 76800),
            (&config, 9, 86400),
            (&config, u32::MAX, 86400),
            (&steady, 1, 600),
            (&steady, 50, 600),
        ];
        for (config, attempts, seconds) in cases {
            assert_eq!(
                delay_after(config, attempts),
                Duration::from_secs(seconds),
                "after attempt {attempts}"
            );
            assert_eq!(
                next_attempt(config, attempts, 1_000),
                1_000 + seconds as i64
            );
        }
        assert_eq!(
            next_attempt(&config, 1, i64::MAX - 1),
            i64::MAX,
            "saturates"
        );
    }

    #[test]
    fn expiry_counts_whole_seconds_of_age() {
        let config = Config {
            queue_lifetime: Duration::from_secs(100),
            ..Config::default()
        };
        let cases = [
            (1_000, 1_000, false),
            (1_000, 1_099, false),
            (1_000, 1_100, true),
            (1_000, 5_000, true),
            (5_000, 1_000, false),
            (i64::MIN, i64::MAX, true),
        ];
        for (arrival, now, expired) in cases {
            assert_eq!(
                is_expired(config.queue_lifetime, arrival, now),
                expired,
                "{arrival} at {now}"
            );
        }
    }
}
