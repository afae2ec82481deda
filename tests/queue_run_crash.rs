//! queue-run's crash and concurrency trials: every message delivered, and delivered once.
//!
//! Several runs at once over one queue, one run whose removals go on while its connections
//! deliver, and runs killed with SIGKILL or stopped with SIGTERM at random instants of a flush.
//! The queue is filled through the library's submission path (the same code queue-enqueue runs,
//! without a process per message); the runs are the real binary. The scripted server on
//! loopback keeps every message it accepted, so the trials count deliveries by Message-ID.
//!
//! What is asserted is what can be counted afterwards (messages at the server, messages left in
//! the queue), never how long anything took. Kills are placed by what the server has seen.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use etrnq::config::Config;
use etrnq::queue::Queue;
use etrnq::submission::{self, Request};

use support::site::Site;
use support::smtp::{Received, Script, Server};

/// Fills the site's queue with `count` messages for `customer.test`; returns their Message-IDs.
fn fill(site: &Site, count: usize) -> Vec<String> {
    fill_numbered(site, 0..count, 0)
        .into_iter()
        .map(|(_, message_id)| message_id)
        .collect()
}

/// Queues the trial messages numbered `numbers`; returns each one's queue id and Message-ID.
/// With `every` above 0, every `every`-th message also goes to `laterN@customer.test`.
fn fill_numbered(
    site: &Site,
    numbers: std::ops::Range<usize>,
    every: usize,
) -> Vec<(String, String)> {
    let config = Config::read(&site.config_path()).expect("site configuration");
    let queue = Queue::open(&config.queue_dir).expect("queue");
    numbers
        .map(|n| {
            let message_id = format!("<trial-{n}@sender.test>");
            let text = format!(
                "From: <frank@sender.test>\nMessage-ID: {message_id}\nSubject: trial {n}\n\n{}",
                "a line of the body of a trial message\n".repeat(20)
            );
            let mut recipients = vec![format!("user{}@customer.test", n % 7)];
            if every > 0 && n.is_multiple_of(every) {
                recipients.push(format!("later{n}@customer.test"));
            }
            let request = Request {
                sender: Some("frank@sender.test".into()),
                recipients,
                dot_ends_input: false,
                ..Request::default()
            };
            let id =
                submission::submit(&queue, &config, &request, text.as_bytes()).expect("queued");
            (id.to_string(), message_id)
        })
        .collect()
}

fn site_for(mta: &Server) -> Site {
    Site::new(&format!(
        "[routes]\n\"customer.test\" = {:?}\n",
        mta.route()
    ))
}

/// How many times the server accepted each Message-ID.
fn deliveries(mta: &Server) -> HashMap<String, usize> {
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
    let mta = Script::default().start();
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
    let mta = Script::default().start();
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

/// How a trial ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Kill,
    Term,
}

/// The seed of the random trials: `ETRNQ_TEST_SEED` replays a failure.
fn seed() -> u64 {
    let seed = std::env::var("ETRNQ_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (replay with ETRNQ_TEST_SEED={seed})");
    seed
}

/// Waits for `child` to end by itself, for a minute at most.
fn ended(child: &mut Child) -> ExitStatus {
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > limit {
            let threads = threads_of(child.id());
            let _ = child.kill();
            panic!("queue-run did not end within a minute of its signal; its threads:\n{threads}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Each thread of `pid` with its state and the kernel function it waits in, so that a run that
/// does not end says where it stands.
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(gone)".into();
    };
    let mut lines = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
        let stat = read("stat");
        let state = stat.rsplit(") ").next().and_then(|s| s.split(' ').next());
        lines.push(format!(
            "{} {} state {} wchan {}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            state.unwrap_or("?"),
            read("wchan").trim()
        ));
    }
    lines.sort();
    lines.join("\n")
}

/// What the queue still owes: (Message-ID, recipient) for every open recipient of every queued
/// message, read from the envelopes; and how many messages have a recipient never tried.
fn owed(site: &Site, message_ids: &HashMap<String, String>) -> (HashSet<(String, String)>, usize) {
    let mut open = HashSet::new();
    let mut untried = 0;
    for id in site.ids() {
        let Ok(text) = std::fs::read_to_string(site.envelope_path(&id)) else {
            continue;
        };
        let message_id = &message_ids[&id];
        let mut pending = false;
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.first() == Some(&"rcpt") && matches!(fields[1], "pending" | "deferred") {
                pending |= fields[1] == "pending";
                open.insert((message_id.clone(), fields[4].to_string()));
            }
        }
        untried += usize::from(pending);
    }
    (open, untried)
}

