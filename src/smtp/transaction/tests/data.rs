use super::*;

#[test]
fn bare_cr_and_lf_leave_as_crlf_and_every_line_is_dot_stuffed() {
    // A CR alone before a dot would end the data early at a receiver that takes it for a
    // line end; here every line end is CRLF, so the dot is stuffed and the data goes whole.
    let body = "Subject: t\n\nbare cr\r.\rcrlf\r\n.crlf dot\nlf\n\r\n.\r\rlast";
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, ENVELOPE_OK),
            Step::Message("250 2.0.0 queued\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut script = Script::new(vec![message("one@example.test", body)]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    let seen = server.join().unwrap();
    let data: String = seen[4..].concat();
    assert_eq!(
        data,
        "Subject: t\r\n\r\nbare cr\r\n..\r\ncrlf\r\n..crlf dot\r\nlf\r\n\r\n..\r\n\r\nlast\r\n.\r\n"
    );
}

#[test]
fn line_ends_split_across_reads_are_one_line_end() {
    // A buffer of one byte puts every CR and LF of a CRLF in separate reads.
    let body = "a\r\n.b\r\r\n\r.c\n";
    let (addr, server) = server(
        "220 sink ESMTP\r\n",
        vec![
            Step::Lines(1, PIPELINING),
            Step::Lines(3, ENVELOPE_OK),
            Step::Message("250 2.0.0 queued\r\n"),
        ],
    );
    let mut conn = session(addr, Duration::from_secs(10));
    let mut one = message("one@example.test", "");
    one.body = Box::new(std::io::BufReader::with_capacity(
        1,
        Cursor::new(body.as_bytes()),
    ));
    let mut script = Script::new(vec![one]);
    conn.deliver_all(&mut script).unwrap();
    drop(conn);
    let seen = server.join().unwrap();
    assert_eq!(seen[4..].concat(), "a\r\n..b\r\n\r\n\r\n..c\r\n.\r\n");
}
