use super::*;
use crate::config::LogTarget;
use crate::config::list_file::SETTLE;

struct Fixture {
    dir: tempfile::TempDir,
    taken: Taken,
    log: MailLog,
}

impl Fixture {
    /// `relay_domains` from the file `relay`, holding `text`, and one domain listed inline.
    fn new(text: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("relay"), text).unwrap();
        let config = Config::parse(
            &format!(
                "relay_domains = [\"inline.example\", {:?}]\n",
                dir.path().join("relay").display().to_string()
            ),
            "etrnq.toml",
        )
        .unwrap();
        let log = MailLog::open(&LogTarget::File(dir.path().join("log")), "queue-smtpd");
        Fixture {
            taken: Taken::new(&config),
            log,
            dir,
        }
    }

    /// Replaces the file as an editor or `mv` does: a new file renamed over the old.
    fn replace(&self, text: &str) {
        let new = self.dir.path().join("relay.new");
        std::fs::write(&new, text).unwrap();
        std::fs::rename(&new, self.dir.path().join("relay")).unwrap();
    }

    fn takes(&self, name: &str, now: Instant) -> bool {
        // Wall time a settle period ahead: what was written now has settled.
        self.taken
            .refresh(now, SystemTime::now() + SETTLE, &self.log);
        let domain = Domain::parse(name).unwrap();
        let lists = self.taken.lists.read().unwrap();
        lists.relay.contains(&domain) || lists.hold.contains(&domain)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

#[test]
fn a_renamed_file_is_read_at_the_next_check() {
    let f = Fixture::new("one.example\n");
    let start = Instant::now();
    assert!(f.takes("one.example", start) && f.takes("inline.example", start));
    f.replace("two.example\n");
    assert!(
        f.takes("one.example", start + CHECK_EVERY / 2),
        "not checked twice within a second"
    );
    let later = start + CHECK_EVERY;
    assert!(f.takes("two.example", later));
    assert!(!f.takes("one.example", later));
    assert!(f.takes("inline.example", later), "inline domains stay");
    assert!(
        f.log()
            .contains("relay_domains read again: 2 domains (was 2)"),
        "{}",
        f.log()
    );
}

#[test]
fn a_file_rewritten_in_place_is_read_again() {
    let f = Fixture::new("one.example\n");
    let start = Instant::now();
    std::fs::write(f.dir.path().join("relay"), "one.example\nthree.example\n").unwrap();
    assert!(f.takes("three.example", start));
}

#[test]
fn a_fresh_change_waits_until_it_has_settled() {
    let f = Fixture::new("one.example\n");
    let start = Instant::now();
    f.replace("two.example\n");
    let wall = SystemTime::now();
    f.taken.refresh(start, wall, &f.log);
    let domain = Domain::parse("two.example").unwrap();
    assert!(
        !f.taken.lists.read().unwrap().relay.contains(&domain),
        "perhaps half written"
    );
    // Seen unchanged a check later: read, whatever its time says.
    f.taken.refresh(start + CHECK_EVERY, wall, &f.log);
    assert!(f.taken.lists.read().unwrap().relay.contains(&domain));
}

#[test]
fn a_broken_file_keeps_the_last_good_list_and_says_so_once() {
    let f = Fixture::new("one.example\n");
    let start = Instant::now();
    f.replace("one.example\nnot@a.domain\n");
    for second in 1..4 {
        assert!(f.takes("one.example", start + CHECK_EVERY * second));
    }
    let log = f.log();
    let relay = f.dir.path().join("relay");
    let complaint = format!("relay_domains: {}:2: \"not@a.domain\"", relay.display());
    assert_eq!(log.matches(&complaint).count(), 1, "{log}");
    assert!(
        log.contains("the 2 domains read before stay in use"),
        "{log}"
    );

    std::fs::remove_file(&relay).unwrap();
    assert!(f.takes("one.example", start + CHECK_EVERY * 5));
    assert!(f.takes("one.example", start + CHECK_EVERY * 6));
    assert_eq!(f.log().matches("No such file").count(), 1, "{}", f.log());

    f.replace("four.example\n");
    assert!(f.takes("four.example", start + CHECK_EVERY * 7));
    assert!(!f.takes("one.example", start + CHECK_EVERY * 8));
}
