//! The queue index: an advisory copy of every envelope in one file, so that listing a queue that
//! has not changed since the last listing reads one file instead of one per message.
//!
//! `QUEUE/index` is written by a listing that has just read every envelope, and only when none of
//! `env/`, `hold/` and `data/` changed while it read them. It records the three directories'
//! stamps: inode, and modification and change times to the nanosecond. Every change to a message
//! is a rename or an unlink in one of those directories (envelopes are replaced, never edited),
//! and each moves that directory's times; so an index whose stamps are the directories' stamps now
//! describes the queue as it is now, and a listing needs neither to read the directories nor to
//! open an envelope.
//!
//! File format: a header, a table of the messages in listing order (oldest first) with the inode
//! of each data file (to match the kernel's lock table), then each envelope:
//!
//! ```text
//! etrnq-index 1<TAB><env/ stamp><TAB><hold/ stamp><TAB><data/ stamp><TAB><messages>
//! <active|held><TAB><queue id><TAB><data inode>          (one line per message)
//! <active|held><TAB><queue id><TAB><length>             (one record per message)
//! <length bytes: the envelope, exactly as `envelope` writes it>
//! end-of-index
//! ```
//!
//! A stamp is `inode:mtime-seconds.nanoseconds:ctime-seconds.nanoseconds`.
//!
//! # Promises
//!
//! Advisory only: it serves listings (`mailq` without `-R`); no delivery decision is taken from
//! it, deleting it is always safe, and a torn, foreign or stale index is ignored (the envelopes
//! are read instead). Each record is length-prefixed and each envelope carries its own first and
//! last line, so a torn or garbled record is recognised, never half-believed.
//!
//! # Security
//!
//! The index is a queue file like the others: opened without following a link or waiting on a
//! pipe, and only believed when it is a regular file of the queue's owner. Nothing in it is read
//! unbounded: a line longer than `MAX_LINE` or a record longer than an envelope may be
//! ([`MAX_BYTES`](crate::queue::envelope::MAX_BYTES)) ends the index as damage.
//!
//! # Limits
//!
//! Directory times have the file system's granularity: a change within the same clock tick as the
//! previous one might not move them. An index is therefore only written when both directories
//! last changed at least [`SETTLE`] before the listing began, so a listing that follows a busy
//! queue closely reads every envelope. An envelope edited in place by hand is not noticed until
//! the queue next changes. On NFS, a client believes its cached directory times for as long as
//! its attribute cache lasts, so a listing there may lag another host's changes by that long (its
//! directory listings lag alike).

use std::fmt;
use std::fs::Metadata;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::{Place, QueueId};

const MAGIC: &str = "etrnq-index 1";
const TRAILER: &str = "end-of-index";

/// How long a directory must have been still before its times can vouch for its contents:
/// far longer than any file system's timestamp tick.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A record holds one envelope, so it is never longer than an envelope may be.
const MAX_RECORD: usize = crate::queue::envelope::MAX_BYTES as usize;

/// The longest line outside the records: the header (three stamps of at most 63 characters, a
/// count) and each table line and record line (a place, an id, a number) are far shorter.
const MAX_LINE: u64 = 512;

/// What identifies one state of a directory: it changes with every entry added, removed or
/// renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    inode: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl DirStamp {
    pub fn of(meta: &Metadata) -> DirStamp {
        DirStamp {
            inode: meta.ino(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// True when the directory last changed at least [`SETTLE`] before `now`, so that any later
    /// change is bound to give it different times.
    pub fn is_settled(&self, now: SystemTime) -> bool {
        let Some(limit) = now
            .checked_sub(SETTLE)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        else {
            return false;
        };
        let limit = (limit.as_secs() as i64, i64::from(limit.subsec_nanos()));
        self.modified <= limit && self.changed <= limit
    }

    fn parse(text: &str) -> Option<DirStamp> {
        let mut parts = text.split(':');
        let inode = parts.next()?.parse().ok()?;
        let modified = parse_time(parts.next()?)?;
        let changed = parse_time(parts.next()?)?;
        parts.next().is_none().then_some(DirStamp {
            inode,
            modified,
            changed,
        })
    }
}

impl fmt::Display for DirStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ms, mn) = self.modified;
        let (cs, cn) = self.changed;
        write!(f, "{}:{ms}.{mn:09}:{cs}.{cn:09}", self.inode)
    }
}

