//! One unreadable message never stops a pass, and a queue has one owner.
//!
//! Delivery decisions come from envelope files only: the real programs against a queue of 100
//! messages with one odd envelope (unreadable, another user's, a named pipe, a symbolic link,
//! far too big), delivering to the scripted SMTP server of `tests/support` on 127.0.0.1.
//!
//! The programs run as the queue's owner. Run as root, the suite gives each test's directory to
//! `nobody` and runs the programs as `nobody` through `setpriv` (root reads a mode-000 file, the
//! owner does not), and the ownership tests run them as root on that queue. Tests that need root
//! print "skipped" outside CI and fail under `CI=true`. Every child is bounded in time: a program
//! that hangs on a named pipe fails the test instead of holding it.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::daemon::{Daemon, bounded, poll_until};
use support::site::{SENDER, bin, is_root, list, stderr_lines};
use support::smtp::{Script, Server};

const MESSAGES: usize = 100;

/// The odd message: even numbers go to customer.test, odd ones to other.test.
const ODD: usize = 36;

/// True when the test may go on; outside CI a test that needs root says why it stops.
fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    support::skip(format!("{test} needs root to own files as another user"));
    false
}

/// `nobody`'s uid and gid, the owner of every queue when the suite runs as root.
fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody")
        .expect("user database")
        .expect("a user named nobody");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// The programs the suite runs; queue-smtpd starts the queue-run beside it.
const PROGRAMS: [&str; 4] = ["queue-enqueue", "queue-run", "mailq", "queue-smtpd"];

