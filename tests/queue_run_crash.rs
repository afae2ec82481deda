//! queue-run's crash and concurrency trials: several runs at once over one queue, one run whose
//! removals go on while its connections deliver, and runs killed with SIGKILL in the middle of a
//! flush. The queue is filled through the library's
//! submission path (the same code queue-enqueue runs, without a process per message); the
//! runs are the real binary. A recording server on loopback keeps every message it accepted, so
//! the trials count deliveries by Message-ID.
//!
//! What is asserted is what can be counted afterwards (messages at the server, messages left in
//! the queue), never how long anything took. Kills are placed by what the server has seen.

mod support {
    pub mod mta;
    pub mod site;
    pub mod tls;
}

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use etrnq::config::Config;
use etrnq::queue::Queue;
use etrnq::submission::{self, Request};

use support::mta::{Mta, Setup};
use support::site::Site;

/// Fills the site's queue with `count` messages for `customer.test`; returns their Message-IDs.
fn fill(site: &Site, count: usize) -> Vec<String> {
    let config = Config::read(&site.config_path()).expect("site configuration");
    let queue = Queue::open(&config.queue_dir).expect("queue");
    (0..count)
        .map(|n| {
            let message_id = format!("<trial-{n}@sender.test>");
            let text = format!(
                "From: <frank@sender.test>\nMessage-ID: {message_id}\nSubject: trial {n}\n\n{}",
                "a line of the body of a trial message\n".repeat(20)
            );
            let request = Request {
                sender: Some("frank@sender.test".into()),
                recipients: vec![format!("user{}@customer.test", n % 7)],
                dot_ends_input: false,
                ..Request::default()
            };
            submission::submit(&queue, &config, &request, text.as_bytes()).expect("queued");
            message_id
        })
        .collect()
}

fn site_for(mta: &Mta) -> Site {
    Site::new(&format!(
        "[routes]\n\"customer.test\" = {:?}\n",
        mta.route()
    ))
}

/// How many times the server accepted each Message-ID.
fn deliveries(mta: &Mta) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for message in mta.messages() {
        let id = message
            .header("Message-ID")
            .expect("every trial has a Message-ID");
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

fn queue_run(site: &Site) -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("queue-run"));
    command
        .arg("-C")
        .arg(site.config_path())
        .env_remove("ETRNQ_CONFIG")
        .env_remove("ETRNQ_QUEUE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn three_runs_at_once_deliver_each_of_a_thousand_messages_exactly_once() {
    let mta = Setup::default().start();
    let site = site_for(&mta);
    let ids = fill(&site, 1000);
    assert_eq!(site.ids().len(), 1000);

    let children: Vec<_> = (0..3)
        .map(|_| queue_run(&site).spawn().expect("queue-run starts"))
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("queue-run ends");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout.is_empty());
    }

    let seen = deliveries(&mta);
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), 1000, "every message arrived");
    for id in &ids {
        assert!(seen.contains_key(id), "{id} missing");
    }
    assert_eq!(mta.message_count(), 1000);
    assert!(site.ids().is_empty(), "the queue is empty");
    // Every message was sent by exactly one run: one log line each.
    let log = site.log();
    assert_eq!(log.matches("status=sent").count(), 1000);
    // Three processes append to one log file: every line must still be whole,
    // "Mon dd hh:mm:ss queue-run[pid]: ID: to=<...>, ...".
    let mut per_run: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        let (stamp, rest) = line.split_at(line.len().min(16));
        let (program, event) = rest.split_once(": ").unwrap_or_default();
        assert!(
            stamp.len() == 16
                && stamp.as_bytes()[3] == b' '
                && stamp.as_bytes()[15] == b' '
                && program.starts_with("queue-run[")
                && program.ends_with(']')
                && program[10..program.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && !event.contains("queue-run["),
            "a torn log line: {line:?}"
        );
        if event.contains("status=sent") {
            *per_run.entry(program).or_insert(0) += 1;
        }
    }
    eprintln!("messages sent per run: {per_run:?}");
}

#[test]
fn one_run_delivers_each_of_many_messages_once_and_removes_them_all() {
    let mta = Setup::default().start();
    let site = site_for(&mta);
    let ids = fill(&site, 1500);

    let output = queue_run(&site)
        .args(["-j", "4"])
        .output()
        .expect("queue-run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty() && output.stderr.is_empty());

    let seen = deliveries(&mta);
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for id in &ids {
        assert!(seen.contains_key(id), "{id} missing");
    }
    assert_eq!(mta.message_count(), ids.len());
    // Removal is finished when the run ends: no envelope and no data is left behind.
    assert!(site.ids().is_empty(), "the queue is empty");
    for sub in ["env", "data", "tmp"] {
        let left = std::fs::read_dir(site.queue_dir().join(sub))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{sub}/ is empty");
    }
    let log = site.log();
    assert_eq!(log.matches("status=sent").count(), ids.len());
    assert_eq!(
        log.lines().count(),
        ids.len(),
        "nothing but deliveries:\n{log}"
    );
}

#[test]
fn kill_9_in_the_middle_of_a_run_loses_nothing() {
    // A slow server, so that a kill lands in the middle of the flush.
    let mta = Setup::default()
        .per_message(Duration::from_millis(5))
        .start();
    let site = site_for(&mta);
    let ids = fill(&site, 300);
    for kill_after in [10, 60, 150] {
        let before = mta.message_count();
        let mut child = queue_run(&site).spawn().expect("queue-run starts");
        // Placed by count: wait until the server has taken `kill_after` more messages.
        let limit = Instant::now() + Duration::from_secs(120);
        while mta.message_count() < before + kill_after && Instant::now() < limit {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let still_running = child.try_wait().expect("wait").is_none();
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(
            still_running && status.code().is_none(),
            "the run was killed before it could finish (kill after {kill_after})"
        );
        assert!(!site.ids().is_empty(), "work was left for the next run");
    }

    let output = queue_run(&site).output().expect("queue-run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen = deliveries(&mta);
    for id in &ids {
        assert!(seen.contains_key(id), "{id} was lost");
    }
    assert_eq!(seen.len(), ids.len());
    assert!(
        site.ids().is_empty(),
        "the queue is empty: {:?}",
        site.ids()
    );
    let corrupt = std::fs::read_dir(site.queue_dir().join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(corrupt, 0, "a kill leaves no unreadable envelope");
}
