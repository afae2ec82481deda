//! Measures the queue's directory layout: one flat `env/` and `data/`, or hashed subdirectories
//! as Postfix's `hash_queue_depth` makes them (16 a level, one or two levels), holding COUNT
//! messages, by doing what the queue does to the file system for each message.
//!
//! Usage: dir-layout DIR COUNT LABEL [ROUNDS [SAMPLE]]
//!
//! Under DIR (which must exist, and is left as it was) one queue a layout is filled with COUNT
//! ids of the queue's own format: an envelope and a data name for each, hard links to a few
//! empty files, since a name costs a directory the same whoever its inode is and inodes cost the
//! same in every layout (the commits below make real ones). Then ROUNDS rounds, the layouts
//! taking turns so that the machine's changing load falls on all three, each of: SAMPLE commits
//! without any sync; SAMPLE commits as `Draft::commit` makes them (data written under `tmp/`,
//! synced, renamed into `data/` without replacing, `data/` synced, the same for the envelope
//! and `env/`); 10,000 names added to `env/` and removed again; 10,000 opens of random queued
//! ids as `open_own` opens them and 10,000 of ids that are not queued; SAMPLE reads of whole
//! envelopes; the removal of every message the round committed as a delivery removes it
//! (envelope renamed to `tmp/ID.gone`, then it and the data unlinked); one listing (every name
//! of `env/` and `data/` read, as a listing without the index reads them). Every message but
//! 100 then leaves (the drain, timed), and the same rounds run in directories that once held
//! COUNT names and now hold 100, beside a listing of new directories holding 100.
//!
//! One markdown row per operation on stdout, `| LABEL | COUNT | operation | flat | 16 | 16×16 |
//! unit | load |`, each figure the median of the rounds; each round's figures on stderr. The
//! per-domain record and the lock a commit also takes are left out: neither depends on the
//! layout. Each group of operations begins after `syncfs`, so that none pays for the writes of
//! the one before. Everything is measured with the names in the kernel's caches, as a busy queue
//! has them; a directory read from a cold disk costs more, and more so the larger it is.
//!
//! Hashing uses the id's four random characters, not its first ones as Postfix does with its
//! short ids: etrnq's ids begin with the time, which would put a day's mail in one directory.

mod queue;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use etrnq::queue::QueueId;
use nix::unistd::{UnlinkatFlags, unlinkat};

use queue::{LAYOUTS, Queue, Tree, create};

/// What is left of the queue in the emptied directories.
const LEFT: usize = 100;
const LOOKUPS: usize = 10_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: usize| match args.get(i) {
        None => Some(default),
        Some(text) => text.parse::<usize>().ok().filter(|&n| n > 0),
    };
    let (Some(dir), Some(Some(count)), Some(label), Some(rounds), Some(sample)) = (
        args.get(1),
        args.get(2)
            .map(|n| n.parse::<usize>().ok().filter(|&n| n > LEFT)),
        args.get(3),
        number(4, 3),
        number(5, 200),
    ) else {
        eprintln!("usage: dir-layout DIR COUNT LABEL [ROUNDS [SAMPLE]]  (COUNT over {LEFT})");
        return ExitCode::from(64);
    };
    let run = Run {
        base: PathBuf::from(dir),
        count,
        rounds,
        sample,
    };
    let began = Instant::now();
    let load_before = load();
    let columns = match run.columns() {
        Ok(columns) => columns,
        Err(e) => {
            eprintln!("dir-layout: {e}");
            return ExitCode::from(74);
        }
    };
    let load_after = load();
    let (low, high) = (load_before.min(load_after), load_before.max(load_after));
    eprintln!(
        "dir-layout {count}: {:.0} s in all",
        began.elapsed().as_secs_f64()
    );
    let Some(first) = columns.first() else {
        return ExitCode::from(70);
    };
    for (i, (operation, unit, _)) in first.iter().enumerate() {
        let cells: Vec<&str> = columns.iter().map(|c| c[i].2.as_str()).collect();
        println!(
            "| {label} | {count} | {operation} | {} | {unit} | {low:.1}–{high:.1} |",
            cells.join(" | ")
        );
    }
    ExitCode::SUCCESS
}

struct Run {
    base: PathBuf,
    count: usize,
    rounds: usize,
    sample: usize,
}

/// One row of a layout's column: operation, unit, figure.
type Row = (&'static str, &'static str, String);

/// Each layout's figures: for each round, one per operation.
type Figures = Vec<Vec<Vec<f64>>>;