/// True when every directory above `path` lets other users through and `path` is executable by
/// them: then `nobody` can run it where it is.
fn others_may_run(path: &Path) -> bool {
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// A private queue, configuration and mail log, owned by the user the programs run as.
struct Site {
    /// The queue, configuration and log.
    site: support::site::Site,
    /// The queue's owner: `nobody` when the suite runs as root, else the suite's own user.
    owner: (u32, u32),
    /// Where the programs are run from: the build's directory, or copies in `_copies` when the
    /// owner may not reach it.
    programs: PathBuf,
    _copies: Option<tempfile::TempDir>,
}

impl Site {
    /// Every domain routed to `mta`; customer.test may be flushed by ETRN.
    fn new(mta: &Server) -> Site {
        let route = mta.route();
        let site = support::site::Site::new(&format!(
            "relay_domains = [\"customer.test\"]\n\
             [routes]\n\
             \"customer.test\" = \"{route}\"\n\
             \"other.test\" = \"{route}\"\n\
             \"sender.test\" = \"{route}\"\n"
        ));
        fs::create_dir(site.queue_dir()).expect("queue directory");
        fs::set_permissions(site.queue_dir(), fs::Permissions::from_mode(0o700))
            .expect("queue mode");
        let owner = if is_root() {
            nobody()
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let built = bin("mailq");
        let copies = (is_root() && !others_may_run(&built)).then(|| {
            let copies = tempfile::tempdir().expect("directory for the programs");
            fs::set_permissions(copies.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
            for program in PROGRAMS {
                let to = copies.path().join(program);
                fs::hard_link(bin(program), &to)
                    .or_else(|_| fs::copy(bin(program), &to).map(drop))
                    .expect("copy of a program");
            }
            copies
        });
        let programs = match &copies {
            Some(copies) => copies.path().to_path_buf(),
            None => built.parent().expect("build directory").to_path_buf(),
        };
        let site = Site {
            site,
            owner,
            programs,
            _copies: copies,
        };
        site.give_to_owner();
        site
    }

    fn program(&self, name: &str) -> PathBuf {
        self.programs.join(name)
    }

    fn config(&self) -> PathBuf {
        self.site.config_path()
    }

    fn queue(&self) -> PathBuf {
        self.site.queue_dir()
    }

    fn log_path(&self) -> PathBuf {
        self.site.log_path()
    }

    fn log(&self) -> String {
        self.site.log()
    }

    fn env(&self, id: &str) -> PathBuf {
        self.queue().join("env").join(id)
    }

    fn data(&self, id: &str) -> PathBuf {
        self.queue().join("data").join(id)
    }

    /// Hands everything the test made to the owner, as if the owner had made it.
    fn give_to_owner(&self) {
        for entry in walkdir::WalkDir::new(self.site.dir.path()) {
            let entry = entry.expect("walk");
            chown(entry.path(), self.owner);
        }
    }

    /// `program` run as the queue's owner, with this site's configuration.
    fn as_owner(&self, program: &str) -> Command {
        let mut command = if is_root() {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", self.owner.0))
                .arg(format!("--regid={}", self.owner.1))
                .arg("--clear-groups")
                .arg("--")
                .arg(self.program(program));
            c
        } else {
            Command::new(self.program(program))
        };
        self.isolated(&mut command);
        command
    }

    /// `program` run as the suite's own user (root, in the ownership tests).
    fn as_invoker(&self, program: &str) -> Command {
        let mut command = Command::new(self.program(program));
        self.isolated(&mut command);
        command
    }

    /// This site's configuration, nothing from the caller's environment, no input.
    fn isolated(&self, command: &mut Command) {
        command
            .arg("-C")
            .arg(self.config())
            .env_remove("ETRNQ_CONFIG")
            .env_remove("ETRNQ_QUEUE_DIR")
            .env("TZ", "UTC")
            .stdin(Stdio::null());
    }

    /// Queues `MESSAGES` messages through the library, as queue-enqueue would, and gives them
    /// to the owner. Returns their ids in the order queued.
    fn fill(&self) -> Vec<String> {
        let config = etrnq::config::Config::read(&self.config()).expect("configuration");
        let queue = etrnq::queue::Queue::open(&config.queue_dir).expect("queue");
        let ids = (0..MESSAGES)
            .map(|n| {
                let request = etrnq::submission::Request {
                    sender: Some(SENDER.into()),
                    recipients: vec![recipient(n)],
                    dot_ends_input: false,
                    ..Default::default()
                };
                let text = format!("From: {SENDER}\nSubject: m{n}\n\nmessage {n}\n");
                etrnq::submission::submit(&queue, &config, &request, text.as_bytes())
                    .expect("queued")
                    .to_string()
            })
            .collect();
        self.give_to_owner();
        ids
    }

    /// Ids of the active envelopes.
    fn active(&self) -> Vec<String> {
        list(&self.queue().join("env"))
    }
}

fn recipient(n: usize) -> String {
    let domain = if n.is_multiple_of(2) {
        "customer.test"
    } else {
        "other.test"
    };
    format!("u{n}@{domain}")
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Runs a program to its end, killing it at `PATIENCE`: a hang fails the test.
fn finish(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start program");
    bounded(child, &format!("{command:?}"))
}

/// What makes one message odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Odd {
    /// Mode 000: the owner may not read it.
    Unreadable,
    /// Envelope and data owned by root, as an older version run by root left them.
    Foreign,
    /// A named pipe in the envelope's place: a blocking open would wait for ever.
    Fifo,
    /// A symbolic link to another message's envelope.
    Symlink,
    /// A sparse file of 1 GiB: far more than an envelope may hold, and it costs no disk.
    Oversized,
}

impl Odd {
    /// Damage is moved to corrupt/; anything else is an access problem, left in place.
    fn is_damage(self) -> bool {
        self == Odd::Oversized
    }

    /// Words the report of it must carry.
    fn words(self) -> &'static str {
        match self {
            Odd::Unreadable => "Permission denied",
            Odd::Foreign => "not by the queue's owner",
            Odd::Fifo => "is a named pipe",
            Odd::Symlink => "is a symbolic link",
            Odd::Oversized => "an envelope holds at most",
        }
    }

    fn make(self, site: &Site, id: &str, other: &str) {
        let env = site.env(id);
        match self {
            Odd::Unreadable => {
                fs::set_permissions(&env, fs::Permissions::from_mode(0o000)).expect("chmod")
            }
            Odd::Foreign => {
                chown(&env, (0, 0));
                chown(&site.data(id), (0, 0));
            }
            Odd::Fifo => {
                fs::remove_file(&env).expect("remove envelope");
                nix::unistd::mkfifo(&env, nix::sys::stat::Mode::S_IRUSR).expect("mkfifo");
                chown(&env, site.owner);
            }
            Odd::Symlink => {
                fs::remove_file(&env).expect("remove envelope");
                std::os::unix::fs::symlink(site.env(other), &env).expect("symlink");
                chown(&env, site.owner);
            }
            Odd::Oversized => {
                let _ = fs::remove_file(&env);
                fs::File::create(&env)
                    .and_then(|f| f.set_len(1 << 30))
                    .expect("sparse file");
                chown(&env, site.owner);
            }
        }
    }

    /// Asserts the odd envelope is still what `make` left.
    fn assert_untouched(self, site: &Site, id: &str) {
        let meta = fs::symlink_metadata(site.env(id)).expect("odd envelope still there");
        match self {
            Odd::Unreadable => assert_eq!(meta.mode() & 0o777, 0),
            Odd::Foreign => assert_eq!(meta.uid(), 0),
            Odd::Fifo => assert!(meta.file_type().is_fifo()),
            Odd::Symlink => assert!(meta.file_type().is_symlink()),
            Odd::Oversized => unreachable!("damage is moved"),
        }
    }
}

/// The whole trial for one kind of odd envelope: listings, ETRN's count and the `-R` run it
/// starts, a plain run, and the queue and log they leave.
fn one_odd_envelope_among_many(odd: Odd) {
    let mta = Script::default().start();
    let site = Site::new(&mta);
    let ids = site.fill();
    let id = ids[ODD].clone();
    let customers = ids.iter().step_by(2).count();
    // Damage is moved by the first pass that meets it; each pass here gets a fresh one.
    let make = || {
        if let Ok(()) = fs::rename(
            site.queue().join("corrupt").join(format!("{id}.data")),
            site.data(&id),
        ) {
            let _ = fs::remove_file(site.queue().join("corrupt").join(format!("{id}.env")));
        }
        odd.make(&site, &id, &ids[ODD + 2]);
    };
    make();
    let listed_status = if odd.is_damage() { 0 } else { 75 };

    // mailq: the 99 others, and the odd one marked X, in sendmail's layout.
    let output = finish(site.as_owner("mailq"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(listed_status), "{output:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(&format!("({MESSAGES} requests)")),
        "{}",
        lines[0]
    );
    for (n, other) in ids.iter().enumerate().filter(|&(n, _)| n != ODD) {
        assert!(text.contains(&format!("{other} ")), "{other} not listed");
        assert!(text.contains(&format!(" {}\n", recipient(n))));
    }
    let marked = lines
        .iter()
        .find(|l| l.starts_with(&format!("{id}X")))
        .unwrap_or_else(|| panic!("{id} not marked:\n{text}"));
    assert!(marked.contains(odd.words()), "{marked}");
    let disposition = if odd.is_damage() {
        "moved to corrupt/"
    } else {
        "left in place"
    };
    assert!(marked.ends_with(&format!("; {disposition})")), "{marked}");
    assert!(text.ends_with(&format!("Total requests: {MESSAGES}\n")));
    let errors = stderr_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(&format!("mailq: {id}: unreadable envelope (")));
    assert!(errors[0].contains(odd.words()), "{errors:?}");
    make();

    // mailq --json: one object each, the odd one with its problem named.
    let output = finish({
        let mut c = site.as_owner("mailq");
        c.arg("--json");
        c
    });
    assert_eq!(output.status.code(), Some(listed_status), "{output:?}");
    let entries: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(entries.len(), MESSAGES);
    for entry in &entries {
        let is_odd = entry["queue_id"] == id.as_str();
        assert_eq!(entry.get("error").is_some(), is_odd, "{entry}");
        assert_eq!(entry.get("recipients").is_some(), !is_odd, "{entry}");
    }
    let entry = entries
        .iter()
        .find(|e| e["queue_id"] == id.as_str())
        .expect("odd");
    let (name, kind) = if odd.is_damage() {
        ("corrupt", "damaged")
    } else {
        ("active", "inaccessible")
    };
    assert_eq!(entry["queue_name"], name, "{entry}");
    assert_eq!(entry["unreadable"], kind, "{entry}");
    assert!(entry["error"].as_str().unwrap().contains(odd.words()));
    make();

    // ETRN: queue-smtpd counts what it can read for the node and starts queue-run -R.
    let mut daemon = Daemon::listening(site.as_owner("queue-smtpd"));
    let mut smtp = daemon.session();
    assert_eq!(smtp.reply().0, 220);
    smtp.expect("EHLO site.customer.test", 250);
    let readable = customers - 1;
    assert_eq!(
        smtp.expect("ETRN customer.test", 253),
        format!("253 2.0.0 OK, {readable} pending messages for node customer.test started")
    );
    smtp.expect("QUIT", 221);
    let ended = |log: &str| {
        log.lines()
            .find(|l| l.contains("etrn: queue-run -R customer.test") && l.contains(" ended: "))
            .map(str::to_string)
    };
    poll_until("the run ETRN started to end", || {
        ended(&site.log()).is_some()
    });
    let run_status = if odd.is_damage() { 0 } else { 75 };
    let line = ended(&site.log()).unwrap_or_default();
    assert!(
        line.ends_with(&format!("exit status: {run_status}")),
        "{line}\n{}",
        site.log()
    );
    let stopped = daemon.finish();
    assert!(stopped.status.success(), "{stopped:?}");
    let delivered = mta.messages();
    assert_eq!(delivered.len(), readable);
    assert!(
        delivered
            .iter()
            .all(|m| m.recipients.iter().all(|r| r.ends_with("@customer.test")))
    );
    if !odd.is_damage() {
        make();
    }

    // A plain run: the others are delivered, the odd one reported and left.
    let output = finish(site.as_owner("queue-run"));
    assert_eq!(output.status.code(), Some(run_status), "{output:?}");
    assert_eq!(mta.message_count(), MESSAGES - 1);
    let log = site.log();
    if odd.is_damage() {
        assert!(site.active().is_empty(), "{:?}", site.active());
        assert_eq!(
            list(&site.queue().join("corrupt")),
            [format!("{id}.data"), format!("{id}.env")]
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{id}: unreadable envelope ("))
                    && l.contains(odd.words())
                    && l.ends_with("; moved to corrupt/")),
            "{log}"
        );
        return;
    }
    assert_eq!(site.active(), [id.as_str()]);
    assert_eq!(list(&site.queue().join("data")), [id.as_str()]);
    assert!(list(&site.queue().join("corrupt")).is_empty());
    odd.assert_untouched(&site, &id);
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("warning: {id}: skipped, left in place: ")))
        .collect();
    assert_eq!(reports.len(), 2, "the -R run and the plain run:\n{log}");
    assert!(
        reports.iter().all(|l| l.contains(odd.words())),
        "{reports:?}"
    );
}

