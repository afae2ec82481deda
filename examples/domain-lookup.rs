//! Measures what a `relay_domains` or `hold_domains` lookup costs as the list grows: the file
//! is written and read as a program reads it at start, then each kind of lookup is timed over
//! many calls, for lists of 10 to 1,000,000 domains.
//!
//! Usage: domain-lookup [LOOKUPS]   (default 1,000,000 lookups of each kind per size)
//!
//! For reference, the last column times the linear scan over a list (`is_within` against every
//! listed domain) that a hash set replaces.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use etrnq::address::Domain;
use etrnq::config::domain_list::{DomainList, Source};

fn main() -> ExitCode {
    let lookups = match std::env::args().nth(1).map(|n| n.parse::<u32>()) {
        None => 1_000_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: domain-lookup [LOOKUPS]");
            return ExitCode::from(64);
        }
    };
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("domain-lookup: cannot make a temporary directory");
        return ExitCode::from(73);
    };
    let parse = |name: &str| Domain::parse(name).ok();
    let (Some(hit), Some(miss), Some(below)) = (
        parse("User.Site7.test"),
        parse("nowhere.example"),
        parse("a.b.site7.test"),
    ) else {
        return ExitCode::from(70);
    };
    println!("domains    read      contains(hit)  contains(miss)  holds(3 below)  linear scan");
    for count in [10usize, 1_000, 10_000, 1_000_000] {
        let path = dir.path().join(format!("domains-{count}"));
        let text: String = (0..count).map(|n| format!("site{n}.test OK\n")).collect();
        if std::fs::write(&path, text).is_err() {
            eprintln!("domain-lookup: cannot write {}", path.display());
            return ExitCode::from(73);
        }
        let started = Instant::now();
        let list = match DomainList::load(vec![Source::File(path)]) {
            Ok(list) => list,
            Err(why) => {
                eprintln!("domain-lookup: {why}");
                return ExitCode::from(70);
            }
        };
        let read = started.elapsed();
        let time = |found: &dyn Fn() -> bool, times: u32| {
            let started = Instant::now();
            let mut hits = 0u32;
            for _ in 0..times {
                hits += u32::from(std::hint::black_box(found()));
            }
            (started.elapsed() / times, hits)
        };
        let (miss_cost, _) = time(&|| list.contains(std::hint::black_box(&miss)), lookups);
        let (hit_cost, _) = time(&|| list.contains(std::hint::black_box(&hit)), lookups);
        let (held, _) = time(&|| list.holds(std::hint::black_box(&below)), lookups);
        // The scan it replaces, over the same domains; fewer rounds, it is slow.
        let listed: Vec<Domain> = (0..count)
            .filter_map(|n| Domain::parse(&format!("site{n}.test")).ok())
            .collect();
        let rounds = (lookups / count.max(1) as u32).clamp(10, lookups);
        let (scan, _) = time(
            &|| {
                listed
                    .iter()
                    .any(|d| std::hint::black_box(&miss).is_within(d))
            },
            rounds,
        );
        println!(
            "{count:>9}  {:>8}  {:>13}  {:>14}  {:>14}  {:>11}",
            show(read),
            show(hit_cost),
            show(miss_cost),
            show(held),
            show(scan)
        );
    }
    ExitCode::SUCCESS
}

fn show(d: Duration) -> String {
    match d.as_nanos() {
        n if n < 10_000 => format!("{n} ns"),
        n if n < 10_000_000 => format!("{} µs", n / 1000),
        n => format!("{} ms", n / 1_000_000),
    }
}
