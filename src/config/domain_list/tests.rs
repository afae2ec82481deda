use super::*;

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

fn set(names: &[&str]) -> DomainSet {
    names.iter().map(|name| domain(name)).collect()
}

#[test]
fn contains_is_the_listed_domain_itself_in_any_case() {
    let set = set(&["Customer.Example", "other.example.", "[192.0.2.1]"]);
    assert_eq!(set.len(), 3);
    for listed in [
        "customer.example",
        "CUSTOMER.EXAMPLE",
        "customer.example.",
        "Other.Example",
        "[192.0.2.1]",
    ] {
        assert!(set.contains(&domain(listed)), "{listed}");
    }
    for unlisted in [
        "a.customer.example",
        "example",
        "xcustomer.example",
        "customer.example.net",
        "[192.0.2.2]",
    ] {
        assert!(!set.contains(&domain(unlisted)), "{unlisted}");
    }
}

#[test]
fn holds_walks_up_the_parents() {
    let listed = set(&["customer.example", "B.Other.Example"]);
    for held in [
        "customer.example",
        "a.customer.example",
        "x.y.z.CUSTOMER.example.",
        "b.other.example",
        "c.b.other.example",
    ] {
        assert!(listed.holds(&domain(held)), "{held}");
    }
    for free in [
        "example",
        "xcustomer.example",
        "customer.example.net",
        "other.example",
        "bb.other.example",
        "[192.0.2.1]",
    ] {
        assert!(!listed.holds(&domain(free)), "{free}");
    }
    let literal = set(&["[192.0.2.1]"]);
    assert!(literal.holds(&domain("[192.0.2.1]")));
    assert!(!literal.holds(&domain("[192.0.2.10]")));
}

#[test]
fn an_empty_set_holds_nothing() {
    let empty = DomainSet::default();
    assert!(empty.is_empty());
    assert!(!empty.holds(&domain("example")));
    assert!(!empty.contains(&domain("example")));
}

#[test]
fn files_take_comments_blank_lines_and_a_second_column() {
    let mut found = DomainSet::default();
    let text = "# customers of the backup MX\n\
                one.example\n\
                \n\
                \t  Two.Example   \r\n\
                three.example OK\n\
                four.example\tRELAY  # the Postfix map source, as it is\n\
                five.example# no space before the comment\n\
                six.example.\n\
                   # an indented comment\n";
    parse(text, &mut found).unwrap();
    let wanted = set(&[
        "one.example",
        "two.example",
        "three.example",
        "four.example",
        "five.example",
        "six.example",
    ]);
    assert_eq!(found, wanted);
}

#[test]
fn a_bad_line_is_named_by_its_number() {
    for (text, line) in [
        ("good.example\nbad!domain OK\n", 2),
        ("a.example\n\n# x\nb..example\n", 4),
        ("-dash.example\n", 1),
        ("ok.example\n@customer.example\n", 2),
        ("ok.example\nhash:/etc/postfix/relay\n", 2),
    ] {
        let mut set = DomainSet::default();
        assert_eq!(parse(text, &mut set).unwrap_err().0, line, "{text:?}");
    }
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_list_mixes_domains_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "first", b"one.example\n");
    let second = write(dir.path(), "second", b"two.example OK\n");
    let list = DomainList::load(vec![
        Source::Domain(domain("listed.example")),
        Source::File(first.clone()),
        Source::File(second.clone()),
    ])
    .unwrap();
    for name in ["listed.example", "one.example", "two.example"] {
        assert!(list.contains(&domain(name)), "{name}");
    }
    assert!(!list.contains(&domain("three.example")));
    let files: Vec<&Path> = list.files().map(|(path, _)| path).collect();
    assert_eq!(files, [first.as_path(), second.as_path()]);

    write(dir.path(), "first", b"three.example\n");
    let again = list.reload().unwrap();
    assert!(again.contains(&domain("three.example")));
    assert!(!again.contains(&domain("one.example")));
    assert!(again.contains(&domain("listed.example")));
}

