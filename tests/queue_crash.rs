//! Crash and concurrency trials of queue-enqueue: no collision, no partial message, no lost one.
//!
//! Parallel submitters never collide or lose a message, a submitter killed with SIGKILL at any
//! moment never leaves a partial message visible, and what it leaves in tmp/ is swept only after
//! the grace period; a sweep neither waits on a named pipe nor follows a link.

mod support;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use support::rng::Rng;
use support::site::Site;

#[test]
fn four_submitters_250_messages_each() {
    let q = Site::new("");
    // Create the layout first so the submitters race on messages, not on mkdir.
    q.command("mailq").assert().success();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut cmd = q.std_command("queue-enqueue");
            cmd.args(["-f", &format!("worker{w}@example.test")]);
            thread::spawn(move || {
                for n in 0..250 {
                    let mut child = cmd_with(&mut cmd, &format!("r{n}@w{w}.test"));
                    let mut stdin = child.stdin.take().unwrap();
                    write!(stdin, "Subject: {w}/{n}\n\nbody {w}/{n}\n").unwrap();
                    drop(stdin);
                    let output = child.wait_with_output().unwrap();
                    assert!(output.status.success(), "{w}/{n}: {output:?}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    let on_disk: HashSet<String> = q.ids().into_iter().collect();
    assert_eq!(on_disk.len(), 1000);
    assert_eq!(q.files("data").len(), 1000);
    assert_eq!(q.files("tmp"), Vec::<String>::new());

    let text = String::from_utf8(q.command("mailq").output().unwrap().stdout).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        format!("\t\t{} (1000 requests)", q.queue_dir().display())
    );
    assert_eq!(text.lines().last().unwrap(), "\t\tTotal requests: 1000");
    let listed: HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.starts_with('-'))
        .map(|l| &l[..14])
        .collect();
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().all(|id| on_disk.contains(*id)));

    let json =
        String::from_utf8(q.command("mailq").arg("--json").output().unwrap().stdout).unwrap();
    let mut ids = HashSet::new();
    let mut recipients = HashSet::new();
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.insert(v["queue_id"].as_str().unwrap().to_string());
        recipients.insert(v["recipients"][0]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(json.lines().count(), 1000);
    assert_eq!(ids, on_disk);
    // Every submission is there once: no message replaced another.
    assert_eq!(recipients.len(), 1000);
}

fn cmd_with(cmd: &mut std::process::Command, recipient: &str) -> Child {
    let mut cmd = clone(cmd);
    cmd.arg(recipient)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `Command` is not `Clone`; rebuild it from its parts.
fn clone(cmd: &std::process::Command) -> std::process::Command {
    let mut copy = std::process::Command::new(cmd.get_program());
    copy.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => copy.env(key, v),
            None => copy.env_remove(key),
        };
    }
    copy
}

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 48;

/// A 3 MiB body of numbered lines: a torn copy cannot end like the whole one.
/// A silent queue-enqueue with `args`, reading the message from the pipe returned with it.
fn submitter(q: &Site, args: &[&str]) -> (Child, std::process::ChildStdin) {
    let mut child = q
        .std_command("queue-enqueue")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

fn large_body() -> Vec<u8> {
    let mut body = Vec::with_capacity(CHUNK * CHUNKS);
    let mut n = 0;
    while body.len() < CHUNK * CHUNKS - 100 {
        body.extend(format!("line {n:08} of a large message that is fed slowly\n").as_bytes());
        n += 1;
    }
    body.extend(b"THE END\n");
    body
}

/// Every message `mailq` shows must be whole: listed alike in both formats, data size equal to
/// the envelope's size, and the complete body at its end. Returns how many are visible.
fn assert_only_whole_messages(q: &Site, body: &[u8]) -> usize {
    let json = q.command("mailq").arg("--json").output().unwrap();
    assert!(json.status.success() && json.stderr.is_empty(), "{json:?}");
    let json = String::from_utf8(json.stdout).unwrap();
    let mut visible = 0;
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["queue_name"], "active", "{line}");
        let id = v["queue_id"].as_str().unwrap();
        let data = fs::read(q.queue_dir().join("data").join(id)).unwrap();
        assert_eq!(Some(data.len() as u64), v["message_size"].as_u64(), "{id}");
        assert!(data.ends_with(body), "{id}: visible but incomplete");
        visible += 1;
    }
    let text = String::from_utf8(q.command("mailq").output().unwrap().stdout).unwrap();
    assert_eq!(
        text.lines().last().unwrap(),
        format!("\t\tTotal requests: {visible}")
    );
    visible
}

