//! Property tests of every reader of bytes that others wrote: what they share.
//!
//! The readers: SMTP command lines and message data as queue-smtpd reads them
//! (`smtpd::wire`, `smtpd::request`), replies and EHLO keywords as the client reads them
//! (`smtp::reply`, `smtp::capabilities`), ETRN arguments and ESMTP parameters
//! (`smtp::command`), the header section of an arriving message (`header`), addresses, domains
//! and reverse paths (`address`), domain patterns (`selection`), relay hosts (`route`), the
//! envelope file (`envelope`), the listing index (`index`), users files (`smtpd::recipients`),
//! domain list files (`config::domain_list`), the configuration with its interval, size and
//! name-server values (`config`), and the original message a bounce quotes (`bounce`). Each of these modules has a `properties` test
//! module at its bottom; `tests/properties.rs` drives whole programs the same way: queue-smtpd,
//! queue-enqueue (its `-t` recipients too) and the SMTP client over a socket.
//!
//! Every property is tried on raw arbitrary bytes and on near-valid input: a valid form put
//! through a few mutations ([`mutated`]: cut short, a byte inserted, dropped, replaced or a
//! stretch repeated, with the bytes that break parsers favoured: NUL, a bare CR or LF, quotes,
//! brackets). They assert that nothing panics, that what is refused is refused with the typed
//! error, that what a writer wrote reads back as it was, and that one parse never holds more
//! memory than its input calls for ([`peak`]).
//!
//! Running them:
//!
//! ```text
//! cargo test --release --lib properties           # the module properties
//! cargo test --release --test properties          # the whole programs
//! ```
//!
//! Runs are reproducible: the random generator starts from [`SEED`] unless
//! `PROPTEST_RNG_SEED` names another seed, so a failure seen once is seen again on every
//! machine, and CI runs exactly what a developer ran. Nothing is written to disk on failure
//! (proptest's failure files would land in the source tree); the failing input is printed,
//! shrunk, and is added to the module's tests as a plain test when its bug is fixed. Each
//! property runs as many cases as its cost allows for the whole suite to take about 15 seconds
//! on an idle two-core machine (the module properties about 10, the programs about 3);
//! `PROPTEST_CASES` overrides every one of them. Before a release, run many more cases under a
//! new seed (about 3 and 7 minutes on two cores), and keep the seed of any failure:
//!
//! ```text
//! seed=$(date +%s); echo "seed $seed"
//! PROPTEST_CASES=100000 PROPTEST_RNG_SEED=$seed cargo test --release --lib properties
//! PROPTEST_CASES=20000 PROPTEST_RNG_SEED=$seed cargo test --release --test properties
//! ```
//!
//! Memory is measured, not assumed: this file installs a counting global allocator in each
//! test program that includes it, and [`peak`] gives the most bytes one call held at once
//! beyond what was held before it, counted on the calling thread only, so tests running in
//! parallel do not disturb each other. A reallocation counts by what it grew. The bounds the
//! properties assert are the parsers' own promises (the header section's 100 KiB, an envelope
//! at most 16 MiB, a reply's line limits) or a small multiple of the input's length; they are
//! memory, not time, so a busy machine cannot make them fail.
//!
//! The file uses only `std` and `proptest`, so that `tests/properties.rs` includes it as it is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// The seed of every run that does not name its own in `PROPTEST_RNG_SEED`.
pub const SEED: u64 = 0x6574_726e_715f_7031;

/// A property's configuration: `cases` cases unless `PROPTEST_CASES` says otherwise, the fixed
/// seed unless `PROPTEST_RNG_SEED` says otherwise, and no failure files.
pub fn config(cases: u32) -> Config {
    let base = Config::default();
    Config {
        cases: match std::env::var_os("PROPTEST_CASES") {
            Some(_) => base.cases,
            None => cases,
        },
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            chosen => chosen,
        },
        failure_persistence: None,
        ..base
    }
}