fn parse_time(text: &str) -> Option<(i64, i64)> {
    let (seconds, nanos) = text.split_once('.')?;
    let nanos: i64 = nanos.parse().ok()?;
    (0..1_000_000_000)
        .contains(&nanos)
        .then_some((seconds.parse().ok()?, nanos))
}

/// The stamps of `env/`, `hold/` and `data/`, which together vouch for every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    pub active: DirStamp,
    pub held: DirStamp,
    pub data: DirStamp,
}

impl Stamps {
    pub fn is_settled(&self, now: SystemTime) -> bool {
        [self.active, self.held, self.data]
            .iter()
            .all(|stamp| stamp.is_settled(now))
    }
}

/// One message in the index's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: QueueId,
    pub place: Place,
    /// The inode of its data file, which is never replaced.
    pub data_inode: u64,
}

/// Writes an index: the table first, then the envelopes record by record, as a listing reads
/// them.
pub struct IndexWriter<W: Write> {
    out: W,
}

impl<W: Write> IndexWriter<W> {
    pub fn new(mut out: W, stamps: &Stamps, table: &[Entry]) -> io::Result<IndexWriter<W>> {
        writeln!(
            out,
            "{MAGIC}\t{}\t{}\t{}\t{}",
            stamps.active,
            stamps.held,
            stamps.data,
            table.len()
        )?;
        for entry in table {
            writeln!(
                out,
                "{}\t{}\t{}",
                place_name(entry.place),
                entry.id,
                entry.data_inode
            )?;
        }
        Ok(IndexWriter { out })
    }

    /// Adds one envelope, as the bytes of its file (already known to parse).
    pub fn add(&mut self, place: Place, id: QueueId, envelope: &[u8]) -> io::Result<()> {
        writeln!(self.out, "{}\t{id}\t{}", place_name(place), envelope.len())?;
        self.out.write_all(envelope)
    }

    /// Writes the trailer and hands back the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        writeln!(self.out, "{TRAILER}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The table of an index that describes the queue as it is.
pub struct Table {
    /// In listing order.
    pub entries: Vec<Entry>,
    /// Where the first record starts.
    pub records_at: u64,
}

/// Reads the header and the table; `None` unless this is a well-formed index made for exactly
/// these directory stamps.
pub fn read_table(input: &mut impl BufRead, stamps: &Stamps) -> Option<Table> {
    let mut line = String::new();
    let mut consumed = read_line(input, &mut line)?;
    let mut fields = line.strip_suffix('\n')?.split('\t');
    if fields.next() != Some(MAGIC) {
        return None;
    }
    let recorded = Stamps {
        active: DirStamp::parse(fields.next()?)?,
        held: DirStamp::parse(fields.next()?)?,
        data: DirStamp::parse(fields.next()?)?,
    };
    let count: usize = fields.next()?.parse().ok()?;
    if fields.next().is_some() || recorded != *stamps {
        return None;
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        line.clear();
        consumed += read_line(input, &mut line)?;
        let mut fields = line.strip_suffix('\n')?.split('\t');
        let entry = Entry {
            place: parse_place(fields.next()?)?,
            id: QueueId::parse(fields.next()?)?,
            data_inode: fields.next()?.parse().ok()?,
        };
        // Records are merged with the table in order; an unordered table is not ours.
        if fields.next().is_some()
            || entries
                .last()
                .is_some_and(|last| (last.id, last.place) >= (entry.id, entry.place))
        {
            return None;
        }
        entries.push(entry);
    }
    Some(Table {
        entries,
        records_at: consumed as u64,
    })
}

/// The records of an index, from its first one. The trailer or any damage ends them; a reader
/// reads the envelopes it did not get from their files.
pub struct Records<R: BufRead> {
    input: R,
    line: String,
    ended: bool,
}

/// One record: which message, and its envelope's bytes (not yet parsed).
pub struct Record {
    pub id: QueueId,
    pub place: Place,
    pub envelope: Vec<u8>,
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R) -> Records<R> {
        Records {
            input,
            line: String::new(),
            ended: false,
        }
    }

