//! What a server announced in its EHLO reply (RFC 5321 §4.1.1.1): its name and the service
//! extensions with their parameters.

use std::collections::BTreeMap;

use super::command::AuthMechanism;
use super::reply::Reply;

/// The extensions of one EHLO reply. Keywords compare case-insensitively; a server that answered
/// only HELO has [`Capabilities::default`]: no extensions at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The first word of the reply: the name the server gives itself.
    pub server_name: String,
    extensions: BTreeMap<String, Vec<String>>,
}

impl Capabilities {
    /// Reads the extensions from a positive EHLO reply. Lines that are not keywords are skipped,
    /// since servers do send oddities and none of them can make an extension appear.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut lines = reply.lines.iter();
        let server_name = lines
            .next()
            .and_then(|first| first.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let mut extensions = BTreeMap::new();
        for line in lines {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // Old servers write `AUTH=LOGIN PLAIN` for Outlook Express; it means `AUTH LOGIN PLAIN`.
            let (keyword, first_param) = match keyword.split_once('=') {
                Some((keyword, param)) => (keyword, Some(param)),
                None => (keyword, None),
            };
            if !is_keyword(keyword) {
                continue;
            }
            let params: Vec<String> = first_param
                .into_iter()
                .filter(|p| !p.is_empty())
                .chain(words)
                .map(str::to_string)
                .collect();
            extensions
                .entry(keyword.to_ascii_uppercase())
                .or_insert_with(Vec::new)
                .extend(params);
        }
        Capabilities {
            server_name,
            extensions,
        }
    }

    /// True when `keyword` was announced.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions.contains_key(&keyword.to_ascii_uppercase())
    }

    /// The parameters announced with `keyword`, empty when it has none or was not announced.
    pub fn parameters(&self, keyword: &str) -> &[String] {
        self.extensions
            .get(&keyword.to_ascii_uppercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Every announced keyword, upper case, sorted.
    pub fn keywords(&self) -> impl Iterator<Item = &str> {
        self.extensions.keys().map(String::as_str)
    }

    pub fn etrn(&self) -> bool {
        self.has("ETRN")
    }

    /// ATRN (RFC 2645): the server turns the connection around on request.
    pub fn atrn(&self) -> bool {
        self.has("ATRN")
    }

    pub fn starttls(&self) -> bool {
        self.has("STARTTLS")
    }

    pub fn pipelining(&self) -> bool {
        self.has("PIPELINING")
    }

    pub fn eight_bit_mime(&self) -> bool {
        self.has("8BITMIME")
    }

    pub fn chunking(&self) -> bool {
        self.has("CHUNKING")
    }

    pub fn enhanced_status_codes(&self) -> bool {
        self.has("ENHANCEDSTATUSCODES")
    }

    pub fn smtputf8(&self) -> bool {
        self.has("SMTPUTF8")
    }

    pub fn dsn(&self) -> bool {
        self.has("DSN")
    }

    /// The SIZE limit in octets (RFC 1870). `None` when SIZE was not announced, announced without
    /// a number, or announced as 0 (no fixed limit).
    pub fn size_limit(&self) -> Option<u64> {
        self.parameters("SIZE")
            .first()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
    }

    /// The announced AUTH mechanisms, upper case, as the server listed them.
    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.parameters("AUTH")
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect()
    }

    /// True when the server offers `mechanism`.
    pub fn offers_auth(&self, mechanism: AuthMechanism) -> bool {
        let name = mechanism.to_string();
        self.parameters("AUTH")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&name))
    }
}

fn is_keyword(word: &str) -> bool {
    word.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Capabilities {
        Capabilities::from_ehlo(&Reply::from_lines(lines).unwrap())
    }

    #[test]
    fn sendmail_ehlo() {
        let caps = ehlo(&[
            "250-mta.example.test Hello localhost [127.0.0.1], pleased to meet you",
            "250-ENHANCEDSTATUSCODES",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-SIZE",
            "250-DSN",
            "250-ETRN",
            "250-AUTH DIGEST-MD5 CRAM-MD5",
            "250 HELP",
        ]);
        assert_eq!(caps.server_name, "mta.example.test");
        assert!(caps.etrn() && caps.pipelining() && caps.eight_bit_mime());
        assert!(caps.enhanced_status_codes() && caps.dsn() && caps.has("help"));
        assert!(!caps.starttls() && !caps.chunking());
        assert_eq!(caps.size_limit(), None);
        assert!(caps.has("SIZE"));
        assert_eq!(caps.auth_mechanisms(), ["DIGEST-MD5", "CRAM-MD5"]);
        assert!(!caps.offers_auth(AuthMechanism::Plain));
    }

    #[test]
    fn postfix_ehlo() {
        let caps = ehlo(&[
            "250-mta.example.test",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-etrn",
            "250-STARTTLS",
            "250-AUTH=PLAIN LOGIN",
            "250 CHUNKING",
        ]);
        assert_eq!(caps.size_limit(), Some(10_240_000));
        assert!(caps.etrn() && caps.starttls() && caps.chunking());
        assert!(caps.offers_auth(AuthMechanism::Plain));
        assert!(caps.offers_auth(AuthMechanism::Login));
        assert_eq!(
            caps.keywords().collect::<Vec<_>>(),
            ["AUTH", "CHUNKING", "ETRN", "PIPELINING", "SIZE", "STARTTLS"]
        );
    }

    #[test]
    fn a_one_line_ehlo_has_no_extensions() {
        let caps = ehlo(&["250 mta.example.test"]);
        assert_eq!(caps.keywords().count(), 0);
        assert!(!caps.etrn());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, peak, text};
    use crate::smtp::ReplyCode;
    use proptest::prelude::*;

    /// EHLO lines as servers write them, and as broken ones do.
    fn ehlo_line() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => "[A-Za-z0-9][A-Za-z0-9-]{0,12}( [!-~]{1,10}){0,4}",
            1 => "(AUTH|SIZE)[ =]([!-~]{0,10} ?){0,30}",
            1 => text(60),
        ]
    }

    proptest! {
        #![proptest_config(config(5000))]

        #[test]
        fn any_ehlo_reply_gives_keywords_and_their_parameters(
            lines in proptest::collection::vec(ehlo_line(), 1..20)
        ) {
            let reply = Reply {
                code: ReplyCode::OK,
                enhanced: None,
                lines,
            };
            let total: usize = reply.lines.iter().map(String::len).sum();
            let (caps, most) = peak(|| Capabilities::from_ehlo(&reply));
            // Each word becomes a string of its own: a bounded reply gives bounded keywords.
            prop_assert!(most <= 40 * total + 1024, "{} bytes for {}", most, total);
            for keyword in caps.keywords() {
                prop_assert!(is_keyword(keyword));
                prop_assert_eq!(keyword.to_ascii_uppercase(), keyword);
                prop_assert!(caps.has(&keyword.to_ascii_lowercase()));
                for parameter in caps.parameters(keyword) {
                    prop_assert!(!parameter.is_empty());
                    prop_assert!(!parameter.contains(char::is_whitespace));
                }
            }
            let _ = (caps.size_limit(), caps.auth_mechanisms());
            prop_assert!(caps.server_name.len() <= reply.lines[0].len());
        }
    }
}
