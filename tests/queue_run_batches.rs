//! queue-run over a queue longer than one batch (`queue_run_batch`): every message delivered
//! once and oldest first across batches, a deferred message not taken again by a later batch of
//! the same run, a destination given up in one batch not tried again in the next, mail that
//! arrives during a run left for the next, and a stop between batches counting what it left.
//! The batches are made small so that a few messages span several.

mod support;

use std::process::Stdio;

use support::daemon::{bounded, poll_until};
use support::site::{SENDER, Site, message};
use support::smtp::{Script, Server};

/// A site routing customer.test to `server`, planning at most `batch` messages at a time.
fn site(server: &Server, batch: usize) -> Site {
    Site::new(&format!(
        "queue_run_batch = {batch}\n{}",
        server.routes(&["customer.test"])
    ))
}

/// Queues one message to each `name@customer.test`, in this order; returns their ids.
fn enqueue(site: &Site, names: &[impl AsRef<str>]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let name = name.as_ref();
            site.enqueue(
                &["-f", SENDER, &format!("{name}@customer.test")],
                &message(name, name),
            )
        })
        .collect()
}

/// Starts queue-run against the gated `server` and returns once it has connected: it has read
/// the queue once, and waits for the greeting until the server is opened.
fn run_held_at_the_greeting(site: &Site, server: &Server) -> std::process::Child {
    let child = site
        .std_command("queue-run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("queue-run starts");
    poll_until("queue-run connects", || server.connections() >= 1);
    child
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("m{n:02}")).collect()
}

/// The first recipient's local part of every message the server stored, in arrival order.
fn delivered(server: &Server) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|m| {
            let to = m.recipients[0].trim_start_matches('<');
            to.split('@').next().unwrap_or_default().to_string()
        })
        .collect()
}

/// The RCPT commands the server was sent.
fn rcpts(server: &Server) -> Vec<String> {
    server
        .commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("RCPT"))
        .collect()
}

#[test]
fn a_queue_longer_than_a_batch_is_delivered_once_and_oldest_first() {
    let server = Script::default().start();
    let site = site(&server, 3);
    let names = names(10);
    let ids = enqueue(&site, &names);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids follow arrival");

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(delivered(&server), names, "each once, oldest first");
    assert_eq!(
        server.connections(),
        4,
        "batches of 3, 3, 3 and 1, one connection each"
    );
    assert!(site.queued_ids().is_empty(), "{:?}", site.mailq());
}

#[test]
fn a_message_deferred_in_one_batch_is_not_taken_again_by_a_later_one() {
    let server = Script::default()
        .rcpt("m", "451 4.3.0 try again later")
        .start();
    let site = site(&server, 2);
    let ids = enqueue(&site, &names(7));

    // -f attempts every message whatever its next attempt: a message whose deferral was written
    // back into env/ would be attempted again if a later batch took it.
    let run = site.run(&["-f"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert_eq!(rcpts(&server).len(), 7, "{:?}", rcpts(&server));
    assert_eq!(site.queued_ids().len(), ids.len());
    for id in &ids {
        let attempts = site
            .log()
            .lines()
            .filter(|l| l.contains(&format!("{id}: to=<")) && l.contains("status=deferred"))
            .count();
        assert_eq!(attempts, 1, "{id}:\n{}", site.log());
    }
}

#[test]
fn a_destination_given_up_in_one_batch_is_not_tried_again_in_the_next() {
    let server = Script::default()
        .greeting(Some("421 4.3.2 not now"))
        .start();
    let site = site(&server, 2);
    let ids = enqueue(&site, &names(8));

    let run = site.run(&[]);
    assert_eq!(run.code, 75, "{run:?}");
    assert_eq!(server.connections(), 1, "given up for the run at the first");
    assert_eq!(site.queued_ids().len(), ids.len(), "all deferred");
    let log = site.log();
    for id in &ids[2..] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{id}: to=<")))
            .unwrap_or_else(|| panic!("no line for {id}:\n{log}"));
        assert!(
            line.contains("status=deferred")
                && line.contains("delivery temporarily suspended")
                && line.contains("421"),
            "{line}"
        );
    }

    // The next run tries again.
    let run = site.run(&["-f"]);
    assert_eq!(run.code, 75, "{run:?}");
    assert_eq!(server.connections(), 2);
}

#[test]
fn mail_that_arrives_during_a_run_waits_for_the_next() {
    let server = Server::gated(Script::default());
    let site = site(&server, 1);
    let first = enqueue(&site, &["m00", "m01", "m02"]);
    // The run has read the queue once, and knows its newest message.
    let child = run_held_at_the_greeting(&site, &server);
    let late = enqueue(&site, &["late"]).remove(0);
    server.open();
    let output = bounded(child, "queue-run");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(delivered(&server), ["m00", "m01", "m02"]);
    assert_eq!(site.queued_ids(), std::slice::from_ref(&late));
    assert!(
        !site.log().contains(&format!("{late}: to=<")),
        "{}",
        site.log()
    );
    assert!(first.iter().all(|id| !site.queued_ids().contains(id)));

    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(delivered(&server), ["m00", "m01", "m02", "late"]);
}

#[test]
fn a_stop_before_the_later_batches_counts_their_messages_as_left() {
    let server = Server::gated(Script::default());
    let site = site(&server, 2);
    let ids = enqueue(&site, &names(6));
    let child = run_held_at_the_greeting(&site, &server);
    let pid = child.id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    // The run takes no new message once asked to stop: the first batch's two are left
    // untouched, and the two batches it never read with them.
    poll_until("queue-run takes the signal", || {
        site.log()
            .contains(&format!("queue-run[{pid}]: stopping on SIGTERM"))
    });
    server.open();
    let output = bounded(child, "queue-run");
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert_eq!(server.message_count(), 0);
    let mut queued = site.queued_ids();
    queued.sort();
    assert_eq!(queued, ids);
    assert!(
        site.log()
            .contains("stopped on SIGTERM: 6 messages left for the next run"),
        "{}",
        site.log()
    );
}
