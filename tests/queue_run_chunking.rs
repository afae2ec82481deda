//! queue-run over CHUNKING: whole transactions back to back with `BDAT n LAST` against the
//! scripted server announcing CHUNKING and PIPELINING, with a recipient refused in the middle,
//! a message refused at its BDAT, and the connection cut with transactions outstanding. Each
//! test asserts the final queue (`mailq --json`), the log lines and what the server stored,
//! byte for byte.

mod support;

use support::site::{SENDER, Site, message};
use support::smtp::{End, Script, Server, crlf};

/// The log lines about `id`'s recipients.
fn log_lines(site: &Site, id: &str) -> Vec<String> {
    site.log()
        .lines()
        .filter(|line| line.contains(&format!("{id}: to=<")))
        .map(str::to_string)
        .collect()
}

/// Queues one message per name to `name@customer.test` (and `extra` recipients), with `body`.
fn enqueue(site: &Site, names: &[&str], body: impl Fn(&str) -> String) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            site.enqueue(
                &["-f", SENDER, &format!("{name}@customer.test")],
                &message(name, &body(name)),
            )
        })
        .collect()
}

/// The messages the server stored from the site's sender (bounces left out), by the local
/// part of their first recipient.
fn stored_by(server: &Server) -> Vec<(String, Vec<u8>)> {
    server
        .messages()
        .into_iter()
        .filter(|m| m.mail.starts_with(&format!("<{SENDER}>")))
        .map(|m| {
            let local = m.recipients[0].split('@').next().unwrap_or_default();
            (local.to_string(), m.data())
        })
        .collect()
}

