//! The documentation keeps up with the definitions: every long option of every program is in
//! its man page, and every configuration key is in the README's configuration table and in
//! etrnq.toml(5).
//!
//! Options come from the clap definitions the programs parse (`etrnq::args::commands()`), keys
//! from the configuration's own serde definition, so a new option or key fails here until it
//! is written down. Each failure names the program or key, what is missing and the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Man page text as a reader sees it: roff's escapes for hyphens and fonts taken out.
fn man_text(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\(hy", "-")
        .replace("\\&", "")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// True when `text` holds `word` with no name character on either side, so `--timeout` is not
/// found in `--data-timeout` or `--timeout-x`.
fn has_word(text: &str, word: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(name_char) && !after.is_some_and(name_char)
    })
}

/// The man page of `program`: `man/PROGRAM.N` for any section N.
fn man_page(program: &str) -> Option<PathBuf> {
    let dir = root().join("man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("man/")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_stem().and_then(|s| s.to_str()) == Some(program)
                && path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.len() == 1 && e.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    pages.sort();
    pages.pop()
}

#[test]
fn every_program_in_src_bin_has_its_definition_in_the_library() {
    let defined: BTreeSet<String> = etrnq::args::commands()
        .iter()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("src/bin")).expect("src/bin") {
        let path = entry.expect("entry").path();
        let Some(program) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && !defined.contains(program) {
            missing.push(format!(
                "src/bin/{program}.rs: its clap definition is not in etrnq::args::commands() \
                 (src/args/mod.rs), so its options cannot be checked against man/{program}.*"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_long_option_is_in_its_man_page() {
    let mut missing = Vec::new();
    for command in etrnq::args::commands() {
        let program = command.get_name().to_string();
        let Some(page) = man_page(&program) else {
            missing.push(format!("{program}: no man page man/{program}.[1-8]"));
            continue;
        };
        let text = man_text(&std::fs::read_to_string(&page).expect("man page"));
        let file = page.strip_prefix(root()).unwrap_or(&page).display();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let Some(long) = arg.get_long() else {
                continue;
            };
            let option = format!("--{long}");
            if !has_word(&text, &option) {
                missing.push(format!("{program}: {option} is not in {file}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Asks a derived `Deserialize` for the names of its struct's fields, which serde hands to
/// `deserialize_struct`; every other request is refused.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "only a struct's field names are asked for",
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Every key the configuration file may hold at its top level, as serde reads them.
fn configuration_keys() -> Vec<&'static str> {
    let mut fields: &'static [&'static str] = &[];
    let _ = etrnq::config::Config::deserialize(FieldNames(&mut fields));
    assert!(
        fields.contains(&"queue_dir"),
        "the configuration's keys: {fields:?}"
    );
    fields.to_vec()
}

/// The first cell of each row of the README's configuration table.
fn readme_table_keys() -> Vec<String> {
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README.md has a Configuration section");
    section
        .lines()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1).map(str::to_string))
        .collect()
}

/// True when a cell names `key` in backquotes: `key`, `[key]`, `[key] sub` or `a`, `key`.
fn cell_names(cell: &str, key: &str) -> bool {
    cell.split('`').skip(1).step_by(2).any(|quoted| {
        let quoted = quoted.trim();
        quoted == key || quoted == format!("[{key}]") || quoted.starts_with(&format!("[{key}] "))
    })
}

#[test]
fn every_configuration_key_is_in_the_readme_table() {
    let cells = readme_table_keys();
    let missing: Vec<String> = configuration_keys()
        .into_iter()
        .filter(|key| !cells.iter().any(|cell| cell_names(cell, key)))
        .map(|key| {
            format!("configuration key {key}: no row of README.md's table under ## Configuration")
        })
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The tags of the KEYS section of etrnq.toml(5): the line after each `.TP`.
fn man_key_tags() -> Vec<String> {
    let page = man_text(&read("man/etrnq.toml.5"));
    let keys = page
        .split("\n.SH ")
        .find(|s| s.starts_with("KEYS\n"))
        .expect("man/etrnq.toml.5 has a KEYS section");
    let lines: Vec<&str> = keys.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .map(|pair| pair[1].replace('"', " "))
        .collect()
}

#[test]
fn every_configuration_key_is_in_etrnq_toml_5() {
    let tags = man_key_tags();
    let missing: Vec<String> = configuration_keys()
        .into_iter()
        .filter(|key| {
            !tags
                .iter()
                .any(|tag| has_word(tag, key) || tag.contains(&format!("[{key}]")))
        })
        .map(|key| format!("configuration key {key}: no entry under KEYS in man/etrnq.toml.5"))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_checks_find_what_is_missing() {
    assert!(has_word("use --queue-dir DIR", "--queue-dir"));
    assert!(!has_word("use --queue-dir DIR", "--queue"));
    assert!(!has_word("--data-timeout 5", "--timeout"));
    assert!(has_word("-B, --timeout.", "--timeout"));
    assert_eq!(
        man_text(".BI \\-\\-queue\\-dir \" dir\""),
        ".BI --queue-dir \" dir\""
    );
    assert!(cell_names(" `[dns] nameservers` ", "dns"));
    assert!(cell_names(" `tls_cert`, `tls_key` ", "tls_key"));
    assert!(!cell_names(" `tls_cert` ", "tls"));
    assert!(!cell_names(" tls ", "tls"));
}

/// The name a program is installed under: etrnq's mailq is `etrnq-mailq`, beside the MTA's
/// `mailq` (see the Install section of the README).
fn installed_name(program: &str) -> String {
    match program {
        "mailq" => "etrnq-mailq".to_string(),
        other => other.to_string(),
    }
}

/// The completion files in `contrib/completions/`, as clap_complete writes them from the
/// definitions: `bash/NAME`, `zsh/_NAME`, `fish/NAME.fish`.
fn completions() -> Vec<(PathBuf, Vec<u8>)> {
    use clap_complete::Shell;
    let mut files = Vec::new();
    for mut command in etrnq::args::commands() {
        let name = installed_name(command.get_name());
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut command, &name, &mut text);
            files.push((Path::new("contrib/completions").join(file), text));
        }
    }
    files
}

/// The packaged completions are the definitions' own. `ETRNQ_WRITE_COMPLETIONS=1` writes them
/// after a change to an option.
#[test]
fn the_shell_completions_match_the_definitions() {
    let write = std::env::var_os("ETRNQ_WRITE_COMPLETIONS").is_some();
    let mut stale = Vec::new();
    for (path, text) in completions() {
        let full = root().join(&path);
        if write {
            std::fs::create_dir_all(full.parent().expect("parent")).expect("completions dir");
            std::fs::write(&full, &text).expect("write completion");
        } else if std::fs::read(&full).ok().as_deref() != Some(text.as_slice()) {
            stale.push(format!(
                "{}: not what the definitions give; run ETRNQ_WRITE_COMPLETIONS=1 cargo test \
                 --release --test docs",
                path.display()
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

/// The packaged /etc/etrnq/etrnq.toml sets nothing, and each of its commented lines is a valid
/// setting once uncommented; every key has a line.
#[test]
fn the_packaged_configuration_is_commented_and_valid() {
    use etrnq::config::Config;
    let text = read("contrib/etrnq.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let commented = dir.path().join("commented.toml");
    std::fs::write(&commented, &text).expect("write");
    let config = Config::read(&commented).expect("the commented file reads");
    assert_eq!(config.queue_dir, Config::default().queue_dir);
    assert!(config.routes.is_empty() && config.hold_domains.is_empty());

    // A commented line of a setting starts "#key = " or "#[table]"; prose has a space after '#'.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => format!("{rest}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    let all = dir.path().join("uncommented.toml");
    std::fs::write(&all, &uncommented).expect("write");
    let config = Config::read(&all)
        .unwrap_or_else(|e| panic!("contrib/etrnq.toml uncommented: {e}\n{uncommented}"));
    assert_eq!(config.routes.len(), 1);
    let missing: Vec<&str> = configuration_keys()
        .into_iter()
        .filter(|key| {
            !uncommented
                .lines()
                .any(|l| l.starts_with(&format!("{key} =")) || l == format!("[{key}]"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "configuration keys with no line in contrib/etrnq.toml: {missing:?}"
    );
}

/// The README's Tests section has a line for every suite in tests/.
#[test]
fn every_suite_is_in_the_readme_tests_section() {
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Tests\n"))
        .expect("README.md has a Tests section");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).expect("tests/") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".rs") && !section.contains(&format!("- `tests/{name}`:")) {
            missing.push(format!(
                "tests/{name}: no line \"- `tests/{name}`: ...\" under ## Tests in README.md"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
