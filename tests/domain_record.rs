//! The per-domain record end to end: whatever becomes of it, every message of a domain is found.
//!
//! Whatever became of `QUEUE/domains` (a file or the whole record deleted, truncated, a named
//! pipe, a symbolic link, another user's), `mailq -R`, ETRN's count and `queue-run -R` still
//! find every message of the domain, and the record is made again; submissions during runs and
//! during compaction lose nothing and deliver nothing twice; mail queued before any record
//! existed, held messages and bounces are all found.
//!
//! The record's own format, its locks and its races are unit-tested in `src/queue/domains.rs`;
//! here only the programs are run, against the scripted SMTP server on loopback.

mod support;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use support::site::{SENDER, Site, is_root};
use support::smtp::{Script, Server};

/// A site that takes ETRN for customer.test and routes every domain the tests use to `mta`.
fn site(mta: &Server) -> Site {
    Site::new(&format!(
        "relay_domains = [\"customer.test\"]\nhold_domains = [\"customer.test\"]\n{}",
        mta.routes(&["customer.test", "sub.customer.test", "other.test"])
    ))
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: {SENDER}\nSubject: {subject}\n\nbody of {subject}\n").into_bytes()
}

/// Queues one message for each recipient in `rcpts`, subject `tag N`; returns the ids.
fn queue(site: &Site, tag: &str, rcpts: &[&str]) -> Vec<String> {
    rcpts
        .iter()
        .enumerate()
        .map(|(n, rcpt)| site.enqueue(&["-f", SENDER, rcpt], &message(&format!("{tag} {n}"))))
        .collect()
}

/// The ids `mailq -R PATTERN --json` lists, sorted.
fn listed(site: &Site, pattern: &str) -> Vec<String> {
    let output = site
        .command("mailq")
        .args(["--json", "-R", pattern])
        .output()
        .expect("mailq runs");
    assert!(output.status.success(), "mailq -R {pattern}: {output:?}");
    let mut ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["queue_id"].as_str().expect("queue id").to_string()
        })
        .collect();
    ids.sort();
    ids
}