#[test]
fn pipelined_bdat_transactions_with_refusals_in_the_middle_keep_every_verdict() {
    let server = Script::default()
        .chunking()
        .rcpt("nobody", "550 5.1.1 <nobody@customer.test>: no such user")
        .end_of_data(
            "X-Refuse-Me",
            End::Reply("554 5.6.0 content refused".to_string()),
        )
        .start();
    let site = Site::new(&server.routes(&["customer.test"]));
    let names = ["m1", "m2", "m3", "m4", "m5", "m6"];
    let mut ids = enqueue(&site, &["m1"], |_| {
        ".a line with a dot\n..two\nend".to_string()
    });
    // m2 has a recipient the server refuses at RCPT.
    ids.push(site.enqueue(
        &["-f", SENDER, "m2@customer.test", "nobody@customer.test"],
        &message("m2", "for two, one refused\n"),
    ));
    ids.extend(enqueue(&site, &names[2..], |name| match name {
        "m3" => "X-Refuse-Me\n".to_string(),
        _ => format!("{name} with 8-bit caf\u{e9}\r\nand CRLF\r\n"),
    }));
    let stored: Vec<Vec<u8>> = ids.iter().map(|id| site.data(id)).collect();

    let run = site.run(&["-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // One connection, every message in BDAT, none after DATA.
    let sessions = server.sessions();
    let commands: Vec<&String> = sessions.iter().flatten().collect();
    assert!(
        commands.iter().any(|l| l.ends_with(" LAST")),
        "{commands:?}"
    );
    assert!(!commands.iter().any(|l| *l == "DATA"), "{commands:?}");

    let got = stored_by(&server);
    let expected: Vec<(String, Vec<u8>)> = [0, 1, 3, 4, 5]
        .iter()
        .map(|&n| (names[n].to_string(), crlf(&stored[n])))
        .collect();
    assert_eq!(got, expected);

    for (n, id) in ids.iter().enumerate() {
        assert!(site.entry(id).is_none(), "{} still queued", names[n]);
    }
    let m2 = log_lines(&site, &ids[1]);
    assert_eq!(m2.len(), 2, "{m2:?}");
    assert!(
        m2.iter()
            .any(|l| l.contains("to=<m2@customer.test>") && l.contains("status=sent"))
    );
    assert!(m2.iter().any(|l| l.contains("to=<nobody@customer.test>")
        && l.contains("status=bounced")
        && l.contains("(in reply to RCPT TO)")));
    let m3 = log_lines(&site, &ids[2]);
    assert_eq!(m3.len(), 1, "{m3:?}");
    assert!(m3[0].contains("status=bounced"), "{m3:?}");
    assert!(
        m3[0].contains("554 5.6.0 content refused (in reply to BDAT)"),
        "{m3:?}"
    );
}

#[test]
fn a_connection_cut_with_transactions_outstanding_defers_only_what_was_not_acknowledged() {
    let server = Script::default()
        .chunking()
        .end_of_data("X-Cut-Here", End::Cut)
        .start();
    let site = Site::new(&server.routes(&["customer.test"]));
    let names: Vec<String> = (1..=14).map(|n| format!("m{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = enqueue(&site, &names, |name| {
        if name == "m3" {
            "X-Cut-Here\n".to_string()
        } else {
            format!("{name} is a good message\n")
        }
    });
    let stored: Vec<Vec<u8>> = ids.iter().map(|id| site.data(id)).collect();

    let run = site.run(&["-j", "1"]);
    assert_eq!(run.code, 75, "{}", run.stderr);

    let got = stored_by(&server);
    let mut seen = std::collections::HashSet::new();
    for (name, data) in &got {
        assert!(seen.insert(name.clone()), "{name} stored twice");
        let n = names
            .iter()
            .position(|x| x == name)
            .expect("a test message");
        assert_eq!(data, &crlf(&stored[n]), "{name}");
    }
    // Those answered before the cut are sent; the one the server cut on is deferred.
    for n in [0, 1] {
        assert!(seen.contains(names[n]), "{} not stored", names[n]);
        assert!(site.entry(&ids[n]).is_none(), "{} still queued", names[n]);
    }
    assert!(!seen.contains("m3"));
    let mut deferred = 0;
    for (n, id) in ids.iter().enumerate() {
        match site.entry(id) {
            // Sent: stored once, logged once as sent.
            None => {
                assert!(seen.contains(names[n]), "{} lost", names[n]);
                let lines = log_lines(&site, id);
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(lines[0].contains("status=sent"), "{lines:?}");
            }
            // Its data went out unanswered: deferred, one attempt, never counted as sent.
            Some(entry) => {
                deferred += 1;
                assert!(!seen.contains(names[n]), "{} stored and kept", names[n]);
                let recipient = &entry["recipients"][0];
                assert_eq!(recipient["status"], "deferred", "{entry}");
                assert_eq!(recipient["attempts"], 1, "{entry}");
                let reason = recipient["delay_reason"].as_str().expect("a reason");
                assert!(
                    reason.ends_with("(the message may arrive twice)"),
                    "{reason}"
                );
            }
        }
    }
    assert!(deferred >= 1 && deferred < names.len() - 2, "{deferred}");
    // What never went out on the cut connection went at once on the next one.
    let last = names.len() - 1;
    assert!(
        seen.contains(names[last]),
        "the last message waits: {got:?}"
    );
    assert!(server.connections() >= 2);
    assert!(
        server.messages().iter().any(|m| m.connection > 0),
        "nothing went on a second connection"
    );
}

#[test]
fn without_chunking_the_pipelined_data_path_stays() {
    let server = Script::default().start();
    let site = Site::new(&server.routes(&["customer.test"]));
    let ids = enqueue(&site, &["m1", "m2"], |name| format!(".{name}\n"));
    let run = site.run(&["-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let commands = server.commands();
    assert!(commands.iter().any(|l| l == "DATA"), "{commands:?}");
    assert!(
        !commands.iter().any(|l| l.starts_with("BDAT")),
        "{commands:?}"
    );
    for id in &ids {
        assert!(site.entry(id).is_none());
    }
}

#[test]
fn recipients_past_the_servers_limit_go_again_while_other_transactions_are_in_flight() {
    let server = Script::default().chunking().recipient_limit(2).start();
    let site = Site::new(&server.routes(&["customer.test"]));
    // The first message goes alone; the second's excess recipients are known only after the
    // third and fourth messages went out behind it.
    let first = enqueue(&site, &["first"], |_| "first\n".to_string());
    let recipients = ["a", "b", "c", "d", "e"].map(|local| format!("{local}@customer.test"));
    let mut args = vec!["-f", SENDER];
    args.extend(recipients.iter().map(String::as_str));
    let many = site.enqueue(&args, &message("many", "to five\n"));
    let rest = enqueue(&site, &["third", "fourth"], |name| format!("{name}\n"));

    let run = site.run(&["-j", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(server.connections(), 1);
    let taken: Vec<Vec<String>> = server
        .messages()
        .iter()
        .map(|m| m.recipients.clone())
        .collect();
    let five: Vec<&Vec<String>> = taken
        .iter()
        .filter(|r| {
            !r[0].starts_with("first") && !r[0].starts_with("third") && !r[0].starts_with("fourth")
        })
        .collect();
    assert_eq!(
        five,
        [
            &vec!["a@customer.test".to_string(), "b@customer.test".to_string()],
            &vec!["c@customer.test".to_string(), "d@customer.test".to_string()],
            &vec!["e@customer.test".to_string()],
        ]
    );
    assert_eq!(taken.len(), 6, "{taken:?}");
    assert!(site.mailq().is_empty(), "{:?}", site.mailq());
    let lines = log_lines(&site, &many);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("status=sent (250 2.0.0 Ok: queued)"))
    );
    for id in first.iter().chain(&rest) {
        let lines = log_lines(&site, id);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("status=sent"), "{lines:?}");
    }
}
