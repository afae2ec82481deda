use super::*;
use crate::header::Lines;
use crate::properties::{bytes, config, mutated, peak};
use proptest::prelude::*;

/// Input that arrives in reads of the given sizes, in turn: a line may be cut anywhere,
/// between its CR and its LF too.
struct Trickle {
    input: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn channel(input: &[u8], sizes: &[usize]) -> Channel {
    let reader = Trickle {
        input: input.to_vec(),
        at: 0,
        sizes: sizes.to_vec(),
        turn: 0,
    };
    Channel::new(Box::new(reader), Box::new(io::sink()), None)
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1..40usize, 1..8)
}

/// Every command line until the end of input, each read holding no more than a line's
/// worth of memory, and each line as the server promises it: no CR or LF, within limits.
fn commands(channel: &mut Channel) -> Vec<CommandLine> {
    let mut lines = Vec::new();
    loop {
        let (line, most) = peak(|| channel.read_command().unwrap());
        assert!(
            most <= 2 * MAX_COMMAND_LINE + 64,
            "{most} bytes for one command"
        );
        let Some(line) = line else {
            return lines;
        };
        if let Ok(text) = &line {
            assert!(text.len() <= MAX_COMMAND_LINE - 2);
            assert!(!text.iter().any(|&b| b == b'\r' || b == b'\n'), "{text:?}");
        }
        lines.push(line);
    }
}

/// What a DATA phase reads from `input`: the lines given, the fault, and the commands
/// after it (or `None` when the input ended inside the data).
type DataOutcome = (Vec<Vec<u8>>, Option<DataFault>, Option<Vec<CommandLine>>);

fn data(input: &[u8], sizes: &[usize], limit: u64) -> DataOutcome {
    let mut channel = channel(input, sizes);
    let mut data = channel.data(limit);
    let mut lines = Vec::new();
    let ended = loop {
        let (line, most) = peak(|| data.next_line().map(|l| l.map(<[u8]>::to_vec)));
        assert!(
            most <= 2 * MAX_TEXT_LINE + 64,
            "{most} bytes for one data line"
        );
        match line {
            Ok(Some(line)) => {
                assert!(line.len() <= MAX_TEXT_LINE);
                assert!(is_one_crlf_line(&line), "{line:?}");
                lines.push(line);
            }
            Ok(None) => break true,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                break false;
            }
        }
    };
    let fault = data.fault();
    if fault.is_some() {
        assert!(lines.is_empty() || ended);
    }
    let rest = ended.then(|| commands(&mut channel));
    (lines, fault, rest)
}

/// Text lines as a client sends them: no CR or LF inside, and at most 998 octets once
/// dot-stuffed.
fn text_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let octet = any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b });
    let line = prop_oneof![
        4 => proptest::collection::vec(octet.clone(), 0..80),
        1 => proptest::collection::vec(octet, 900..=997),
        1 => "\\.{1,3}[a-z]{0,3}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(line, 0..30)
}

/// RFC 5321 §4.5.2, as the client does it: a dot opening a line is doubled.
fn stuffed(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for line in lines {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\nQUIT\r\n");
    wire
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn command_lines_read_whole_however_they_arrive(
        lines in proptest::collection::vec("[ -~]{0,510}", 0..20),
        sizes in read_sizes(),
    ) {
        let wire: Vec<u8> = lines.iter().flat_map(|l| [l.as_bytes(), b"\r\n"].concat()).collect();
        let read = commands(&mut channel(&wire, &sizes));
        let expected: Vec<CommandLine> = lines.into_iter().map(|l| Ok(l.into_bytes())).collect();
        prop_assert_eq!(read, expected);
    }

    #[test]
    fn any_bytes_read_as_the_same_lines_however_they_arrive(
        input in prop_oneof![bytes(2000), mutated(Just(b"EHLO a\r\nMAIL FROM:<x@y>\r\n".to_vec()))],
        sizes in read_sizes(),
    ) {
        let whole = commands(&mut channel(&input, &[usize::MAX]));
        let trickled = commands(&mut channel(&input, &sizes));
        prop_assert_eq!(whole, trickled);
    }

    #[test]
    fn data_comes_back_unstuffed_and_the_session_stays_in_step(
        lines in text_lines(),
        sizes in read_sizes(),
    ) {
        let (read, fault, rest) = data(&stuffed(&lines), &sizes, u64::MAX);
        let expected: Vec<Vec<u8>> = lines.iter().map(|l| [&l[..], b"\r\n"].concat()).collect();
        prop_assert_eq!(read, expected);
        prop_assert_eq!(fault, None);
        prop_assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
    }

    #[test]
    fn data_over_its_size_is_read_to_its_end_and_refused(
        lines in text_lines(),
        limit in 0..2000u64,
    ) {
        let size: u64 = lines.iter().map(|l| l.len() as u64 + 2).sum();
        let (_, fault, rest) = data(&stuffed(&lines), &[usize::MAX], limit);
        prop_assert_eq!(fault, (size > limit).then_some(DataFault::TooBig));
        prop_assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
    }

    #[test]
    fn any_data_reads_the_same_however_it_arrives(
        input in prop_oneof![
            bytes(3000),
            mutated(Just(b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\nQUIT\r\n".to_vec())),
        ],
        sizes in read_sizes(),
    ) {
        let mut input = input;
        input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let whole = data(&input, &[usize::MAX], 1 << 20);
        let trickled = data(&input, &sizes, 1 << 20);
        prop_assert_eq!(whole, trickled);
    }
}

#[test]
fn ten_megabyte_lines_are_read_through_in_constant_memory() {
    let mut input = vec![b'x'; 10 << 20];
    input.extend_from_slice(b"\r\nQUIT\r\n");
    let mut chan = channel(&input, &[usize::MAX]);
    let (line, most) = peak(|| chan.read_command().unwrap());
    assert_eq!(line, Some(Err(LineFault::TooLong)));
    assert!(most <= 2 * MAX_COMMAND_LINE, "{most}");
    assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));

    input.splice(input.len() - 8.., b"\r\n.\r\nQUIT\r\n".iter().copied());
    let (read, fault, rest) = data(&input, &[usize::MAX], u64::MAX);
    assert!(read.is_empty());
    assert_eq!(fault, Some(DataFault::Line(LineFault::TooLong)));
    assert_eq!(rest, Some(vec![Ok(b"QUIT".to_vec())]));
}
