use super::*;
use crate::properties::{config, mutated_text, peak, text};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]{1,8}){0,3}\\.?"
}

/// A domain list file as administrators write it: domains, blank lines, comments, a second
/// column, CRLF line ends.
fn list_file() -> impl Strategy<Value = (Vec<String>, String)> {
    proptest::collection::vec((name(), 0..5usize), 0..20).prop_map(|lines| {
        let mut text = String::new();
        let mut names = Vec::new();
        for (name, decoration) in lines {
            match decoration {
                0 => text.push_str(&format!("{name}\n")),
                1 => text.push_str(&format!("  {name}\tOK # since 2019\r\n")),
                2 => text.push_str("# a comment\n\n"),
                3 => text.push_str(&format!("{name}#\n")),
                _ => text.push_str(&format!("{name} RELAY extra words\n")),
            }
            if decoration != 2 {
                names.push(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        (names, text)
    })
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn list_files_read_as_written((names, text) in list_file()) {
        let mut set = DomainSet::default();
        parse(&text, &mut set).unwrap();
        prop_assert_eq!(set.names, names.into_iter().collect::<HashSet<_>>());
    }

    #[test]
    fn any_list_file_is_domains_or_a_numbered_error(
        input in prop_oneof![text(300), mutated_text(list_file().prop_map(|(_, text)| text))]
    ) {
        let mut set = DomainSet::default();
        let (parsed, most) = peak(|| parse(&input, &mut set));
        prop_assert!(most <= 8 * input.len() + 1024, "{} bytes", most);
        match parsed {
            Ok(()) => {
                for name in &set.names {
                    let domain = Domain::parse(name).unwrap();
                    prop_assert!(set.contains(&domain) && set.holds(&domain));
                }
            }
            Err((line, why)) => {
                prop_assert!(line >= 1 && line <= input.lines().count());
                prop_assert!(!why.contains('\n'));
            }
        }
    }
}