#[test]
fn an_unreadable_envelope_is_reported_and_the_rest_go_on() {
    one_odd_envelope_among_many(Odd::Unreadable);
}

#[test]
fn a_named_pipe_in_env_hangs_nothing() {
    one_odd_envelope_among_many(Odd::Fifo);
}

#[test]
fn a_symbolic_link_in_env_is_not_followed() {
    one_odd_envelope_among_many(Odd::Symlink);
}

#[test]
fn an_envelope_bigger_than_any_is_moved_aside_unread() {
    one_odd_envelope_among_many(Odd::Oversized);
}

#[test]
fn another_users_message_is_skipped_until_given_back() {
    if !root_or_skip("another_users_message_is_skipped_until_given_back") {
        return;
    }
    one_odd_envelope_among_many(Odd::Foreign);
}

#[test]
fn the_fix_a_report_names_lets_the_owner_deliver() {
    if !root_or_skip("the_fix_a_report_names_lets_the_owner_deliver") {
        return;
    }
    let mta = Script::default().start();
    let site = Site::new(&mta);
    let ids = site.fill();
    Odd::Foreign.make(&site, &ids[0], &ids[1]);
    let output = finish(site.as_owner("queue-run"));
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    let log = site.log();
    let report = log
        .lines()
        .find(|l| l.contains(&format!("{}: skipped, left in place: ", ids[0])))
        .unwrap_or_else(|| panic!("no report:\n{log}"));
    // The report ends with the command that gives the message back.
    let fix = &report[report.find("chown ").expect("the fix")..];
    let words: Vec<&str> = fix.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{fix}");
    assert_eq!(words[1], "nobody:");
    for path in &words[2..] {
        chown(Path::new(path), site.owner);
    }
    let output = finish(site.as_owner("queue-run"));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(mta.message_count(), MESSAGES);
    assert!(site.active().is_empty());
}