#[test]
fn sigkill_while_reading_never_shows_a_partial_message() {
    let q = Site::new("");
    let body = large_body();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut iterations = 0;
    let mut killed_before_commit = 0;
    // At least 50 kills; stop adding more after a minute so slow disks stay bounded.
    while iterations < 50 || (iterations < 80 && started.elapsed() < Duration::from_secs(60)) {
        iterations += 1;
        let (mut child, mut stdin) =
            submitter(&q, &["-i", "-f", "crash@example.test", "u@customer.test"]);
        // One time in four all input arrives and the kill races the commit; otherwise it lands
        // while the message is still being read.
        let finish = rng.below(4) == 0;
        let stop_after = if finish {
            CHUNKS
        } else {
            rng.below(CHUNKS as u64) as usize
        };
        let mut sent = stdin
            .write_all(format!("Subject: crash {iterations}\n\n").as_bytes())
            .is_ok();
        for chunk in body.chunks(CHUNK).take(stop_after) {
            sent = sent && stdin.write_all(chunk).is_ok();
            thread::sleep(Duration::from_micros(rng.below(1500)));
        }
        if finish {
            drop(stdin);
            thread::sleep(Duration::from_micros(rng.below(60_000)));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            sent || finish,
            "queue-enqueue stopped reading early: {status:?}"
        );
        if !finish {
            killed_before_commit += 1;
        }
        assert_only_whole_messages(&q, &body);
    }
    let visible = assert_only_whole_messages(&q, &body);
    println!(
        "{iterations} kills ({killed_before_commit} mid-read); {visible} messages committed before their kill"
    );
    assert!(iterations >= 50);
    assert!(visible <= iterations - killed_before_commit);
    // What the dead left in tmp/ is not a message and is not listed: drafts of messages, of
    // envelopes and of the per-domain record.
    for name in q.files("tmp") {
        assert!(
            [".data", ".env", ".record"]
                .iter()
                .any(|end| name.ends_with(end)),
            "{name}"
        );
    }
    // A kill between recording an id and committing its envelope leaves an id with no message:
    // a per-domain listing shows exactly the committed messages, whether it finds the record
    // (second pass) or makes it (first pass).
    let committed: HashSet<String> = q.ids().into_iter().collect();
    for pass in ["first", "second"] {
        let json = q
            .command("mailq")
            .args(["--json", "-R", "customer.test"])
            .output()
            .unwrap();
        assert!(json.status.success() && json.stderr.is_empty(), "{json:?}");
        let listed: HashSet<String> = String::from_utf8(json.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["queue_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(listed, committed, "{pass} pass");
    }
}

fn age(path: &std::path::Path, by: Duration) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn leftovers_are_swept_only_after_the_grace_period() {
    let q = Site::new("");
    let body = large_body();
    // A submitter killed mid-read leaves its draft in tmp/.
    let (mut child, mut stdin) = submitter(&q, &["u@customer.test"]);
    stdin.write_all(b"Subject: left over\n\n").unwrap();
    stdin.write_all(&body[..CHUNK]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while q.files("tmp").is_empty() {
        assert!(Instant::now() < deadline, "no draft appeared in tmp/");
        thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let dead = q.files("tmp");
    assert_eq!(dead.len(), 1);
    assert!(q.ids().is_empty());

    // Others that a sweep must spare: a recent one, and an old one somebody still holds.
    let tmp = q.queue_dir().join("tmp");
    fs::write(tmp.join("1xWNa000000001.data"), b"recent").unwrap();
    fs::write(tmp.join("1xWNa000000002.env"), b"held").unwrap();
    let holder = fs::File::open(tmp.join("1xWNa000000002.env")).unwrap();
    holder.lock().unwrap();
    age(
        &tmp.join("1xWNa000000001.data"),
        Duration::from_secs(30 * 60),
    );
    age(
        &tmp.join("1xWNa000000002.env"),
        Duration::from_secs(3 * 3600),
    );

    let submit = || {
        q.command("queue-enqueue")
            .arg("u@customer.test")
            .write_stdin("Subject: s\n\nb\n")
            .assert()
            .success();
    };
    submit();
    let mut expected = vec![
        "1xWNa000000001.data".to_string(),
        "1xWNa000000002.env".to_string(),
        dead[0].clone(),
    ];
    expected.sort();
    assert_eq!(q.files("tmp"), expected, "swept within the grace period");

    age(&tmp.join(&dead[0]), Duration::from_secs(3600 + 60));
    submit();
    assert_eq!(
        q.files("tmp"),
        ["1xWNa000000001.data", "1xWNa000000002.env"],
        "the stale leftover was not swept"
    );
    drop(holder);
    // A child that another test thread is starting may hold a copy of the descriptor, and so
    // the lock, until its program starts: the sweep must come, but may need another pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut submitted = 2;
    loop {
        submit();
        submitted += 1;
        if q.files("tmp") == ["1xWNa000000001.data"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the released leftover was never swept: {:?}",
            q.files("tmp")
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(q.ids().len(), submitted);
}

/// Sets a file's times `by` into the past without opening it: opening a named pipe waits for a
/// writer, and a link is not what is aged.
fn age_entry(path: &std::path::Path, by: Duration) {
    let then = SystemTime::now() - by;
    let since = then.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let stamp = nix::sys::time::TimeSpec::new(since.as_secs() as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &stamp,
        &stamp,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn sweeps_wait_on_no_pipe_and_follow_no_link() {
    let q = Site::new("");
    q.command("mailq").assert().success();
    let outside = q.dir.path().join("precious");
    fs::write(&outside, b"not the queue's").unwrap();
    let tmp = q.queue_dir().join("tmp");
    let data = q.queue_dir().join("data");
    let pipe = tmp.join("1xWNa000000001.data");
    let link = tmp.join("1xWNa000000002.env");
    let orphan_pipe = data.join("1xWNa000000003");
    nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::S_IRWXU).unwrap();
    nix::unistd::mkfifo(&orphan_pipe, nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for path in [&pipe, &link, &orphan_pipe] {
        age_entry(path, Duration::from_secs(3 * 3600));
    }

    // queue-enqueue sweeps tmp/; a queue run over the whole queue sweeps tmp/ and data without an
    // envelope (-I selecting nothing: nothing is delivered, every envelope is read).
    q.command("queue-enqueue")
        .arg("u@customer.test")
        .write_stdin("Subject: s\n\nb\n")
        .timeout(Duration::from_secs(60))
        .assert()
        .success();
    q.command("queue-run")
        .args(["-I", "no-such-queue-id"])
        .timeout(Duration::from_secs(60))
        .assert()
        .success();

    assert_eq!(
        q.files("tmp"),
        ["1xWNa000000001.data", "1xWNa000000002.env"],
        "what is not a regular file is none of the queue's: left alone"
    );
    assert!(q.files("data").contains(&"1xWNa000000003".to_string()));
    assert_eq!(fs::read(&outside).unwrap(), b"not the queue's");
    assert_eq!(q.ids().len(), 1);
}