/// Counts the bytes each thread holds and the most it held since [`peak`] last looked.
struct Meter;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static MOST: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get().wrapping_add(bytes as isize);
        held.set(now);
        let _ = MOST.try_with(|most| most.set(most.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    // Memory freed on another thread than took it makes a thread's count drift; only the
    // difference within one call is ever used.
    let _ = HELD.try_with(|held| held.set(held.get().wrapping_sub(bytes as isize)));
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting touches
// only const-initialised thread locals without destructors, which neither allocate nor fail.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises about `layout` are passed on.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            grew(layout.size());
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            grew(layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` came from this allocator, which took it from `System`.
        unsafe { System.dealloc(block, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, with the caller's promises about `new_size`.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            match new_size.checked_sub(layout.size()) {
                Some(more) => grew(more),
                None => shrank(layout.size() - new_size),
            }
        }
        moved
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Runs `f` and returns what it returned and the most bytes it held at once on this thread,
/// its result included, beyond what the thread held before.
pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    MOST.with(|most| most.set(before));
    let value = f();
    let most = MOST.with(Cell::get);
    (value, most.saturating_sub(before).max(0) as usize)
}

/// The bytes that break parsers most often: line ends alone, NUL, quoting, brackets, the
/// separators of addresses, paths, parameters and records, and bytes that are not UTF-8.
pub const SHARP_BYTES: &[u8] = b"\0\r\n\t \"\\<>@:;.,%!#[]=-+/\x7f\x80\xc3\xff";

/// One byte, a sharp one more often than chance would give.
pub fn sharp_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => proptest::sample::select(SHARP_BYTES),
        1 => any::<u8>(),
    ]
}

/// One change to a valid input. Positions are taken modulo the input's length at the time.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Cut short here.
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
    Replace(usize, u8),
    /// The stretch from here, at most 64 octets as long as the second number gives, repeated
    /// this often.
    Repeat(usize, usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), sharp_byte()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), sharp_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        (any::<usize>(), any::<usize>(), 2..50u8)
            .prop_map(|(at, len, n)| Mutation::Repeat(at, len, n)),
    ]
}

/// `valid` with the `changes` made in turn.
pub fn apply(valid: &[u8], changes: &[Mutation]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for change in changes {
        let len = bytes.len();
        match *change {
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            Mutation::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Mutation::Remove(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Mutation::Replace(at, b) if len > 0 => bytes[at % len] = b,
            Mutation::Repeat(at, stretch, times) if len > 0 => {
                let from = at % len;
                let to = from + 1 + stretch % (len - from).min(64);
                let piece = bytes[from..to].to_vec();
                let tail = bytes.split_off(to);
                for _ in 1..times {
                    bytes.extend_from_slice(&piece);
                }
                bytes.extend_from_slice(&tail);
            }
            Mutation::Remove(_) | Mutation::Replace(..) | Mutation::Repeat(..) => {}
        }
    }
    bytes
}

/// Inputs near `valid`: each put through one to four mutations, and now and then left whole.
pub fn mutated(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (valid, proptest::collection::vec(mutation(), 0..5))
        .prop_map(|(bytes, changes)| apply(&bytes, &changes))
}

/// As [`mutated`], for parsers of text: the result read as UTF-8, bad sequences replaced.
pub fn mutated_text(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    mutated(valid.prop_map(String::into_bytes))
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Arbitrary bytes, up to `max` long, with the sharp ones favoured.
pub fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(sharp_byte(), 0..max)
}

/// Arbitrary text, up to `max` characters: any character, the sharp ASCII ones favoured.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(SHARP_BYTES).prop_map(char::from),
            2 => proptest::char::range('!', '~'),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_sees_what_a_call_holds_and_not_what_came_before() {
        let before = vec![0u8; 1 << 20];
        let ((), most) = peak(|| {
            let big = vec![1u8; 300_000];
            drop(big);
            let small = vec![2u8; 1000];
            drop(small);
        });
        assert!((300_000..310_000).contains(&most), "{most}");
        let (kept, most) = peak(|| vec![3u8; 5000]);
        assert!(most >= 5000 && kept.len() == 5000);
        drop(before);
    }

    #[test]
    fn mutations_stay_within_reach_of_the_input() {
        let changes = [Mutation::Repeat(0, 3, 3), Mutation::Insert(6, b'\r')];
        let out = apply(b"abcd", &changes);
        assert_eq!(out.len(), 13);
        assert!(out.contains(&b'\r'));
        assert_eq!(apply(b"", &changes), b"\r");
    }
}