const OPERATIONS: [(&str, &str); 9] = [
    ("commit without any sync", "µs/msg"),
    ("commit, synced as queue-enqueue commits", "µs/msg"),
    ("a name added and removed (link, unlink)", "µs/op"),
    ("open a queued envelope (random id)", "µs/op"),
    ("open an id that is not queued", "µs/op"),
    ("read a whole envelope", "µs/op"),
    ("delivery's removal, then syncfs", "µs/msg"),
    ("list every name of env/ and data/", "ms"),
    ("  the same, per name", "µs/name"),
];

const EMPTIED: [(&str, &str); 6] = [
    ("emptied to 100: commit without sync", "µs/msg"),
    ("emptied to 100: commit, synced", "µs/msg"),
    ("emptied to 100: a name added and removed", "µs/op"),
    ("emptied to 100: open an id that is not queued", "µs/op"),
    ("emptied to 100: delivery's removal", "µs/msg"),
    ("emptied to 100: list", "ms"),
];

impl Run {
    /// Every layout's column. The layouts take turns in each round, each round beginning with
    /// the next one, so that what the machine's load does over time falls on all three.
    fn columns(&self) -> io::Result<Vec<Vec<Row>>> {
        let queues = LAYOUTS
            .iter()
            .map(|&layout| Queue::create(self.base.join(layout.name()), layout))
            .collect::<io::Result<Vec<Queue>>>()?;
        let ids: Vec<QueueId> = (0..self.count).map(|_| QueueId::generate()).collect();
        let mut columns: Vec<Vec<Row>> = queues.iter().map(|_| Vec::new()).collect();

        for (queue, column) in queues.iter().zip(&mut columns) {
            queue.settle()?;
            let clock = Instant::now();
            queue.fill(&ids)?;
            queue.settle()?;
            let filled = clock.elapsed().as_secs_f64();
            eprintln!(
                "{} {}: filled in {filled:.1} s; {} MB of memory available",
                queue.layout().name(),
                self.count,
                available_mb()
            );
            column.push((
                "fill: 2 names a message (links), then syncfs",
                "µs/msg (whole)",
                format!("{} ({filled:.1} s)", micros(filled, ids.len())),
            ));
            column.push((
                "names per env/ directory, fewest–most",
                "names",
                spread(&queue.env, &ids),
            ));
        }

        let mut rng = Rng::new();
        let figures = self.rounds(&queues, &ids, &mut rng, false)?;
        medians(&mut columns, &OPERATIONS, &figures);

        let (gone, kept) = ids.split_at(self.count - LEFT);
        for (queue, column) in queues.iter().zip(&mut columns) {
            let clock = Instant::now();
            for id in gone {
                queue.unlink(id)?;
            }
            queue.settle()?;
            let drained = clock.elapsed().as_secs_f64();
            eprintln!(
                "{} {}: drained in {drained:.1} s",
                queue.layout().name(),
                self.count
            );
            column.push((
                "drain to 100: 2 names unlinked a message, then syncfs",
                "µs/msg (whole)",
                format!("{} ({drained:.1} s)", micros(drained, gone.len())),
            ));
        }

        let figures = self.rounds(&queues, kept, &mut rng, true)?;
        medians(&mut columns, &EMPTIED, &figures);

        for (queue, column) in queues.iter().zip(&mut columns) {
            let layout = queue.layout();
            let fresh = Queue::create(self.base.join(format!("{}-new", layout.name())), layout)?;
            let new_ids: Vec<QueueId> = (0..LEFT).map(|_| QueueId::generate()).collect();
            fresh.fill(&new_ids)?;
            let mut listings = Vec::new();
            for _ in 0..self.rounds {
                listings.push(timed(1, |_| fresh.list().map(drop))? / 1000.0);
            }
            column.push((
                "  beside new directories holding 100: list",
                "ms",
                shown(median(listings)),
            ));
            fs::remove_dir_all(&fresh.root)?;
            fs::remove_dir_all(&queue.root)?;
            queue.settle()?;
        }
        Ok(columns)
    }

    fn rounds(
        &self,
        queues: &[Queue],
        queued: &[QueueId],
        rng: &mut Rng,
        emptied: bool,
    ) -> io::Result<Figures> {
        let mut figures: Figures = queues.iter().map(|_| Vec::new()).collect();
        for round in 0..self.rounds {
            for turn in 0..queues.len() {
                let which = (round + turn) % queues.len();
                let queue = &queues[which];
                let got = self.round(queue, queued, rng, emptied)?;
                eprintln!(
                    "{} {}{} round {round}: {}",
                    queue.layout().name(),
                    self.count,
                    if emptied { " emptied" } else { "" },
                    joined(&got)
                );
                figures[which].push(got);
            }
        }
        Ok(figures)
    }