#[test]
fn editing_the_index_alone_changes_no_delivery_decision() {
    let mta = Script::default().start();
    let site = Site::new(&mta);
    let ids = site.fill();
    // A full listing of a queue that stood still writes the index.
    std::thread::sleep(Duration::from_millis(1200));
    let output = finish(site.as_owner("mailq"));
    assert!(output.status.success(), "{output:?}");
    let index = site.queue().join("index");
    let text = fs::read_to_string(&index).expect("a settled listing writes the index");
    // Every customer.test recipient moved to another domain, lengths kept: a plan made from the
    // index would find nothing for -R customer.test.
    fs::write(&index, text.replace("@customer.test", "@customer.tesx")).expect("edit index");
    chown(&index, site.owner);
    let listed = finish(site.as_owner("mailq"));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("u0@customer.tesx"),
        "listings believe the edited index, so it was current"
    );

    let mut run = site.as_owner("queue-run");
    run.args(["-R", "customer.test"]);
    let output = finish(run);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let customers = ids.iter().step_by(2).count();
    assert_eq!(mta.message_count(), customers);
    let mut delivered: Vec<String> = mta
        .messages()
        .iter()
        .flat_map(|m| m.recipients.clone())
        .collect();
    delivered.sort();
    let mut wanted: Vec<String> = (0..MESSAGES).step_by(2).map(recipient).collect();
    wanted.sort();
    assert_eq!(delivered, wanted);
}

