//! Property tests of `bounce`: the original is copied line by line, whatever its bytes.

use super::*;
use crate::properties::{bytes, config, mutated, peak};
use proptest::prelude::*;

/// The original as the report must show it: each line with LF alone, and with headers
/// only, up to the empty line.
fn expected(data: &[u8], full: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let text = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if text.is_empty() && !full {
            break;
        }
        out.extend_from_slice(text);
        out.push(b'\n');
    }
    out
}

/// Reads at most the given numbers of octets at a time, in turn.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sizes[self.turn % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len());
        self.turn += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    "(Subject: [ -~]{0,20}\r?\n){0,3}\r?\n([ -~]{0,30}\r?\n){0,4}".prop_map(String::into_bytes)
}

/// Lines around the size of a piece, with CRs near their ends: a CRLF may straddle two
/// pieces.
fn long_lines() -> impl Strategy<Value = Vec<u8>> {
    let piece = PIECE as usize;
    proptest::collection::vec((piece - 3..piece + 3, any::<bool>(), any::<bool>()), 1..4).prop_map(
        |lines| {
            let mut data = Vec::new();
            for (len, cr, lf) in lines {
                data.resize(data.len() + len, b'x');
                if cr {
                    data.push(b'\r');
                }
                if lf {
                    data.push(b'\n');
                }
            }
            data
        },
    )
}

proptest! {
    #![proptest_config(config(8000))]

    #[test]
    fn the_original_is_copied_line_by_line_with_lf(
        data in prop_oneof![bytes(2000), mutated(message()), long_lines()],
        full in any::<bool>(),
        sizes in proptest::collection::vec(1..20usize, 1..5),
    ) {
        let mut out = Vec::new();
        let source = Trickle { data: &data, sizes, turn: 0 };
        copy_original(&mut out, source, full).unwrap();
        prop_assert_eq!(out, expected(&data, full));
    }
}

#[test]
fn a_ten_megabyte_line_is_copied_without_being_held() {
    let mut data = b"Subject: ".to_vec();
    data.resize(10 << 20, b'x');
    data.extend_from_slice(b"\r\n\r\nbody\r\n");
    for full in [false, true] {
        let (result, most) = peak(|| copy_original(&mut std::io::sink(), &data[..], full));
        result.unwrap();
        assert!(most <= 64 * 1024, "{most} bytes held");
    }
}