/// queue-smtpd's reply to `ETRN node`, one session on standard input; the runs it starts are
/// `/bin/true`, so the queue stays as it is.
fn etrn(site: &Site, node: &str) -> String {
    let output = site
        .command("queue-smtpd")
        .args(["--inetd", "--queue-run", "/bin/true"])
        .write_stdin(format!(
            "EHLO site.customer.test\r\nETRN {node}\r\nQUIT\r\n"
        ))
        .output()
        .expect("queue-smtpd runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("25") && l.contains("node"))
        .unwrap_or_else(|| panic!("no ETRN reply: {output:?}"))
        .to_string()
}

fn record(site: &Site) -> PathBuf {
    site.queue_dir().join("domains")
}

/// The ids a domain file names, read as `src/queue/domains.rs` documents the format.
fn recorded(site: &Site, name: &str) -> Vec<String> {
    let text = fs::read_to_string(record(site).join(name)).expect("domain file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("etrnq-domain 1 {name}"));
    let last = lines.last().expect("last line");
    let count: usize = last
        .split(' ')
        .nth(1)
        .expect("count")
        .parse()
        .expect("count");
    assert!(last.starts_with("end "), "{text}");
    assert_eq!(count, lines.len() - 2, "{text}");
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// True when the record is there to be believed: `.list` names this boot.
fn believable(site: &Site) -> bool {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    fs::read_to_string(record(site).join(".list"))
        .is_ok_and(|list| list.starts_with(&format!("etrnq-domains 1 {}\n", boot.trim())))
}

fn subjects(mta: &Server) -> Vec<String> {
    let mut subjects: Vec<String> = mta
        .messages()
        .iter()
        .map(|m| m.header("Subject").expect("subject"))
        .collect();
    subjects.sort();
    subjects
}

/// What can become of the record.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The domain's file removed.
    FileDeleted,
    /// The whole record removed.
    RecordDeleted,
    /// The domain's file cut in the middle of a line.
    Torn,
    /// The domain's file cut after its first id: whole lines, but not the last one.
    CutAtALine,
    /// One id taken out of the domain's file, its last line kept.
    LineRemoved,
    /// A named pipe in the domain's file's place.
    Fifo,
    /// The domain's file a symbolic link to another domain's file.
    FileSymlink,
    /// The record a symbolic link to an empty directory elsewhere.
    RecordSymlink,
    /// The domain's file and `.list` another user's.
    Foreign,
    /// The record another user's directory, with nothing in it for this domain.
    RecordForeign,
}

impl Damage {
    fn apply(self, site: &Site, elsewhere: &Path) {
        let dir = record(site);
        let file = dir.join("customer.test");
        match self {
            Damage::FileDeleted => fs::remove_file(&file).expect("remove"),
            Damage::RecordDeleted => fs::remove_dir_all(&dir).expect("remove record"),
            Damage::Torn => {
                let text = fs::read(&file).expect("read");
                fs::write(&file, &text[..text.len() - 5]).expect("truncate");
            }
            Damage::CutAtALine => {
                let text = fs::read_to_string(&file).expect("read");
                let second = text.match_indices('\n').nth(1).expect("two lines").0;
                fs::write(&file, &text[..=second]).expect("truncate");
            }
            Damage::LineRemoved => {
                let text = fs::read_to_string(&file).expect("read");
                let mut lines: Vec<&str> = text.lines().collect();
                lines.remove(1);
                fs::write(&file, lines.join("\n") + "\n").expect("rewrite");
            }
            Damage::Fifo => {
                fs::remove_file(&file).expect("remove");
                nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
            }
            Damage::FileSymlink => {
                fs::remove_file(&file).expect("remove");
                std::os::unix::fs::symlink(dir.join("other.test"), &file).expect("symlink");
            }
            Damage::RecordSymlink => {
                fs::remove_dir_all(&dir).expect("remove record");
                let _ = fs::remove_dir_all(elsewhere);
                fs::create_dir(elsewhere).expect("elsewhere");
                std::os::unix::fs::symlink(elsewhere, &dir).expect("symlink");
            }
            Damage::Foreign => {
                for path in [file, dir.join(".list")] {
                    std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).expect("chown");
                }
            }
            Damage::RecordForeign => {
                // Only what is for other domains, in a directory that is not the owner's.
                fs::remove_file(&file).expect("remove");
                std::os::unix::fs::lchown(&dir, Some(65534), Some(65534)).expect("chown");
            }
        }
    }

    fn needs_root(self) -> bool {
        matches!(self, Damage::Foreign | Damage::RecordForeign)
    }
}

fn every_pass_finds_every_message_after(damage: Damage) {
    if damage.needs_root() && !is_root() {
        support::skip(format!(
            "{damage:?} needs root to give a file to another user"
        ));
        return;
    }
    let mta = Script::default().start();
    let site = site(&mta);
    let elsewhere = site.dir.path().join("elsewhere");
    let mine = queue(
        &site,
        "mine",
        &["a@customer.test", "B@Customer.Test", "c@customer.test"],
    );
    let sub = queue(&site, "sub", &["d@sub.customer.test"]);
    let others = queue(&site, "other", &["e@other.test", "f@other.test"]);
    let mut mine_sorted = mine.clone();
    mine_sorted.sort();
    let mut with_sub: Vec<String> = mine.iter().chain(&sub).cloned().collect();
    with_sub.sort();

    // The first per-domain pass finds no record, reads every envelope and makes one.
    assert!(!believable(&site));
    assert_eq!(listed(&site, "customer.test"), mine_sorted);
    assert!(believable(&site), "no record was made");
    assert_eq!(recorded(&site, "customer.test").len(), 3);

    damage.apply(&site, &elsewhere);
    assert_eq!(
        listed(&site, "customer.test"),
        mine_sorted,
        "{damage:?}: mailq -R"
    );
    assert!(
        believable(&site),
        "{damage:?}: the record was not made again"
    );
    damage.apply(&site, &elsewhere);
    assert_eq!(
        listed(&site, "@customer.test"),
        with_sub,
        "{damage:?}: mailq -R @"
    );
    damage.apply(&site, &elsewhere);
    assert_eq!(
        etrn(&site, "customer.test"),
        "253 2.0.0 OK, 3 pending messages for node customer.test started",
        "{damage:?}"
    );
    damage.apply(&site, &elsewhere);
    let run = site.run(&["-R", "customer.test"]);
    assert_eq!(run.code, 0, "{damage:?}: {run:?}");
    assert_eq!(subjects(&mta), ["mine 0", "mine 1", "mine 2"], "{damage:?}");
    let mut left = site.ids();
    left.sort();
    let mut wanted: Vec<String> = sub.iter().chain(&others).cloned().collect();
    wanted.sort();
    assert_eq!(left, wanted, "{damage:?}: only customer.test's mail leaves");
    // Nothing outside the queue was written to.
    if let Ok(entries) = fs::read_dir(&elsewhere) {
        assert_eq!(entries.count(), 0, "{damage:?}: followed the link");
    }
    // The record is believed again and has the rest.
    assert!(believable(&site), "{damage:?}");
    assert_eq!(listed(&site, "other.test").len(), 2, "{damage:?}");
    assert_eq!(listed(&site, "@customer.test"), sub, "{damage:?}");
}

#[test]
fn a_deleted_domain_file_is_noticed() {
    every_pass_finds_every_message_after(Damage::FileDeleted);
}

#[test]
fn a_deleted_record_is_made_again() {
    every_pass_finds_every_message_after(Damage::RecordDeleted);
}

#[test]
fn a_torn_domain_file_is_not_believed() {
    every_pass_finds_every_message_after(Damage::Torn);
}

#[test]
fn a_domain_file_cut_at_a_line_is_not_believed() {
    every_pass_finds_every_message_after(Damage::CutAtALine);
}

#[test]
fn a_domain_file_with_an_id_taken_out_is_not_believed() {
    every_pass_finds_every_message_after(Damage::LineRemoved);
}

#[test]
fn a_named_pipe_for_a_domain_file_hangs_nothing() {
    every_pass_finds_every_message_after(Damage::Fifo);
}

#[test]
fn a_symbolic_link_for_a_domain_file_is_not_followed() {
    every_pass_finds_every_message_after(Damage::FileSymlink);
}

#[test]
fn a_symbolic_link_for_the_record_is_not_followed() {
    every_pass_finds_every_message_after(Damage::RecordSymlink);
}

#[test]
fn another_users_record_files_are_not_believed() {
    every_pass_finds_every_message_after(Damage::Foreign);
}

#[test]
fn another_users_record_directory_is_moved_aside() {
    every_pass_finds_every_message_after(Damage::RecordForeign);
}

#[test]
fn submissions_during_runs_and_compaction_lose_nothing_and_duplicate_nothing() {
    let mta = Script::default().start();
    let site = site(&mta);
    // Enough mail that each run leaves more than a compaction's worth of ids that left.
    let before = queue(&site, "before", &["u@customer.test"; 120]);
    assert_eq!(listed(&site, "customer.test").len(), before.len());
    let done = std::sync::atomic::AtomicBool::new(false);
    let runs = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..3)
            .map(|w| {
                let site = &site;
                scope.spawn(move || {
                    for n in 0..40 {
                        let rcpt = if n % 4 == 0 {
                            "v@other.test"
                        } else {
                            "u@customer.test"
                        };
                        site.enqueue(&["-f", SENDER, rcpt], &message(&format!("w{w} {n}")));
                    }
                })
            })
            .collect();
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let (site, done) = (&site, &done);
                scope.spawn(move || {
                    let mut runs = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let run = site.run(&["-R", "customer.test"]);
                        // 75: the other runner held a message; it delivers it.
                        assert!(matches!(run.code, 0 | 75), "{run:?}");
                        listed(site, "customer.test");
                        runs += 1;
                    }
                    runs
                })
            })
            .collect();
        for submitter in submitters {
            submitter.join().expect("submitter");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        runners
            .into_iter()
            .map(|r| r.join().expect("runner"))
            .sum::<usize>()
    });
    assert!(runs >= 2, "only {runs} runs");
    let last = site.run(&["-R", "customer.test"]);
    assert_eq!(last.code, 0, "{last:?}");

    let got = subjects(&mta);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "delivered twice: {got:?}");
    let mut wanted: Vec<String> = (0..before.len()).map(|n| format!("before {n}")).collect();
    for w in 0..3 {
        wanted.extend((0..40).filter(|n| n % 4 != 0).map(|n| format!("w{w} {n}")));
    }
    wanted.sort();
    assert_eq!(got, wanted);
    assert_eq!(site.ids().len(), 30, "other.test's mail stays");
    assert!(listed(&site, "customer.test").is_empty());
    // Every id the runs delivered has left the record or will at the next compaction; the next
    // pass compacts what is left.
    site.run(&["-R", "customer.test"]);
    assert!(
        recorded(&site, "customer.test").len() < 64,
        "not compacted: {} ids",
        recorded(&site, "customer.test").len()
    );
    assert!(believable(&site));
}