#[test]
fn files_that_are_not_domain_lists_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad_line = write(dir.path(), "bad", b"a.example\nnot@a.domain OK\n");
    let not_utf8 = write(dir.path(), "binary", b"a.example\n\xff\xfe\n");
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_FILE + 1)
        .unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let cases = [
        (
            bad_line.clone(),
            format!("{}:2: \"not@a.domain\": ", bad_line.display()),
        ),
        (
            not_utf8.clone(),
            format!("{}: not text", not_utf8.display()),
        ),
        (huge.clone(), format!("{}: larger than", huge.display())),
        (
            fifo.clone(),
            format!("{}: not a regular file", fifo.display()),
        ),
        (
            dir.path().to_path_buf(),
            format!("{}: not a regular file", dir.path().display()),
        ),
        (
            dir.path().join("missing"),
            format!("{}: No such file", dir.path().join("missing").display()),
        ),
    ];
    for (path, wanted) in cases {
        let why = DomainList::load(vec![Source::File(path)]).unwrap_err();
        assert!(why.starts_with(&wanted), "{why}");
        assert!(!why.contains('\n'), "{why:?}");
    }
}

#[test]
fn an_empty_file_is_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty", b"");
    let comments = write(dir.path(), "comments", b"# nobody yet\n\n");
    for path in [empty, comments] {
        let list = DomainList::load(vec![Source::File(path)]).unwrap();
        assert!(list.is_empty());
        assert_eq!(list.files().count(), 1, "still watched");
    }
}

#[test]
fn ten_thousand_domains_each_found_and_nothing_else() {
    let names: Vec<String> = (0..10_000).map(|n| format!("site{n}.example")).collect();
    let mut set = DomainSet::default();
    parse(&names.join("\n"), &mut set).unwrap();
    assert_eq!(set.len(), 10_000);
    for name in &names {
        assert!(set.contains(&domain(name)) && set.holds(&domain(&format!("mx.{name}"))));
    }
    assert!(!set.contains(&domain("site10000.example")));
    assert!(!set.holds(&domain("example")));
}

/// The configuration `text`, with `DIR` standing for `dir`.
fn config(text: &str, dir: &Path) -> Result<crate::config::Config, String> {
    let text = text.replace("DIR", &dir.display().to_string());
    crate::config::Config::parse(&text, "etrnq.toml").map_err(|e| e.to_string())
}

#[test]
fn the_keys_take_a_list_a_file_or_both() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "relay",
        b"# customers\nr1.example OK\n\nr2.example # since 2019\n",
    );
    write(dir.path(), "hold", b"h1.example\nh2.example.\n");
    let listed = config("relay_domains = [\"r0.example\"]", dir.path()).unwrap();
    assert!(listed.takes(&domain("R0.example")) && listed.relay_domains.files().count() == 0);

    let file = config(
        "relay_domains = \"DIR/relay\"\nhold_domains = \"DIR/hold\"",
        dir.path(),
    )
    .unwrap();
    for taken in ["r1.example", "r2.example", "h1.example", "h2.example"] {
        assert!(file.takes(&domain(taken)), "{taken}");
    }
    assert!(!file.takes(&domain("a.h1.example")), "taken exactly");
    assert!(
        file.is_held(&domain("a.h1.example")),
        "held with subdomains"
    );
    assert!(!file.is_held(&domain("r1.example")));

    let mixed = config(
        "relay_domains = [\"r0.example\", \"DIR/relay\"]\nhold_domains = [\"DIR/hold\", \"h3.example\"]\n\
         [relay_recipients]\n\"r2.example\" = [\"alice\"]\n\"h2.example\" = [\"bob\"]",
        dir.path(),
    )
    .unwrap();
    for taken in [
        "r0.example",
        "r1.example",
        "r2.example",
        "h1.example",
        "h3.example",
    ] {
        assert!(mixed.takes(&domain(taken)), "{taken}");
    }
    assert!(mixed.is_held(&domain("x.h3.example")) && !mixed.is_held(&domain("r0.example")));
}