/// Every file and directory under `dir` with its owner, for the ones not `owner`'s.
fn not_owned_by(dir: &Path, (uid, gid): (u32, u32)) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| {
            let meta = e.metadata().expect("metadata");
            (meta.uid(), meta.gid()) != (uid, gid)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn programs_started_by_root_leave_every_file_to_the_queue_owner() {
    if !root_or_skip("programs_started_by_root_leave_every_file_to_the_queue_owner") {
        return;
    }
    let mta = Script::default().start();
    mta.rule("later", "450 4.2.0 mailbox busy, try again later");
    let site = Site::new(&mta);

    // A root cron job submits, as contrib/sendmail does, with and without -f.
    for (sender, rcpt) in [
        (Some(SENDER), "now1@customer.test"),
        (None, "later@customer.test"),
        (Some(SENDER), "now2@other.test"),
    ] {
        let mut command = site.as_invoker("queue-enqueue");
        if let Some(sender) = sender {
            command.args(["-f", sender]);
        }
        command.arg(rcpt).stdin(Stdio::piped());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("queue-enqueue");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"Subject: from cron\n\nbackup done\n")
            .expect("message");
        let output = bounded(child, "queue-enqueue");
        assert!(output.status.success(), "{output:?}");
    }

    // queue-smtpd started by root binds its port, then runs as the owner.
    let mut daemon = Daemon::listening(site.as_invoker("queue-smtpd"));
    let (uid, gid) = (site.owner.0.to_string(), site.owner.1.to_string());
    let read_status = || fs::read_to_string(format!("/proc/{}/status", daemon.pid()));
    // The port listens as soon as it is bound, a moment before the daemon changes user.
    poll_until("queue-smtpd to become the owner", || {
        read_status().is_ok_and(|status| {
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["Uid:", &uid, &uid, &uid, &uid]))
        })
    });
    let status = read_status().expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), [uid.as_str(); 4], "{status}");
    assert_eq!(field("Gid:"), [gid.as_str(); 4], "{status}");
    assert!(field("Groups:").is_empty(), "{status}");
    let mut smtp = daemon.session();
    assert_eq!(smtp.reply().0, 220);
    smtp.expect("EHLO relay.sender.test", 250);
    smtp.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    smtp.expect("RCPT TO:<now3@customer.test>", 250);
    smtp.expect("DATA", 354);
    smtp.expect("Subject: over SMTP\r\n\r\nhello\r\n.", 250);
    smtp.expect("QUIT", 221);
    assert!(daemon.finish().status.success());

    // A listing by root writes the index; a forced run by root rewrites an envelope (the
    // deferred recipient) and opens the mail log.
    std::thread::sleep(Duration::from_millis(1200));
    let listed = finish(site.as_invoker("mailq"));
    assert!(listed.status.success(), "{listed:?}");
    assert!(site.queue().join("index").exists());
    let json = finish({
        let mut c = site.as_invoker("mailq");
        c.arg("--json");
        c
    });
    let root_sender = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|e| e["recipients"][0]["address"] == "later@customer.test")
        .map(|e| e["sender"].clone());
    assert_eq!(
        root_sender,
        Some(Value::from("root@mx2.isp.test")),
        "a submission names the user who started it"
    );
    let mut forced = site.as_invoker("queue-run");
    forced.arg("-f");
    let output = finish(forced);
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert_eq!(mta.message_count(), 3);
    assert_eq!(site.active().len(), 1);
    assert!(site.log().contains("status=deferred"));

    assert_eq!(
        not_owned_by(site.site.dir.path(), site.owner),
        Vec::<String>::new(),
        "files not the owner's"
    );

    // The owner's next run handles everything, log included.
    mta.clear_rules();
    let mut forced = site.as_owner("queue-run");
    forced.arg("-f");
    let output = finish(forced);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(mta.message_count(), 4);
    assert!(site.active().is_empty());
    let log = site.log();
    assert!(
        log.lines()
            .any(|l| l.contains("to=<later@customer.test>") && l.contains("status=sent")),
        "{log}"
    );
    let received = mta
        .messages()
        .into_iter()
        .find(|m| m.recipients == ["later@customer.test"])
        .expect("the cron job's message");
    assert!(
        received
            .header("Received")
            .is_some_and(|r| r.contains("from userid 0")),
        "{:?}",
        received.header("Received")
    );
}