    /// One round's figures, in the order of `OPERATIONS`, or of `EMPTIED` when `emptied`.
    fn round(
        &self,
        queue: &Queue,
        queued: &[QueueId],
        rng: &mut Rng,
        emptied: bool,
    ) -> io::Result<Vec<f64>> {
        let synced: Vec<QueueId> = (0..self.sample).map(|_| QueueId::generate()).collect();
        let unsynced: Vec<QueueId> = (0..self.sample).map(|_| QueueId::generate()).collect();
        let absent: Vec<QueueId> = (0..LOOKUPS).map(|_| QueueId::generate()).collect();
        let present: Vec<&QueueId> = (0..LOOKUPS).map(|_| rng.pick(queued)).collect();
        let read: Vec<&QueueId> = (0..self.sample).map(|_| rng.pick(&synced)).collect();

        // Each group starts with the journal written out, so that none pays for the one before.
        queue.settle()?;
        let commit_unsynced = timed(unsynced.len(), |i| queue.commit(&unsynced[i], false))?;
        queue.settle()?;
        let commit = timed(synced.len(), |i| queue.commit(&synced[i], true))?;
        queue.settle()?;
        let seed = "seed";
        drop(create(&queue.tmp, seed)?);
        let name = timed(LOOKUPS, |i| queue.add_and_remove(seed, &absent[i]))?;
        unlinkat(&queue.tmp, seed, UnlinkatFlags::NoRemoveDir)?;
        let hit = timed(LOOKUPS, |i| match queue.look_up(present[i])? {
            true => Ok(()),
            false => Err(io::Error::other(format!("{} vanished", present[i]))),
        })?;
        let miss = timed(LOOKUPS, |i| match queue.look_up(&absent[i])? {
            false => Ok(()),
            true => Err(io::Error::other(format!("{} was never queued", absent[i]))),
        })?;
        let mut buffer = Vec::new();
        let reading = timed(read.len(), |i| queue.read(read[i], &mut buffer).map(drop))?;
        // Removals end with the journal written: that is where a disk that discards freed
        // blocks charges for them, and whoever came next would pay it otherwise.
        let both: Vec<&QueueId> = synced.iter().chain(&unsynced).collect();
        queue.settle()?;
        let delivery = timed(both.len() + 1, |i| match both.get(i) {
            Some(id) => queue.deliver(id),
            None => queue.settle(),
        })? * (both.len() + 1) as f64
            / both.len() as f64;
        let mut names = 0;
        let listing = timed(1, |_| queue.list().map(|n| names = n))? / 1000.0;
        if names != 2 * queued.len() {
            return Err(io::Error::other(format!(
                "listed {names} names where {} are queued",
                2 * queued.len()
            )));
        }
        Ok(if emptied {
            vec![commit_unsynced, commit, name, miss, delivery, listing]
        } else {
            vec![
                commit_unsynced,
                commit,
                name,
                hit,
                miss,
                reading,
                delivery,
                listing,
                listing * 1000.0 / names as f64,
            ]
        })
    }
}

/// One row per operation and layout: the median of its figures over the rounds.
fn medians(
    columns: &mut [Vec<Row>],
    operations: &[(&'static str, &'static str)],
    figures: &Figures,
) {
    for (column, rounds) in columns.iter_mut().zip(figures) {
        for (i, &(operation, unit)) in operations.iter().enumerate() {
            let values = rounds.iter().map(|round| round[i]).collect();
            column.push((operation, unit, shown(median(values))));
        }
    }
}
/// Microseconds per call of `op(0..count)`.
fn timed(count: usize, mut op: impl FnMut(usize) -> io::Result<()>) -> io::Result<f64> {
    let clock = Instant::now();
    for i in 0..count {
        op(i)?;
    }
    Ok(clock.elapsed().as_secs_f64() * 1e6 / count as f64)
}

fn micros(seconds: f64, count: usize) -> String {
    shown(seconds * 1e6 / count.max(1) as f64)
}

/// Three significant digits or more, as a table shows them.
fn shown(value: f64) -> String {
    match value {
        v if v < 1.0 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

fn joined(figures: &[f64]) -> String {
    figures
        .iter()
        .map(|&v| shown(v))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The fewest and most names one `env/` directory holds: how evenly the ids spread.
fn spread(tree: &Tree, ids: &[QueueId]) -> String {
    let mut counts = vec![0usize; tree.dirs.len()];
    for id in ids {
        counts[tree.layout.slot(id)] += 1;
    }
    let fewest = counts.iter().min().copied().unwrap_or(0);
    let most = counts.iter().max().copied().unwrap_or(0);
    if fewest == most {
        format!("{most}")
    } else {
        format!("{fewest}–{most}")
    }
}

fn load() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn available_mb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb / 1024)
}

/// xorshift64*: random picks among the queued ids, with no crate for it.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Rng(seed | 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let n = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        &items[(n % items.len() as u64) as usize]
    }
}