#[test]
fn a_bad_domain_list_is_one_line_naming_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad", b"ok.example\n\n# x\nbad!domain\n");
    write(dir.path(), "binary", b"\xc3\x28\n");
    write(dir.path(), "empty", b"");
    let d = dir.path().display();
    let cases = [
        (
            "relay_domains = \"DIR/bad\"".to_string(),
            format!("etrnq.toml: relay_domains: {d}/bad:4: \"bad!domain\": "),
        ),
        (
            "hold_domains = [\"a.example\", \"DIR/bad\"]".to_string(),
            format!("etrnq.toml: hold_domains: {d}/bad:4: "),
        ),
        (
            "relay_domains = \"DIR/missing\"".to_string(),
            format!("etrnq.toml: relay_domains: {d}/missing: No such file or directory"),
        ),
        (
            "relay_domains = \"DIR\"".to_string(),
            format!("etrnq.toml: relay_domains: {d}: not a regular file"),
        ),
        (
            "relay_domains = \"DIR/binary\"".to_string(),
            format!("etrnq.toml: relay_domains: {d}/binary: not text (UTF-8 expected)"),
        ),
        (
            "relay_domains = \"relative/file\"".to_string(),
            "etrnq.toml: relay_domains: expected a list of domains or an absolute file path, \
             found \"relative/file\""
                .to_string(),
        ),
        (
            "relay_domains = 5".to_string(),
            "etrnq.toml: relay_domains: expected a list of domains or an absolute file path, \
             found integer"
                .to_string(),
        ),
        (
            "relay_domains = [\"a.example\", 5]".to_string(),
            "etrnq.toml: relay_domains: expected a string, found integer".to_string(),
        ),
        (
            "relay_domains = \"DIR/empty\"\n[relay_recipients]\n\"a.example\" = [\"x\"]"
                .to_string(),
            "etrnq.toml: relay_recipients.a.example: not one of relay_domains or hold_domains"
                .to_string(),
        ),
    ];
    for (text, wanted) in cases {
        let why = config(&text, dir.path()).unwrap_err();
        assert!(why.starts_with(&wanted), "{text:?} gave {why:?}");
        assert!(!why.contains('\n'), "{why:?}");
    }
    let empty = config("relay_domains = \"DIR/empty\"", dir.path()).unwrap();
    assert!(empty.relay_domains.is_empty());
}

#[test]
fn a_long_running_program_rereads_a_changed_list_once_it_has_settled() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hold", b"one.example\n");
    let mut config = config("hold_domains = \"DIR/hold\"", dir.path()).unwrap();
    let later = || std::time::SystemTime::now() + list_file::SETTLE;
    assert!(config.reread_domain_lists(later()).is_empty(), "unchanged");
    assert_eq!(
        config.hold_domains.freshness(std::time::SystemTime::now()),
        Freshness::Current
    );

    let new = write(dir.path(), "hold.new", b"two.example\n");
    std::fs::rename(&new, &path).unwrap();
    let now = std::time::SystemTime::now();
    assert_eq!(config.hold_domains.freshness(now), Freshness::Settling);
    assert!(config.reread_domain_lists(now).is_empty(), "half written?");
    assert!(config.is_held(&domain("one.example")));
    assert_eq!(
        config.reread_domain_lists(later()),
        [Ok("hold_domains read again: 1 domains (was 1)".to_string())]
    );
    assert!(config.is_held(&domain("two.example")) && !config.is_held(&domain("one.example")));

    write(dir.path(), "hold", b"two.example\nbad!domain\n");
    let said = config.reread_domain_lists(later());
    let wanted = format!("hold_domains: {}:2: \"bad!domain\": ", path.display());
    assert!(
        matches!(&said[..], [Err(line)] if line.starts_with(&wanted)
            && line.ends_with("; the 1 domains read before stay in use")),
        "{said:?}"
    );
    assert!(
        config.is_held(&domain("two.example")),
        "the last good list stays"
    );
}