#[test]
fn queue_admin_started_by_root_changes_as_the_owner_and_names_root() {
    if !root_or_skip("queue_admin_started_by_root_changes_as_the_owner_and_names_root") {
        return;
    }
    let mta = Script::default().start();
    let site = Site::new(&mta);
    let ids = site.fill();
    for args in [["hold", ids[0].as_str()], ["bounce", ids[1].as_str()]] {
        let mut admin = site.as_invoker("queue-admin");
        admin.args(args);
        let output = finish(admin);
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
    assert_eq!(list(&site.queue().join("hold")), [ids[0].clone()]);
    assert_eq!(
        not_owned_by(site.site.dir.path(), site.owner),
        Vec::<String>::new(),
        "files not the owner's"
    );
    let log = site.log();
    assert!(
        log.contains(&format!(
            "{}: placed on hold by the administrator root (uid 0)",
            ids[0]
        )),
        "{log}"
    );
    // The owner takes up what root held.
    let mut release = site.as_owner("queue-admin");
    release.args(["release", &ids[0]]);
    let output = finish(release);
    assert!(output.status.success(), "{output:?}");
    assert!(list(&site.queue().join("hold")).is_empty());
}

#[test]
fn a_user_who_is_not_the_owner_is_refused_in_one_line() {
    if !root_or_skip("a_user_who_is_not_the_owner_is_refused_in_one_line") {
        return;
    }
    let mta = Script::default().start();
    let site = Site::new(&mta);
    // The queue is root's; nobody may reach it but not use it.
    chown(&site.queue(), (0, 0));
    fs::set_permissions(site.site.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for program in ["mailq", "queue-run"] {
        let output = finish(site.as_owner(program));
        assert_eq!(output.status.code(), Some(77), "{program}: {output:?}");
        let errors = stderr_lines(&output);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("belongs to root (uid 0); run this as that user or as root"),
            "{errors:?}"
        );
    }
    assert!(list(&site.queue()).is_empty(), "nothing was created");
}

#[test]
fn root_that_cannot_change_user_refuses_in_one_line() {
    if !root_or_skip("root_that_cannot_change_user_refuses_in_one_line") {
        return;
    }
    let mta = Script::default().start();
    let site = Site::new(&mta);
    // Root without CAP_SETUID and CAP_SETGID, as in a confined container.
    let mut command = Command::new("setpriv");
    command
        .args(["--bounding-set=-setuid,-setgid", "--"])
        .arg(site.program("queue-run"))
        .arg("-C")
        .arg(site.config())
        .stdin(Stdio::null());
    let output = finish(command);
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    let errors = stderr_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("cannot become nobody"), "{errors:?}");
    assert!(list(&site.queue()).is_empty(), "nothing was created");
    assert!(!site.log_path().exists(), "no log opened as root");
}
