//! queue-run on a full queue file system: trouble writing harms only its own message.
//!
//! A bounce or a state that cannot be written harms only its own message, a recipient that has
//! a message never gets it again, and nothing is left in `tmp/`. The queue is a small tmpfs in a
//! private mount namespace (`unshare -m`), so the host's mounts are never touched; a shell in
//! that namespace holds it, and every step runs the real programs in it with `nsenter`. The
//! scripted SMTP server runs in the test, on loopback, and records every message with its
//! recipients.
//!
//! Needs root, unshare(1) and nsenter(1): without them the test is skipped with a reason, and
//! fails under `CI=true`.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use support::site::{HOSTNAME, bin, queued_id};
use support::smtp::{Script, Server};

/// A private mount namespace with a small tmpfs, held by a shell that waits in it.
struct Namespace {
    holder: Child,
    /// Where the tmpfs is mounted, inside the namespace; an empty directory outside.
    mount: PathBuf,
}

impl Namespace {
    /// `None`, with the reason printed, when this machine cannot make one.
    fn start(mount: &Path, size: &str) -> Option<Namespace> {
        let missing = if !nix::unistd::geteuid().is_root() {
            Some("needs root for a private mount namespace")
        } else if !Command::new("unshare")
            .args(["-m", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            Some("unshare -m is not available here")
        } else if !Command::new("nsenter")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            Some("nsenter is not available here")
        } else {
            None
        };
        if let Some(reason) = missing {
            support::skip(reason);
            return None;
        }
        std::fs::create_dir_all(mount).expect("mount point");
        let script = r#"mount -t tmpfs -o "size=$2" none "$1" || exit 99
            echo ready
            exec sleep 600"#;
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(mount)
            .arg(size)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare starts");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the namespace answers");
        assert_eq!(line.trim(), "ready", "the tmpfs was not mounted");
        Some(Namespace {
            holder,
            mount: mount.to_path_buf(),
        })
    }

    /// `program args` inside the namespace, with `input` on stdin.
    fn run(&self, program: &Path, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new("nsenter")
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--"])
            .arg(program)
            .args(args)
            .env_remove("ETRNQ_CONFIG")
            .env_remove("ETRNQ_QUEUE_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("input written");
        child.wait_with_output().expect("nsenter ends")
    }

    /// A shell command inside the namespace; its stdout.
    fn sh(&self, script: &str) -> String {
        let output = self.run(Path::new("/bin/sh"), &["-c", script], b"");
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Fills the file system to the last page, then frees `pages` pages of 4 KiB.
    fn fill_but(&self, pages: u64) {
        let fill = self.mount.join("fill");
        self.sh(&format!(
            "dd if=/dev/zero of={0} bs=4096 2>/dev/null; truncate -s -{1} {0}",
            fill.display(),
            pages * 4096
        ));
        let free: u64 = self
            .sh(&format!("stat -f -c '%a' {}", self.mount.display()))
            .trim()
            .parse()
            .expect("free blocks");
        assert_eq!(free, pages, "free pages on the tmpfs");
    }

    fn free_all(&self) {
        self.sh(&format!("rm -f {}", self.mount.join("fill").display()));
    }

    /// The names in a directory inside the namespace.
    fn files(&self, dir: &Path) -> Vec<String> {
        self.sh(&format!("ls -A {}", dir.display()))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The tmpfs and everything on it go with the namespace's last process.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// One site whose queue lives on the namespace's tmpfs.
struct Site {
    /// Dropped first: the namespace ends before its mount point goes.
    ns: Namespace,
    /// The configuration and the log, outside the namespace's file system.
    site: support::site::Site,
    queue: PathBuf,
}

impl Site {
    fn log(&self) -> String {
        self.site.log()
    }

    fn program(&self, name: &str, args: &[&str], input: &[u8]) -> Output {
        let config = self.site.config_path();
        let mut all = vec!["-C", config.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        self.ns.run(&bin(name), &all, input)
    }

    /// Queues a message with this Message-ID for `recipients`; returns its queue id.
    fn enqueue(&self, message_id: &str, recipients: &[&str]) -> String {
        let text = format!(
            "From: <frank@sender.test>\nMessage-ID: <{message_id}>\nSubject: {message_id}\n\nbody of {message_id}\n"
        );
        let mut args = vec!["-v", "-f", "frank@sender.test"];
        args.extend_from_slice(recipients);
        queued_id(&self.program("queue-enqueue", &args, text.as_bytes()))
    }

    /// queue-run with `args`: its exit status, and what it printed.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let output = self.program("queue-run", args, b"");
        assert!(
            output.stdout.is_empty(),
            "queue-run prints nothing on stdout"
        );
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn envelope(&self, id: &str) -> String {
        self.ns.sh(&format!(
            "cat {}",
            self.queue.join("env").join(id).display()
        ))
    }

    /// The status of each recipient in `id`'s envelope.
    fn recipients(&self, id: &str) -> HashMap<String, (String, String)> {
        self.envelope(id)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields[0] == "rcpt").then(|| {
                    (
                        fields[4].to_string(),
                        (
                            fields[1].to_string(),
                            fields.get(5).unwrap_or(&"").to_string(),
                        ),
                    )
                })
            })
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.ns.files(&self.queue.join("env"))
    }

    fn tmp(&self) -> Vec<String> {
        self.ns.files(&self.queue.join("tmp"))
    }

    /// Moves a message's arrival `days` into the past.
    fn age(&self, id: &str, days: i64) {
        let path = self.queue.join("env").join(id);
        self.ns.sh(&format!(
            "awk -F'\t' -v OFS='\t' '$1 == \"arrival\" {{ $2 -= {seconds} }} {{ print }}' {path} > {path}.aged && cat {path}.aged > {path} && rm {path}.aged",
            seconds = days * 86400,
            path = path.display()
        ));
    }
}

fn site(mta: &Server) -> Option<Site> {
    let site = support::site::Site::with_text("");
    let ns = Namespace::start(&site.dir.path().join("small"), "1m")?;
    let queue = ns.mount.join("q");
    // No free-space reserve: the disk is filled on purpose, as other writers on the same file
    // system can fill it past any reserve.
    std::fs::write(
        site.config_path(),
        format!(
            "queue_dir = {:?}\nlog = {:?}\nhostnames = [{HOSTNAME:?}]\nqueue_min_free = 0\n[routes]\n\"customer.test\" = {route:?}\n\"sender.test\" = {route:?}\n",
            queue.display().to_string(),
            site.log_path().display().to_string(),
            route = mta.route(),
        ),
    )
    .expect("configuration");
    Some(Site { ns, site, queue })
}

/// How many times the server took each (Message-ID, recipient); bounces count under the queue
/// id of the message they report.
fn deliveries(mta: &Server) -> HashMap<(String, String), usize> {
    let mut seen = HashMap::new();
    for message in mta.messages() {
        let id = message.header("Message-ID").unwrap_or_default();
        let text = String::from_utf8_lossy(&message.data()).into_owned();
        let key = match text.split_once("(queue id ") {
            Some((_, rest)) if id.contains(HOSTNAME) => {
                format!("bounce of {}", rest.split(')').next().unwrap_or_default())
            }
            _ => id.trim_matches(['<', '>']).to_string(),
        };
        for recipient in &message.recipients {
            *seen.entry((key.clone(), recipient.clone())).or_insert(0) += 1;
        }
    }
    seen
}

fn pair(message: &str, recipient: &str) -> (String, String) {
    (message.to_string(), recipient.to_string())
}

#[test]
fn a_full_queue_disk_harms_only_the_messages_concerned() {
    let mta = Script::default().start();
    mta.rule("later", "450 4.2.0 try again later");
    mta.rule("never", "550 5.1.1 no such user");
    let Some(site) = site(&mta) else { return };

    // Queue order is the order of delivery on the one connection: the messages that need a
    // write come before the ones whose removal frees space.
    let expired = site.enqueue("expired", &["gone@customer.test"]);
    site.age(&expired, 6);
    let partly = site.enqueue("partly", &["ok1@customer.test", "later1@customer.test"]);
    let deferred = site.enqueue("deferred", &["later2@customer.test"]);
    let reserved = site.enqueue(
        "reserved",
        &[
            "ok3@customer.test",
            "later3@customer.test",
            "never3@customer.test",
        ],
    );
    let normal: Vec<String> = (0..10)
        .map(|n| site.enqueue(&format!("normal-{n}"), &[&format!("user{n}@customer.test")]))
        .collect();

    // 1. Nothing can be written. The expired message's bounce, the deferral's new state and the
    // room for a partly delivered message's state all fail; the rest is delivered.
    site.ns.fill_but(0);
    let (code, stderr) = site.run(&[]);
    let log = site.log();
    assert_eq!(code, 75, "{stderr}\n{log}");
    assert_eq!(
        mta.message_count(),
        10,
        "only the single-recipient mail that needs no write: {:?}\n{log}",
        deliveries(&mta)
    );
    let seen = deliveries(&mta);
    for n in 0..10 {
        assert_eq!(
            seen.get(&pair(
                &format!("normal-{n}"),
                &format!("user{n}@customer.test")
            )),
            Some(&1)
        );
    }
    for id in &normal {
        assert!(!site.ids().contains(id), "{id} delivered and removed");
    }
    for id in [&expired, &partly, &deferred, &reserved] {
        assert!(site.ids().contains(id), "{id} stays queued");
    }
    assert!(
        log.contains(&format!(
            "{expired}: cannot queue the non-delivery notification"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{deferred}: cannot write delivery state")),
        "{log}"
    );
    for id in [&partly, &reserved] {
        assert!(
            log.contains(&format!("{id}: to=<ok"))
                && log.contains("status=deferred (not sent: no room to record its delivery state"),
            "{log}"
        );
    }
    // Their envelopes are as they were: the failed writes changed nothing and left nothing.
    for (address, (status, _)) in site.recipients(&partly) {
        assert_eq!(status, "pending", "{address}");
    }
    assert!(site.tmp().is_empty(), "tmp/ holds {:?}", site.tmp());

    // 2. Two pages free: the room for the state of a message with three recipients takes one;
    // the bounce for the one the server refuses takes the other and cannot be finished. What
    // was sent is recorded in the room set aside, the refused recipient waits to be reported.
    site.ns.fill_but(2);
    let before = site.log().len();
    let (code, stderr) = site.run(&["-I", &reserved]);
    let log = site.log().split_off(before);
    assert_eq!(code, 75, "{stderr}\n{log}");
    assert_eq!(
        deliveries(&mta).get(&pair("reserved", "ok3@customer.test")),
        Some(&1)
    );
    let state = site.recipients(&reserved);
    assert_eq!(state["ok3@customer.test"].0, "sent", "{state:?}\n{log}");
    assert_eq!(state["later3@customer.test"].0, "deferred");
    assert_eq!(state["never3@customer.test"].0, "deferred");
    assert!(
        state["never3@customer.test"]
            .1
            .contains("not yet reported to the sender"),
        "{state:?}"
    );
    assert!(log.contains(&format!(
        "{reserved}: cannot queue the non-delivery notification"
    )));
    assert!(
        !log.contains(&format!("{reserved}: cannot write delivery state")),
        "{log}"
    );
    assert!(site.tmp().is_empty(), "tmp/ holds {:?}", site.tmp());

    // 3. The same on a full disk once more: nothing is sent again to those that have it.
    site.ns.fill_but(0);
    let (code, _) = site.run(&["-f"]);
    assert_eq!(code, 75);
    assert_eq!(
        deliveries(&mta).get(&pair("reserved", "ok3@customer.test")),
        Some(&1)
    );
    assert!(site.tmp().is_empty(), "tmp/ holds {:?}", site.tmp());

    // 4. Space again, and the server takes what it deferred: everything is delivered (the
    // expired message and the refused recipient bounce), then the bounces themselves.
    site.ns.free_all();
    mta.clear_rules();
    mta.rule("never", "550 5.1.1 no such user");
    let (code, stderr) = site.run(&["-f"]);
    assert_eq!(code, 0, "{stderr}\n{}", site.log());
    let (code, stderr) = site.run(&[]);
    assert_eq!(code, 0, "{stderr}\n{}", site.log());
    assert!(
        site.ids().is_empty(),
        "the queue is empty: {:?}",
        site.ids()
    );
    assert!(site.tmp().is_empty(), "tmp/ holds {:?}", site.tmp());

    let seen = deliveries(&mta);
    let mut expected: Vec<(String, String)> = (0..10)
        .map(|n| pair(&format!("normal-{n}"), &format!("user{n}@customer.test")))
        .collect();
    expected.extend([
        pair("partly", "ok1@customer.test"),
        pair("partly", "later1@customer.test"),
        pair("deferred", "later2@customer.test"),
        pair("reserved", "ok3@customer.test"),
        pair("reserved", "later3@customer.test"),
        pair(&format!("bounce of {expired}"), "frank@sender.test"),
        pair(&format!("bounce of {reserved}"), "frank@sender.test"),
    ]);
    for key in &expected {
        assert_eq!(seen.get(key), Some(&1), "{key:?}: {seen:?}");
    }
    assert_eq!(seen.len(), expected.len(), "nothing else: {seen:?}");
    // The expired message's report says so once, however often its bounce failed before.
    let report = mta
        .messages()
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.data()).into_owned())
        .find(|text| text.contains(&format!("(queue id {expired})")))
        .expect("the expired message's bounce");
    assert_eq!(
        report.matches("message expired after 5d").count(),
        1,
        "{report}"
    );
    assert!(!report.contains("not yet reported"), "{report}");
}