    fn read_record(&mut self) -> Option<Record> {
        self.line.clear();
        read_line(&mut self.input, &mut self.line)?;
        let mut fields = self.line.strip_suffix('\n')?.split('\t');
        let place = parse_place(fields.next()?)?;
        let id = QueueId::parse(fields.next()?)?;
        let length: usize = fields.next()?.parse().ok()?;
        if fields.next().is_some() || length > MAX_RECORD {
            return None;
        }
        let mut envelope = vec![0; length];
        self.input.read_exact(&mut envelope).ok()?;
        Some(Record {
            id,
            place,
            envelope,
        })
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.ended {
            return None;
        }
        let record = self.read_record();
        self.ended = record.is_none();
        record
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes, its newline included; `None` for a longer or
/// unfinished line, which only damage makes.
fn read_line(input: &mut impl BufRead, line: &mut String) -> Option<usize> {
    let read = io::Read::take(&mut *input, MAX_LINE).read_line(line).ok()?;
    line.ends_with('\n').then_some(read)
}

fn parse_place(text: &str) -> Option<Place> {
    match text {
        "active" => Some(Place::Active),
        "held" => Some(Place::Held),
        _ => None,
    }
}

fn place_name(place: Place) -> &'static str {
    match place {
        Place::Active => "active",
        Place::Held => "held",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::{Envelope, Recipient};

    fn stamp(inode: u64, seconds: i64) -> DirStamp {
        DirStamp {
            inode,
            modified: (seconds, 5),
            changed: (seconds, 7),
        }
    }

    fn stamps() -> Stamps {
        Stamps {
            active: stamp(11, 1_700_000_000),
            held: stamp(12, 1_700_000_001),
            data: stamp(13, 1_700_000_002),
        }
    }

    fn envelope(id: QueueId) -> Envelope {
        Envelope {
            id,
            arrival: 1_700_000_000,
            size: 42,
            sender: "someone@example.test".into(),
            notify: None,
            ret: None,
            envid: None,
            warned: None,
            recipients: vec![Recipient::new("u@customer.test".into())],
        }
    }

    fn table() -> Vec<Entry> {
        let mut ids = [QueueId::generate(), QueueId::generate()];
        ids.sort();
        vec![
            Entry {
                id: ids[0],
                place: Place::Active,
                data_inode: 100,
            },
            Entry {
                id: ids[1],
                place: Place::Held,
                data_inode: 101,
            },
        ]
    }

    fn written(table: &[Entry]) -> Vec<u8> {
        let mut writer = IndexWriter::new(Vec::new(), &stamps(), table).unwrap();
        for entry in table {
            writer
                .add(entry.place, entry.id, &envelope(entry.id).to_bytes())
                .unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn table_and_records_come_back_in_order() {
        let table = table();
        let bytes = written(&table);
        let mut input = &bytes[..];
        let read = read_table(&mut input, &stamps()).unwrap();
        assert_eq!(read.entries, table);
        let records: Vec<Record> = Records::new(&bytes[read.records_at as usize..]).collect();
        assert_eq!(records.len(), table.len());
        for (record, entry) in records.iter().zip(&table) {
            assert_eq!((record.id, record.place), (entry.id, entry.place));
            assert_eq!(
                Envelope::parse(&record.envelope).unwrap(),
                envelope(entry.id)
            );
        }
    }

    #[test]
    fn other_stamps_refuse_the_index() {
        let bytes = written(&table());
        for change in 0..3 {
            let mut moved = stamps();
            match change {
                0 => moved.active.changed.1 += 1,
                1 => moved.held.inode += 1,
                _ => moved.data.modified.0 += 1,
            }
            assert!(read_table(&mut &bytes[..], &moved).is_none());
        }
        assert!(read_table(&mut &b"etrnq-envelope 1\n"[..], &stamps()).is_none());
    }

    #[test]
    fn an_unordered_or_short_table_is_refused() {
        let mut table = table();
        table.swap(0, 1);
        assert!(read_table(&mut &written(&table)[..], &stamps()).is_none());
        let bytes = written(&self::table());
        let text = String::from_utf8(bytes).unwrap();
        let header_end = text.find('\n').unwrap();
        let short = format!("{}\n", &text[..header_end]);
        assert!(read_table(&mut short.as_bytes(), &stamps()).is_none());
    }

    #[test]
    fn a_torn_index_yields_only_whole_records() {
        let bytes = written(&table());
        let records_at = read_table(&mut &bytes[..], &stamps()).unwrap().records_at as usize;
        for cut in records_at..bytes.len() {
            let mut records = 0;
            for record in Records::new(&bytes[records_at..cut]) {
                assert!(Envelope::parse(&record.envelope).is_ok(), "cut at {cut}");
                records += 1;
            }
            assert!(records <= 2);
        }
    }

    #[test]
    fn a_garbled_length_ends_the_records() {
        let bytes = written(&table());
        let records_at = read_table(&mut &bytes[..], &stamps()).unwrap().records_at as usize;
        let text = String::from_utf8(bytes[records_at..].to_vec()).unwrap();
        let header = text.lines().next().unwrap();
        let (head, length) = header.rsplit_once('\t').unwrap();
        let longer = format!("{head}\t{}", length.parse::<usize>().unwrap() + 1);
        let garbled = text.replacen(header, &longer, 1);
        let mut records = Records::new(garbled.as_bytes());
        let damaged = records.next().map(|r| Envelope::parse(&r.envelope));
        assert!(!matches!(damaged, Some(Ok(_))));
        assert!(records.next().is_none());
    }

    #[test]
    fn long_lines_and_records_end_the_index_unread() {
        let mut endless = b"etrnq-index 1\t".to_vec();
        endless.extend(std::iter::repeat_n(b'7', 10 * MAX_LINE as usize));
        assert!(read_table(&mut &endless[..], &stamps()).is_none());

        let id = QueueId::generate();
        let table_line = format!("active\t{id}\t{}", "9".repeat(2 * MAX_LINE as usize));
        let bytes = written(&[]);
        let text = String::from_utf8(bytes).unwrap();
        let header = text.lines().next().unwrap().replace("\t0", "\t1");
        let long_table = format!("{header}\n{table_line}\nend-of-index\n");
        assert!(read_table(&mut long_table.as_bytes(), &stamps()).is_none());

        let huge = format!("active\t{id}\t{}\n", MAX_RECORD + 1);
        assert!(Records::new(huge.as_bytes()).next().is_none());
    }

    #[test]
    fn stamps_round_trip_and_settle() {
        let s = stamp(99, 1_700_000_000);
        assert_eq!(DirStamp::parse(&s.to_string()), Some(s));
        assert_eq!(DirStamp::parse("1:2.3"), None);
        assert_eq!(DirStamp::parse("1:2.3:4.1000000000"), None);
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(seconds);
        assert!(s.is_settled(at(1_700_000_002)));
        assert!(!s.is_settled(at(1_700_000_001)));
        assert!(stamps().is_settled(at(1_700_000_004)));
        assert!(!stamps().is_settled(at(1_700_000_003)));
    }
}

#[cfg(test)]
mod properties;