/// Each (Message-ID, recipient) the server accepted from `received`.
fn pairs(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .flat_map(|m| {
            let id = m.header("Message-ID").expect("a Message-ID");
            m.recipients.iter().map(move |r| (id.clone(), r.clone()))
        })
        .collect()
}

#[test]
fn kills_and_stops_at_random_instants_lose_nothing_and_duplicate_only_what_was_in_flight() {
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mta = Script::default().start();
    // One message in five has a second recipient that the server defers: its state is
    // rewritten after the transaction instead of removed.
    mta.rule("later", "450 4.2.0 try again later");
    let site = site_for(&mta);
    let mut message_ids: HashMap<String, String> =
        fill_numbered(&site, 0..1000, 5).into_iter().collect();
    let mut endings: Vec<Ending> = [[Ending::Kill; 100].as_slice(), &[Ending::Term; 30]].concat();
    rng.shuffle(&mut endings);

    let mut duplicates = 0;
    let mut worst = 0;
    let mut kills = 0;
    let mut stops = 0;
    for (trial, ending) in endings.into_iter().enumerate() {
        // The queue is refilled when the trials have nearly drained it, so that every signal
        // lands in a flush.
        if owed(&site, &message_ids).1 < 100 {
            let next = message_ids.len();
            message_ids.extend(fill_numbered(&site, next..next + 500, 5));
        }
        let jobs = [1, 2, 4, 8][rng.usize(..4)];
        let before = mta.message_count();
        let mut child = queue_run(&site)
            .args(["-j", &jobs.to_string()])
            .spawn()
            .expect("queue-run starts");
        // The instant: after a random number of further messages reached the server (for a stop,
        // at least one, so that the run is delivering), then a random pause.
        let more = match ending {
            Ending::Kill => rng.usize(0..=8),
            Ending::Term => rng.usize(1..=8),
        };
        let limit = Instant::now() + Duration::from_secs(60);
        while mta.message_count() < before + more && Instant::now() < limit {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
        let still_running = child.try_wait().expect("wait").is_none();
        let status = match ending {
            Ending::Kill => {
                child.kill().expect("SIGKILL");
                child.wait().expect("reaped")
            }
            Ending::Term => {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
                ended(&mut child)
            }
        };
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The server may still be taking a message whose dot came just before the end.
        let limit = Instant::now() + Duration::from_secs(60);
        while mta.open_sessions() > 0 && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(1));
        }

        // What this run delivered and did not record is delivered again by a later one.
        let (open, _) = owed(&site, &message_ids);
        let delivered = pairs(&mta.messages()[before..]);
        let unrecorded = delivered.iter().filter(|p| open.contains(p)).count();
        duplicates += unrecorded;
        match ending {
            Ending::Kill => {
                kills += usize::from(still_running);
                worst = worst.max(unrecorded);
                assert!(
                    unrecorded <= 2 * jobs,
                    "trial {trial} (seed {seed}): kill -9 of a run with -j {jobs} left {unrecorded} \
                     delivered recipients unrecorded; the bound is {}",
                    2 * jobs
                );
            }
            Ending::Term => {
                stops += usize::from(still_running);
                assert!(
                    matches!(status.code(), Some(0) | Some(75)),
                    "trial {trial} (seed {seed}): SIGTERM ended the run with {status:?}: {stderr}"
                );
                assert_eq!(
                    unrecorded, 0,
                    "trial {trial} (seed {seed}): SIGTERM left delivered recipients unrecorded"
                );
                if still_running && status.code() == Some(75) {
                    assert!(
                        site.log().contains("stopped on SIGTERM"),
                        "trial {trial}: no stop line in the log"
                    );
                }
            }
        }
    }
    eprintln!(
        "{kills} runs killed and {stops} stopped while running; {duplicates} duplicates, at most \
         {worst} after one kill"
    );
    assert!(
        kills >= 100 && stops >= 30,
        "every signal landed in a flush"
    );

    // The deferred recipients too, now that the server takes them.
    mta.clear_rules();
    let output = queue_run(&site).arg("-f").output().expect("queue-run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(site.ids().is_empty(), "the queue is empty");
    let received = pairs(&mta.messages());
    let mut seen: HashMap<&(String, String), usize> = HashMap::new();
    for pair in &received {
        *seen.entry(pair).or_insert(0) += 1;
    }
    let mut expected = 0;
    for message_id in message_ids.values() {
        let number: usize = message_id
            .trim_start_matches("<trial-")
            .trim_end_matches("@sender.test>")
            .parse()
            .expect("a trial number");
        let mut recipients = vec![format!("user{}@customer.test", number % 7)];
        if number.is_multiple_of(5) {
            recipients.push(format!("later{number}@customer.test"));
        }
        for recipient in recipients {
            expected += 1;
            assert!(
                seen.contains_key(&(message_id.clone(), recipient.clone())),
                "{message_id} to {recipient} was lost (seed {seed})"
            );
        }
    }
    // Every second delivery to a recipient was one counted after its run's kill: nothing else
    // (and nothing after a SIGTERM) delivered anything twice.
    assert_eq!(seen.len(), expected);
    assert_eq!(received.len(), expected + duplicates, "seed {seed}");
    let corrupt = std::fs::read_dir(site.queue_dir().join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(corrupt, 0, "a kill leaves no unreadable envelope");
    // A kill between a delivered message's leaving the queue and the removal of its files
    // leaves them, for the sweep after the grace period: in tmp/ only old envelopes of
    // messages that are gone, and room reserved for states that were never written.
    for entry in std::fs::read_dir(site.queue_dir().join("tmp")).expect("tmp/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let id = name.split('.').next().unwrap_or_default();
        assert!(
            name.ends_with(".gone")
                || (name.ends_with(".env") && !site.ids().contains(&id.to_string())),
            "tmp/{name} was left"
        );
    }
}

/// queue-run `args` against `site`, started, with its stderr collected.
fn started(site: &Site, args: &[&str]) -> Child {
    queue_run(site)
        .args(args)
        .spawn()
        .expect("queue-run starts")
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("kill");
}

/// Waits until `check` holds, for a minute at most.
fn until(what: &str, check: impl Fn() -> bool) {
    let limit = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < limit, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_repeating_run_stops_on_each_signal_and_keeps_an_ignored_one_ignored() {
    use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};
    let mta = Script::default().start();
    let site = site_for(&mta);
    for (round, stop) in [SIGTERM, SIGINT, SIGHUP].into_iter().enumerate() {
        fill_numbered(&site, round..round + 1, 0);
        let mut child = started(&site, &["-q1h"]);
        until("the first pass delivered", || {
            mta.message_count() == round + 1
        });
        until("the pass is logged", || {
            site.log().matches("status=sent").count() == round + 1
        });
        signal(&child, stop);
        let status = ended(&mut child);
        assert_eq!(
            status.code(),
            Some(0),
            "{stop}: a daemon's stop is its normal end"
        );
        assert!(
            site.log()
                .contains(&format!("stopping on {}", stop.as_str())),
            "{}",
            site.log()
        );
    }

    // Under nohup a hangup is ignored; SIGTERM still stops it.
    fill_numbered(&site, 3..4, 0);
    let mut child = std::process::Command::new("nohup")
        .arg(assert_cmd::cargo::cargo_bin("queue-run"))
        .arg("-C")
        .arg(site.config_path())
        .arg("-q1h")
        .env_remove("ETRNQ_CONFIG")
        .env_remove("ETRNQ_QUEUE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nohup queue-run starts");
    let pid = child.id();
    // Its first pass is logged, so its signals are set up.
    until("the first pass delivered", || {
        site.log().contains(&format!("queue-run[{pid}]: "))
    });
    signal(&child, SIGHUP);
    signal(&child, SIGTERM);
    let status = ended(&mut child);
    assert_eq!(status.code(), Some(0));
    let log = site.log();
    assert!(
        log.contains(&format!("queue-run[{pid}]: stopping on SIGTERM")),
        "{log}"
    );
    assert!(
        !log.contains("SIGHUP (")
            && !log.contains(&format!("queue-run[{pid}]: stopping on SIGHUP")),
        "the hangup was ignored: {log}"
    );
}

#[test]
fn a_second_signal_ends_a_stopping_run_at_once() {
    // The server holds each message's reply: the run is stopping with a transaction in flight
    // when the second signal comes.
    let mta = Script::default()
        .per_message(Duration::from_secs(3))
        .start();
    let site = site_for(&mta);
    let queued = fill(&site, 3);
    let mut child = started(&site, &["-j", "1"]);
    until("DATA was sent", || {
        mta.commands().iter().any(|c| c == "DATA")
    });
    signal(&child, nix::sys::signal::Signal::SIGINT);
    until("the stop is logged", || {
        site.log().contains("stopping on SIGINT")
    });
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = ended(&mut child);
    assert_eq!(status.code(), Some(75));
    assert!(
        site.log()
            .contains("stopping at once on a second signal (SIGTERM)"),
        "{}",
        site.log()
    );
    // What was in flight stays queued; nothing else was touched.
    let left = site.ids().len();
    assert!(left >= 2 && left <= queued.len(), "{left} left");
}
