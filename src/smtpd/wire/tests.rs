use super::*;
use crate::header::Lines;

/// A channel reading `input`, replies into a shared buffer.
fn channel(input: &[u8]) -> (Channel, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let out = Shared(Default::default());
    let shared = out.0.clone();
    let chan = Channel::new(
        Box::new(io::Cursor::new(input.to_vec())),
        Box::new(out),
        None,
    );
    (chan, shared)
}

fn data_of(input: &[u8], limit: u64) -> (Vec<u8>, Option<DataFault>, Vec<u8>) {
    let (mut chan, _) = channel(input);
    let mut data = chan.data(limit);
    let mut got = Vec::new();
    while let Some(line) = data.next_line().unwrap() {
        got.extend_from_slice(line);
    }
    let fault = data.fault();
    let rest = chan
        .read_command()
        .unwrap()
        .map(|l| l.unwrap())
        .unwrap_or_default();
    (got, fault, rest)
}

#[test]
fn commands_need_crlf() {
    let (mut chan, _) = channel(b"NOOP\r\nNOOP\nNO\rOP\r\nQUIT\r\n");
    assert_eq!(chan.read_command().unwrap(), Some(Ok(b"NOOP".to_vec())));
    assert_eq!(
        chan.read_command().unwrap(),
        Some(Err(LineFault::BareCrOrLf))
    );
    assert_eq!(
        chan.read_command().unwrap(),
        Some(Err(LineFault::BareCrOrLf))
    );
    assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));
    assert_eq!(chan.read_command().unwrap(), None);
}

#[test]
fn an_overlong_command_is_consumed_whole() {
    let mut input = vec![b'A'; 600];
    input.extend_from_slice(b"\r\nQUIT\r\n");
    let (mut chan, _) = channel(&input);
    assert_eq!(chan.read_command().unwrap(), Some(Err(LineFault::TooLong)));
    assert_eq!(chan.read_command().unwrap(), Some(Ok(b"QUIT".to_vec())));
    let exact = [vec![b'A'; 510], b"\r\n".to_vec()].concat();
    let (mut chan, _) = channel(&exact);
    assert!(matches!(chan.read_command().unwrap(), Some(Ok(_))));
}

#[test]
fn data_is_unstuffed_and_ends_only_at_crlf_dot_crlf() {
    let (got, fault, rest) = data_of(b"a\r\n..b\r\n.\r\nQUIT\r\n", 100);
    assert_eq!(got, b"a\r\n.b\r\n");
    assert_eq!(fault, None);
    assert_eq!(rest, b"QUIT");
    let (got, fault, _) = data_of(b".\r\n", 100);
    assert!(got.is_empty() && fault.is_none());
}

#[test]
fn smuggling_payloads_are_faults_and_do_not_end_the_data() {
    for payload in [
        &b"a\r\n\n.\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n"[..],
        b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
        b"a\r\r.\rMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n",
        b"a\r\nb\rc\r\n.\r\nQUIT\r\n",
    ] {
        let (_, fault, rest) = data_of(payload, 1000);
        assert_eq!(
            fault,
            Some(DataFault::Line(LineFault::BareCrOrLf)),
            "{payload:?}"
        );
        assert_eq!(rest, b"QUIT", "{payload:?}");
    }
}

#[test]
fn size_and_line_limits() {
    let (_, fault, rest) = data_of(b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n", 15);
    assert_eq!(fault, Some(DataFault::TooBig));
    assert_eq!(rest, b"QUIT");
    let long = [vec![b'x'; 1200], b"\r\n.\r\nQUIT\r\n".to_vec()].concat();
    let (_, fault, rest) = data_of(&long, 10_000);
    assert_eq!(fault, Some(DataFault::Line(LineFault::TooLong)));
    assert_eq!(rest, b"QUIT");
}

#[test]
fn a_close_inside_data_is_an_error() {
    let (mut chan, _) = channel(b"a\r\nb");
    let mut data = chan.data(100);
    assert!(data.next_line().unwrap().is_some());
    assert!(data.next_line().is_err());
}

#[test]
fn replies_are_multiline_and_flushed_before_waiting() {
    let (mut chan, out) = channel(b"");
    chan.reply(&Reply::new(250, "a\nb")).unwrap();
    assert!(out.lock().unwrap().is_empty());
    assert_eq!(chan.read_command().unwrap(), None);
    assert_eq!(&out.lock().unwrap()[..], b"250-a\r\n250 b\r\n");
}

/// The lines and the fault of `message` sent as chunks of the sizes given, the last one LAST.
fn chunked(message: &[u8], sizes: &[u64]) -> (Vec<u8>, Option<DataFault>, Vec<u8>) {
    let mut input = message.to_vec();
    input.extend_from_slice(b"NOOP\r\n");
    let (mut chan, _) = channel(&input);
    let mut rest = sizes
        .iter()
        .skip(1)
        .copied()
        .collect::<std::collections::VecDeque<u64>>();
    let first = Chunk {
        size: sizes[0],
        last: sizes.len() == 1,
    };
    let next = move |_: &mut Channel, _: u64| {
        let size = rest.pop_front().expect("a chunk after the last");
        Ok(Some(Chunk {
            size,
            last: rest.is_empty(),
        }))
    };
    let mut lines = chan.chunks(100, first, next);
    let mut got = Vec::new();
    while let Some(line) = lines.next_line().unwrap() {
        got.extend_from_slice(line);
    }
    let fault = lines.fault();
    drop(lines);
    let after = chan.read_command().unwrap().unwrap().unwrap();
    (got, fault, after)
}

#[test]
fn chunks_cut_anywhere_give_the_same_lines_and_faults() {
    let cases: [(&[u8], &[u8], Option<DataFault>); 4] = [
        (b"a: b\r\n\r\n.x\r\nend", b"a: b\r\n\r\n.x\r\nend\r\n", None),
        (
            b"a\r\nb\nc\r\n",
            b"a\r\n",
            Some(DataFault::Line(LineFault::BareCrOrLf)),
        ),
        (
            b"a\r\nb\rc\r\n",
            b"a\r\n",
            Some(DataFault::Line(LineFault::BareCrOrLf)),
        ),
        (&[b'y'; 120], b"", Some(DataFault::TooBig)),
    ];
    for (message, lines, fault) in cases {
        let length = message.len() as u64;
        let mut splits = vec![vec![length]];
        for cut in 0..=length {
            splits.push(vec![cut, length - cut]);
            splits.push(vec![0, cut, 0, length - cut]);
        }
        for sizes in splits {
            let (got, got_fault, after) = chunked(message, &sizes);
            assert_eq!(got, lines, "{sizes:?}");
            assert_eq!(got_fault, fault, "{sizes:?}");
            assert_eq!(
                after, b"NOOP",
                "every octet of the chunks read, none more: {sizes:?}"
            );
        }
    }
}
