//! The record's file format: a first line naming the file, one item a line, and a last line that
//! seals them.
//!
//! The seal counts the items and holds the exclusive or of their FNV-1a hashes, so a file cut
//! anywhere, an item lost, added or changed, or another file's first line is recognised and never
//! believed. An exclusive or lets an append update the seal from the old one alone.

use super::FILE_MAGIC;
use crate::queue::QueueId;

/// The last line of a record file: how many lines lie between it and the first, and a hash of
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Seal {
    count: u64,
    hash: u64,
}

impl Seal {
    fn of<'a>(items: impl IntoIterator<Item = &'a str>) -> Seal {
        items.into_iter().fold(Seal::default(), Seal::add)
    }

    pub(super) fn add(self, item: &str) -> Seal {
        Seal {
            count: self.count + 1,
            hash: self.hash ^ fnv1a(item.as_bytes()),
        }
    }

    pub(super) fn line(self) -> String {
        format!("end {} {:016x}\n", self.count, self.hash)
    }

    pub(super) fn parse(line: &str) -> Option<Seal> {
        let mut words = line.strip_prefix("end ")?.split(' ');
        let count = words.next()?;
        let hash = words.next()?;
        if words.next().is_some()
            || hash.len() != 16
            || !count.bytes().all(|b| b.is_ascii_digit())
            || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        Some(Seal {
            count: count.parse().ok()?,
            hash: u64::from_str_radix(hash, 16).ok()?,
        })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A whole record file: its first line, its items, its last line.
pub(super) fn render<'a>(
    magic: &str,
    name: &str,
    items: impl IntoIterator<Item = &'a str>,
) -> Vec<u8> {
    let mut out = format!("{magic} {name}\n");
    let mut seal = Seal::default();
    for item in items {
        out.push_str(item);
        out.push('\n');
        seal = seal.add(item);
    }
    out.push_str(&seal.line());
    out.into_bytes()
}

/// The items of a whole record file whose first line is `MAGIC NAME`, or `None` when anything
/// about it is off.
pub(super) fn parse<'b>(bytes: &'b [u8], magic: &str, name: &str) -> Option<Vec<&'b str>> {
    let body = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let (head, rest) = body.split_once('\n')?;
    if head.strip_prefix(magic)?.strip_prefix(' ')? != name {
        return None;
    }
    let (items, last) = match rest.rsplit_once('\n') {
        Some((items, last)) => (items.split('\n').collect(), last),
        None => (Vec::new(), rest),
    };
    (Seal::parse(last)? == Seal::of(items.iter().copied())).then_some(items)
}

/// The ids of a domain file, or `None` when it is not whole.
pub(super) fn parse_ids(bytes: &[u8], name: &str) -> Option<Vec<QueueId>> {
    parse(bytes, FILE_MAGIC, name)?
        .into_iter()
        .map(QueueId::parse)
        .collect()
}

/// Every line of a damaged domain file that is an id: what a rebuild keeps of it.
pub(super) fn salvage_ids(bytes: &[u8]) -> Vec<QueueId> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok().and_then(QueueId::parse))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_any_cut_or_edit_is_refused() {
        let ids = ["1xWNa000000001", "1xWNa000000002", "1xWNa000000003"];
        let bytes = render(FILE_MAGIC, "customer.test", ids);
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "customer.test"),
            Some(ids.to_vec())
        );
        assert_eq!(
            parse(&bytes, FILE_MAGIC, "other.test"),
            None,
            "another domain's"
        );
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut], FILE_MAGIC, "customer.test"),
                None,
                "cut at {cut}"
            );
        }
        let text = String::from_utf8(bytes.clone()).unwrap();
        let without_one = text.replace("1xWNa000000002\n", "");
        let changed = text.replace("1xWNa000000002", "1xWNa000000009");
        for edited in [without_one, changed] {
            assert_eq!(parse(edited.as_bytes(), FILE_MAGIC, "customer.test"), None);
        }
        let empty = render(FILE_MAGIC, "customer.test", []);
        assert_eq!(parse(&empty, FILE_MAGIC, "customer.test"), Some(vec![]));
    }
}