#[test]
fn mail_from_before_the_record_held_mail_and_bounces_are_found() {
    let mta = Script::default().start();
    mta.rule("gone", "550 5.1.1 no such user");
    let site = site(&mta);
    // As an older version left them: envelope files and no record at all.
    let old = queue(&site, "old", &["a@customer.test", "b@customer.test"]);
    let held = queue(&site, "held", &["h@customer.test"]).remove(0);
    fs::remove_dir_all(record(&site)).expect("no record");
    // Held by an administrator: its envelope in hold/.
    fs::rename(
        site.envelope_path(&held),
        site.queue_dir().join("hold").join(&held),
    )
    .expect("hold");
    let mut all: Vec<String> = old.iter().chain([&held]).cloned().collect();
    all.sort();
    // The first pass (mailq, which lists held mail too) makes the record; the second believes it.
    for pass in ["first", "second"] {
        assert_eq!(listed(&site, "customer.test"), all, "{pass} pass");
    }
    assert!(believable(&site));

    // A message from the site to a user that does not exist bounces back to the site; the
    // bounce is queued like any message, and recorded as it is committed.
    site.enqueue(
        &["-f", "alice@customer.test", "gone@other.test"],
        &message("to be bounced"),
    );
    let run = site.run(&["-R", "other.test"]);
    assert_eq!(run.code, 0, "{run:?}");
    let bounce: Vec<String> = site
        .mailq()
        .iter()
        .filter(|m| m["sender"] == "")
        .map(|m| m["queue_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(bounce.len(), 1);
    assert!(believable(&site));
    all.extend(bounce);
    all.sort();
    assert_eq!(listed(&site, "customer.test"), all);
    // ETRN counts what a run would deliver: not the held message.
    assert_eq!(
        etrn(&site, "customer.test"),
        "253 2.0.0 OK, 3 pending messages for node customer.test started"
    );
    let run = site.run(&["-R", "customer.test"]);
    assert_eq!(run.code, 0, "{run:?}");
    let got = subjects(&mta);
    assert!(got.contains(&"old 0".to_string()) && got.contains(&"old 1".to_string()));
    assert_eq!(
        mta.messages()
            .iter()
            .filter(|m| m.recipients == ["alice@customer.test"])
            .count(),
        1,
        "the bounce"
    );
    assert_eq!(site.ids(), Vec::<String>::new());
    assert_eq!(listed(&site, "customer.test"), [held]);
}

#[test]
fn a_plain_run_sweeps_the_files_of_domains_with_nothing_left() {
    let mta = Script::default().start();
    let site = site(&mta);
    queue(&site, "m", &["a@customer.test", "b@other.test"]);
    assert_eq!(listed(&site, "customer.test").len(), 1);
    let run = site.run(&["-R", "other.test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(record(&site).join("other.test").exists());
    // A plain run leaves held customer.test alone and removes what names only delivered mail.
    let run = site.run(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!record(&site).join("other.test").exists());
    let list = fs::read_to_string(record(&site).join(".list")).expect("list");
    assert!(!list.lines().any(|l| l == "other.test"), "{list}");
    assert_eq!(recorded(&site, "customer.test").len(), 1);
    assert!(believable(&site));
    assert_eq!(listed(&site, "other.test"), Vec::<String>::new());
    assert_eq!(listed(&site, "customer.test").len(), 1);
    let owner = fs::metadata(site.queue_dir()).expect("queue").uid();
    for entry in fs::read_dir(record(&site)).expect("record") {
        let meta = entry.expect("entry").metadata().expect("metadata");
        assert_eq!(meta.uid(), owner);
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}

#[test]
fn a_per_domain_pass_reads_only_that_domains_envelopes() {
    let mta = Script::default().start();
    let site = site(&mta);
    let mine = queue(&site, "mine", &["a@customer.test", "b@customer.test"]);
    let other = queue(&site, "other", &["c@other.test"]).remove(0);
    assert_eq!(listed(&site, "customer.test").len(), 2);
    assert!(believable(&site));
    // Another domain's envelope that no pass could read: a named pipe.
    let env = site.envelope_path(&other);
    fs::remove_file(&env).expect("remove envelope");
    nix::unistd::mkfifo(&env, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");

    // The per-domain passes never open it, so they never meet it.
    let output = site
        .command("mailq")
        .args(["-R", "customer.test"])
        .output()
        .expect("mailq runs");
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&other));
    assert_eq!(
        etrn(&site, "customer.test"),
        "253 2.0.0 OK, 2 pending messages for node customer.test started"
    );
    let run = site.run(&["-R", "customer.test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(subjects(&mta), ["mine 0", "mine 1"]);
    assert!(!site.log().contains(&other), "{}", site.log());
    assert!(mine.iter().all(|id| !site.envelope_path(id).exists()));

    // A listing of the whole queue reads it, and reports what it cannot read.
    let output = site.command("mailq").output().expect("mailq runs");
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains(&other));
}

#[test]
fn a_kill_between_recording_and_committing_leaves_only_a_harmless_stale_id() {
    let mta = Script::default().start();
    let site = site(&mta);
    let kept = queue(&site, "kept", &["a@customer.test"]).remove(0);
    let dead = queue(&site, "dead", &["b@customer.test"]).remove(0);
    assert_eq!(listed(&site, "customer.test").len(), 2);
    // What a submission killed after recording its id and before renaming its envelope leaves:
    // its data, its envelope still under tmp/, and its id in the record.
    fs::rename(
        site.envelope_path(&dead),
        site.queue_dir().join("tmp").join(format!("{dead}.env")),
    )
    .expect("undo the commit");
    assert!(recorded(&site, "customer.test").contains(&dead));

    assert_eq!(listed(&site, "customer.test"), std::slice::from_ref(&kept));
    assert!(believable(&site), "a stale id is no reason to rebuild");
    assert_eq!(
        etrn(&site, "customer.test"),
        "253 2.0.0 OK, 1 pending messages for node customer.test started"
    );
    let run = site.run(&["-R", "customer.test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(subjects(&mta), ["kept 0"]);
    assert!(!site.log().contains(&dead), "{}", site.log());
    // Once the leftovers are swept (after an hour), the id is only an id: still harmless.
    fs::remove_file(site.queue_dir().join("data").join(&dead)).expect("sweep data");
    fs::remove_file(site.queue_dir().join("tmp").join(format!("{dead}.env"))).expect("sweep");
    assert_eq!(listed(&site, "customer.test"), Vec::<String>::new());
    assert_eq!(site.run(&["-R", "customer.test"]).code, 0);
    assert!(believable(&site));
}
