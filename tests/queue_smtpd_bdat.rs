//! queue-smtpd receiving BDAT (RFC 3030 CHUNKING) end to end: raw sessions over loopback
//! sending chunks pipelined, a large message in many chunks kept byte for byte, refused chunks
//! that leave nothing behind, and queue-run's own client delivering to it in BDAT.

mod support;

use support::daemon::*;
use support::site::Site;
use support::smtp::crlf;

/// The queued message without the Received field queue-smtpd put first.
fn without_received(message: &str) -> &str {
    let mut rest = message.split_once("\r\n").unwrap().1;
    while rest.starts_with([' ', '\t']) {
        rest = rest.split_once("\r\n").unwrap().1;
    }
    rest
}

/// A message of `lines` lines of 8-bit text, some starting with a dot.
fn big_message(lines: usize) -> Vec<u8> {
    let mut message = b"From: alice@example.test\r\nSubject: chunks\r\n\r\n".to_vec();
    for i in 0..lines {
        let line = match i % 5 {
            0 => format!(".{i} a line that starts with a dot\r\n"),
            1 => format!("{i} caf\u{e9} 8-bit text {}\r\n", "x".repeat(i % 900)),
            2 => ".\r\n".to_string(),
            _ => format!("{i}\r\n"),
        };
        message.extend_from_slice(line.as_bytes());
    }
    message
}

#[test]
fn ehlo_offers_chunking_and_pipelined_chunks_are_queued_byte_for_byte() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    assert_eq!(s.reply().0, 220);
    let ehlo = s.expect("EHLO client.test", 250);
    assert!(ehlo.contains("\n250-CHUNKING\n"), "{ehlo}");
    assert!(ehlo.contains("\n250-PIPELINING\n"), "{ehlo}");

    let message = big_message(3000);
    // Chunks cut anywhere, lines across them, all sent without waiting for a reply.
    let mut wire = b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\n".to_vec();
    let cuts = [1, 7000, 65536, 130000];
    let mut start = 0;
    for end in cuts {
        wire.extend_from_slice(format!("BDAT {}\r\n", end - start).as_bytes());
        wire.extend_from_slice(&message[start..end]);
        start = end;
    }
    wire.extend_from_slice(format!("BDAT {} LAST\r\n", message.len() - start).as_bytes());
    wire.extend_from_slice(&message[start..]);
    s.send(&wire);
    assert_eq!(s.reply().0, 250);
    assert_eq!(s.reply().0, 250);
    for (i, end) in cuts.iter().enumerate() {
        let size = end - if i == 0 { 0 } else { cuts[i - 1] };
        assert_eq!(
            s.reply(),
            (250, format!("250 2.0.0 {size} octets received"))
        );
    }
    let (code, text) = s.reply();
    assert_eq!(code, 250, "{text}");
    assert!(text.starts_with("250 2.0.0 Ok: queued as "), "{text}");
    s.expect("QUIT", 221);

    let data = site.queued_data();
    assert_eq!(data.len(), 1);
    assert!(data[0].starts_with("Received: from client.test ([127.0.0.1])\r\n"));
    assert_eq!(without_received(&data[0]).as_bytes(), &message[..]);
}

#[test]
fn refused_chunks_are_consumed_and_the_session_stays_in_step() {
    let site = Site::relay("max_message_size = 1000");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    // No transaction: 503, and the chunk, which looks like commands, is read as data.
    s.send(b"BDAT 12 LAST\r\nRSET\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(s.reply().0, 503);
    assert_eq!(s.reply().0, 250);
    // Too big: read to the last chunk, refused there, nothing queued.
    let chunk = "x: y\r\n".repeat(100);
    s.send(
        format!(
            "MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\nBDAT 600\r\n{chunk}\
             BDAT 600 LAST\r\n{chunk}"
        )
        .as_bytes(),
    );
    let codes: Vec<u16> = (0..4).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 552]);
    // A smuggling attempt: a bare LF and a dot line inside a chunk are data, and refused.
    let smuggle = "Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<evil@example.test>\r\n";
    s.send(
        format!(
            "MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\nBDAT {} LAST\r\n{smuggle}",
            smuggle.len()
        )
        .as_bytes(),
    );
    let codes: Vec<u16> = (0..3).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 250, 550]);
    // DATA after a chunk ends the message: 503, and the last chunk finds no transaction.
    s.send(
        b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\nBDAT 6\r\nx: y\r\n\
          DATA\r\nBDAT 2 LAST\r\n\r\n",
    );
    let codes: Vec<u16> = (0..5).map(|_| s.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 503, 503]);
    s.expect("QUIT", 221);
    assert!(site.queued_ids().is_empty(), "{:?}", site.queued_ids());
    let log = site.log();
    assert!(log.contains("reject: BDAT from [127.0.0.1]:"), "{log}");
}

#[test]
fn a_connection_cut_inside_a_chunk_queues_nothing() {
    let site = Site::relay("");
    let daemon = site.start(&[]);
    let mut s = daemon.session();
    s.hello();
    s.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@customer.test>\r\nBDAT 1000 LAST\r\nx: y\r\n");
    assert_eq!(s.reply().0, 250);
    assert_eq!(s.reply().0, 250);
    drop(s);
    poll_until("the lost connection is logged", || {
        site.log().contains("lost connection after BDAT")
    });
    assert!(site.queued_ids().is_empty());
}

#[test]
fn queue_run_to_queue_smtpd_goes_in_bdat_and_arrives_byte_for_byte() {
    let backup = Site::relay("");
    let daemon = backup.start(&[]);
    let sender = Site::new(&format!(
        "[routes]\n\"customer.test\" = \"[127.0.0.1]:{}\"\n",
        daemon.port
    ));
    let bodies: Vec<Vec<u8>> = vec![
        b"Subject: dots\n\n.\n..\n.leading dot\nlast line without its end".to_vec(),
        b"Subject: crlf\r\n\r\n8-bit caf\xc3\xa9\r\nbare CR\rin the middle\r\n".to_vec(),
        big_message(4000),
    ];
    let ids: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| {
            sender.enqueue(
                &["-f", "alice@example.test", &format!("u{n}@customer.test")],
                body,
            )
        })
        .collect();
    let stored: Vec<Vec<u8>> = ids.iter().map(|id| sender.data(id)).collect();

    let run = sender.run(&["-v", "-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(">>> BDAT "), "{}", run.stderr);
    assert!(!run.stderr.contains(">>> DATA"), "{}", run.stderr);
    for id in &ids {
        assert!(sender.entry(id).is_none(), "{id} still queued");
    }

    let mut arrived: Vec<String> = backup
        .queued_data()
        .iter()
        .map(|data| without_received(data).to_string())
        .collect();
    let mut expected: Vec<String> = stored
        .iter()
        .map(|s| String::from_utf8(crlf(s)).unwrap())
        .collect();
    arrived.sort();
    expected.sort();
    assert_eq!(arrived.len(), 3);
    assert!(arrived == expected, "the messages changed on the way");
}
