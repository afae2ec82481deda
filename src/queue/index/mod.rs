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
//! of each data file (to match the kernel's lock table), then each envelope. Table lines have one
//! length (the place padded with spaces, the inode with zeros), so that a listing writes the
//! index in the one pass that reads the envelopes, holding nothing per message:
//!
//! ```text
//! etrnq-index 2<TAB><env/ stamp><TAB><hold/ stamp><TAB><data/ stamp><TAB><messages>
//! <active|held  ><TAB><queue id><TAB><data inode, 20 digits>   (one line per message)
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
use std::io::{self, BufRead, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::{Place, QueueId};

const MAGIC: &str = "etrnq-index 2";
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

/// Writes an index in one pass over the queue, holding nothing per message: each message's
/// table line goes to its fixed place (the table's lines all have one length, so the records can
/// start before the table is known), its record after the previous one.
pub struct IndexWriter<W: Write + Seek> {
    out: W,
    count: usize,
    /// Where the next table line goes, and where the next record goes.
    table_at: u64,
    records_at: u64,
    /// Table lines not yet written, at most `TABLE_CHUNK`.
    pending: Vec<u8>,
    added: usize,
}

/// Table lines written at once: one seek each way per chunk, not per message.
const TABLE_CHUNK: usize = 4096;

/// Every table line has this length: a place padded to six characters, an id, an inode of
/// twenty digits, a tab each between and a newline.
const TABLE_LINE: usize = 6 + 1 + QueueId::LEN + 1 + 20 + 1;

impl<W: Write + Seek> IndexWriter<W> {
    /// Writes the header of an index of `count` messages, at the start of `out`; exactly
    /// `count` messages must be added.
    pub fn new(mut out: W, stamps: &Stamps, count: usize) -> io::Result<IndexWriter<W>> {
        let header = format!(
            "{MAGIC}\t{}\t{}\t{}\t{count}\n",
            stamps.active, stamps.held, stamps.data
        );
        out.seek(io::SeekFrom::Start(0))?;
        out.write_all(header.as_bytes())?;
        let table_at = header.len() as u64;
        let records_at = table_at + (count * TABLE_LINE) as u64;
        out.seek(io::SeekFrom::Start(records_at))?;
        Ok(IndexWriter {
            out,
            count,
            table_at,
            records_at,
            pending: Vec::with_capacity(TABLE_CHUNK * TABLE_LINE),
            added: 0,
        })
    }

    /// Adds one message, in listing order: its table entry and its envelope, as the bytes of its
    /// file (already known to parse).
    pub fn add(&mut self, entry: &Entry, envelope: &[u8]) -> io::Result<()> {
        if self.added == self.count {
            return Err(io::Error::other("more messages than the index counts"));
        }
        writeln!(
            self.pending,
            "{:<6}\t{}\t{:020}",
            place_name(entry.place),
            entry.id,
            entry.data_inode
        )?;
        let line = format!(
            "{}\t{}\t{}\n",
            place_name(entry.place),
            entry.id,
            envelope.len()
        );
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(envelope)?;
        self.records_at += (line.len() + envelope.len()) as u64;
        self.added += 1;
        if self.pending.len() >= TABLE_CHUNK * TABLE_LINE {
            self.write_table()?;
        }
        Ok(())
    }

    /// Writes the pending table lines in their place, and comes back to the records' end.
    fn write_table(&mut self) -> io::Result<()> {
        self.out.seek(io::SeekFrom::Start(self.table_at))?;
        self.out.write_all(&self.pending)?;
        self.table_at += self.pending.len() as u64;
        self.pending.clear();
        self.out.seek(io::SeekFrom::Start(self.records_at))?;
        Ok(())
    }

    /// Writes what is left of the table and the trailer, and hands back the output, flushed;
    /// an error unless every message counted was added.
    pub fn finish(mut self) -> io::Result<W> {
        if self.added != self.count {
            return Err(io::Error::other("fewer messages than the index counts"));
        }
        self.write_table()?;
        writeln!(self.out, "{TRAILER}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where the parts of an index found good are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Messages in the table.
    pub count: usize,
    /// Where the table's first line starts.
    pub table_at: u64,
    /// Where the first record starts.
    pub records_at: u64,
}

/// Reads the header and hands each entry of the table to `entry`, so that the table is never
/// held whole. `None` unless this is a well-formed index made for exactly these directory
/// stamps: the entries handed over before a `None` are then not to be believed.
pub fn read_table(
    input: &mut impl BufRead,
    stamps: &Stamps,
    mut entry: impl FnMut(Entry),
) -> Option<Layout> {
    let mut line = String::new();
    let table_at = read_line(input, &mut line)? as u64;
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
    let mut entries = Entries::new(input, count);
    for read in entries.by_ref() {
        entry(read);
    }
    (entries.left == 0).then_some(Layout {
        count,
        table_at,
        records_at: table_at + entries.consumed,
    })
}

/// The entries of a table, from its first line: `count` of them, unless damage ends them first.
pub struct Entries<R: BufRead> {
    input: R,
    line: String,
    left: usize,
    last: Option<(QueueId, Place)>,
    consumed: u64,
    damaged: bool,
}

impl<R: BufRead> Entries<R> {
    pub fn new(input: R, count: usize) -> Entries<R> {
        Entries {
            input,
            line: String::new(),
            left: count,
            last: None,
            consumed: 0,
            damaged: false,
        }
    }

    fn read_entry(&mut self) -> Option<Entry> {
        self.line.clear();
        self.consumed += read_line(&mut self.input, &mut self.line)? as u64;
        let mut fields = self.line.strip_suffix('\n')?.split('\t');
        let read = Entry {
            place: parse_place(fields.next()?.trim_end_matches(' '))?,
            id: QueueId::parse(fields.next()?)?,
            data_inode: fields.next()?.parse().ok()?,
        };
        // Records are merged with the table in order; an unordered table is not ours.
        if fields.next().is_some() || self.last >= Some((read.id, read.place)) {
            return None;
        }
        self.last = Some((read.id, read.place));
        Some(read)
    }
}

impl<R: BufRead> Iterator for Entries<R> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.left == 0 || self.damaged {
            return None;
        }
        let entry = self.read_entry();
        match entry {
            Some(_) => self.left -= 1,
            None => self.damaged = true,
        }
        entry
    }
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
    use crate::properties::peak;
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

    /// The table and where the records start, when the index is believed.
    fn read(input: &[u8], stamps: &Stamps) -> Option<(Vec<Entry>, usize)> {
        let mut entries = Vec::new();
        let layout = read_table(&mut &input[..], stamps, |entry| entries.push(entry))?;
        Some((entries, layout.records_at as usize))
    }

    fn written(table: &[Entry]) -> Vec<u8> {
        let mut writer =
            IndexWriter::new(io::Cursor::new(Vec::new()), &stamps(), table.len()).unwrap();
        for entry in table {
            writer.add(entry, &envelope(entry.id).to_bytes()).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn table_and_records_come_back_in_order() {
        let table = table();
        let bytes = written(&table);
        let (entries, records_at) = read(&bytes, &stamps()).unwrap();
        assert_eq!(entries, table);
        let records: Vec<Record> = Records::new(&bytes[records_at..]).collect();
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
            assert!(read(&bytes, &moved).is_none());
        }
        assert!(read(b"etrnq-envelope 1\n", &stamps()).is_none());
    }

    #[test]
    fn an_unordered_or_short_table_is_refused() {
        let mut table = table();
        table.swap(0, 1);
        assert!(read(&written(&table), &stamps()).is_none());
        let bytes = written(&self::table());
        let text = String::from_utf8(bytes).unwrap();
        let header_end = text.find('\n').unwrap();
        let short = format!("{}\n", &text[..header_end]);
        assert!(read(short.as_bytes(), &stamps()).is_none());
    }

    #[test]
    fn a_torn_index_yields_only_whole_records() {
        let bytes = written(&table());
        let (_, records_at) = read(&bytes, &stamps()).unwrap();
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
        let (_, records_at) = read(&bytes, &stamps()).unwrap();
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
        let mut endless = format!("{MAGIC}\t").into_bytes();
        endless.extend(std::iter::repeat_n(b'7', 10 * MAX_LINE as usize));
        assert!(read(&endless, &stamps()).is_none());

        let id = QueueId::generate();
        let table_line = format!("active\t{id}\t{}", "9".repeat(2 * MAX_LINE as usize));
        let bytes = written(&[]);
        let text = String::from_utf8(bytes).unwrap();
        let header = text.lines().next().unwrap().replace("\t0", "\t1");
        let long_table = format!("{header}\n{table_line}\nend-of-index\n");
        assert!(read(long_table.as_bytes(), &stamps()).is_none());

        let huge = format!("active\t{id}\t{}\n", MAX_RECORD + 1);
        assert!(Records::new(huge.as_bytes()).next().is_none());
    }

    /// Enough messages for the table to be written in several chunks.
    fn many(count: usize) -> Vec<Entry> {
        let mut ids: Vec<QueueId> = (0..count).map(|_| QueueId::generate()).collect();
        ids.sort();
        ids.into_iter()
            .enumerate()
            .map(|(n, id)| Entry {
                id,
                place: if n % 3 == 0 {
                    Place::Held
                } else {
                    Place::Active
                },
                data_inode: n as u64 * 7_919,
            })
            .collect()
    }

    #[test]
    fn a_table_of_many_chunks_comes_back_whole() {
        let table = many(3 * TABLE_CHUNK + 5);
        let bytes = written(&table);
        let (entries, records_at) = read(&bytes, &stamps()).unwrap();
        assert_eq!(entries, table);
        let records: Vec<Record> = Records::new(&bytes[records_at..]).collect();
        assert_eq!(records.len(), table.len());
        assert!(bytes.ends_with(b"end-of-index\n"));
    }

    #[test]
    fn writing_holds_one_chunk_of_the_table_whatever_the_count() {
        let table = many(4 * TABLE_CHUNK);
        let envelope = envelope(table[0].id).to_bytes();
        let file = tempfile::tempfile().unwrap();
        let (written, most) = peak(|| {
            let mut writer = IndexWriter::new(&file, &stamps(), table.len()).unwrap();
            for entry in &table {
                writer.add(entry, &envelope).unwrap();
            }
            writer.finish().map(|_| ())
        });
        written.unwrap();
        assert!(
            most <= TABLE_CHUNK * TABLE_LINE + 4096,
            "{most} bytes held to write {} messages",
            table.len()
        );
    }

    #[test]
    fn a_count_the_messages_do_not_match_writes_no_index() {
        let table = many(3);
        let mut short = IndexWriter::new(io::Cursor::new(Vec::new()), &stamps(), 4).unwrap();
        for entry in &table {
            short.add(entry, &envelope(entry.id).to_bytes()).unwrap();
        }
        assert!(short.finish().is_err());
        let mut long = IndexWriter::new(io::Cursor::new(Vec::new()), &stamps(), 2).unwrap();
        for entry in &table[..2] {
            long.add(entry, &envelope(entry.id).to_bytes()).unwrap();
        }
        assert!(
            long.add(&table[2], &envelope(table[2].id).to_bytes())
                .is_err()
        );
    }

    #[test]
    fn an_index_of_the_earlier_format_is_not_believed() {
        let bytes = written(&table());
        let text = String::from_utf8(bytes).unwrap();
        let earlier = text.replacen("etrnq-index 2\t", "etrnq-index 1\t", 1);
        assert!(read(earlier.as_bytes(), &stamps()).is_none());
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
