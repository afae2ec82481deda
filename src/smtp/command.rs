//! Client commands. Each command's `Display` is its exact wire form without the closing CRLF;
//! [`Command::redacted`] is the form a transcript may show.
//!
//! Every value that reaches the wire comes from a validated type (`Domain`, `Address`,
//! [`Parameter`], [`EtrnArgument`], base64 text), so no command can carry a CR, an LF or a space
//! where the grammar has none.

use std::fmt;

use crate::address::{Address, Domain, ReversePath};

/// An SMTP command.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(Domain),
    Helo(Domain),
    StartTls,
    /// `AUTH mechanism [initial-response]`; the response is base64 text and a secret.
    Auth {
        mechanism: AuthMechanism,
        initial_response: Option<String>,
    },
    /// One line answering a `334` challenge during AUTH: base64 text and a secret.
    AuthResponse(String),
    Mail {
        from: ReversePath,
        parameters: Vec<Parameter>,
    },
    Rcpt {
        to: Address,
        parameters: Vec<Parameter>,
    },
    Data,
    /// `BDAT size [LAST]` (RFC 3030); the caller writes `size` octets after it.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Etrn(EtrnArgument),
    /// `ATRN [domain[,domain...]]` (RFC 2645): no domain asks for every domain of the account.
    Atrn(Vec<Domain>),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => write!(f, "EHLO {name}"),
            Command::Helo(name) => write!(f, "HELO {name}"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Auth {
                mechanism,
                initial_response: None,
            } => write!(f, "AUTH {mechanism}"),
            Command::Auth {
                mechanism,
                initial_response: Some(response),
            } => write!(f, "AUTH {mechanism} {}", or_equals(response)),
            Command::AuthResponse(response) => f.write_str(response),
            Command::Mail { from, parameters } => {
                write!(f, "MAIL FROM:<{from}>")?;
                parameters.iter().try_for_each(|p| write!(f, " {p}"))
            }
            Command::Rcpt { to, parameters } => {
                write!(f, "RCPT TO:<{to}>")?;
                parameters.iter().try_for_each(|p| write!(f, " {p}"))
            }
            Command::Data => f.write_str("DATA"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Command::Rset => f.write_str("RSET"),
            Command::Noop => f.write_str("NOOP"),
            Command::Quit => f.write_str("QUIT"),
            Command::Etrn(argument) => write!(f, "ETRN {argument}"),
            Command::Atrn(domains) if domains.is_empty() => f.write_str("ATRN"),
            Command::Atrn(domains) => {
                f.write_str("ATRN ")?;
                for (i, domain) in domains.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{domain}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Command {
    /// The command as a transcript or a log may show it: authentication secrets become `****`.
    pub fn redacted(&self) -> String {
        match self {
            Command::Auth {
                mechanism,
                initial_response: Some(_),
            } => format!("AUTH {mechanism} ****"),
            Command::AuthResponse(_) => "****".to_string(),
            other => other.to_string(),
        }
    }

    /// The verb alone, for error messages (`RCPT`, `ETRN`).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } | Command::AuthResponse(_) => "AUTH",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Etrn(_) => "ETRN",
            Command::Atrn(_) => "ATRN",
        }
    }
}

/// RFC 4954: an empty initial response is sent as `=`.
fn or_equals(response: &str) -> &str {
    if response.is_empty() { "=" } else { response }
}

/// The SASL mechanisms this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
    /// RFC 2195; the one RFC 2645 requires of ODMR.
    CramMd5,
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
            AuthMechanism::CramMd5 => "CRAM-MD5",
        })
    }
}

/// A MAIL or RCPT parameter `KEYWORD[=value]` (RFC 5321 §4.1.2 `esmtp-param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    keyword: String,
    value: Option<String>,
}

impl Parameter {
    /// Checks the grammar: the keyword is letters, digits and `-` starting with a letter or digit;
    /// the value is printable ASCII without `=` or space.
    pub fn new(keyword: &str, value: Option<&str>) -> Result<Parameter, String> {
        let keyword_ok = keyword
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !keyword_ok {
            return Err(format!("{keyword:?} is not an ESMTP parameter keyword"));
        }
        if let Some(value) = value
            && (value.is_empty() || !value.bytes().all(|b| (33..=126).contains(&b) && b != b'='))
        {
            return Err(format!("{value:?} is not an ESMTP parameter value"));
        }
        Ok(Parameter {
            keyword: keyword.to_ascii_uppercase(),
            value: value.map(str::to_string),
        })
    }

    /// `SIZE=n` (RFC 1870): the message size announced with MAIL.
    pub fn size(octets: u64) -> Parameter {
        Parameter {
            keyword: "SIZE".to_string(),
            value: Some(octets.to_string()),
        }
    }

    /// `BODY=8BITMIME` (RFC 6152).
    pub fn body_8bitmime() -> Parameter {
        Parameter {
            keyword: "BODY".to_string(),
            value: Some("8BITMIME".to_string()),
        }
    }
}

impl fmt::Display for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.keyword),
            None => f.write_str(&self.keyword),
        }
    }
}

/// What an ETRN names (RFC 1985): a domain, a domain with its subdomains (`@domain`), or a
/// server-specific queue (`#queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtrnArgument {
    Domain(Domain),
    Subdomains(Domain),
    Queue(String),
}

impl EtrnArgument {
    /// Parses an argument as a user writes it. A queue name may be any printable ASCII without
    /// spaces, since its meaning belongs to the server.
    pub fn parse(text: &str) -> Result<EtrnArgument, String> {
        if let Some(queue) = text.strip_prefix('#') {
            if queue.is_empty() || !queue.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{text:?}: a queue name is printable characters without spaces"
                ));
            }
            return Ok(EtrnArgument::Queue(queue.to_string()));
        }
        let (subdomains, domain) = match text.strip_prefix('@') {
            Some(domain) => (true, domain),
            None => (false, text),
        };
        let domain = Domain::parse(domain).map_err(|e| e.to_string())?;
        Ok(if subdomains {
            EtrnArgument::Subdomains(domain)
        } else {
            EtrnArgument::Domain(domain)
        })
    }
}

impl fmt::Display for EtrnArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtrnArgument::Domain(domain) => domain.fmt(f),
            EtrnArgument::Subdomains(domain) => write!(f, "@{domain}"),
            EtrnArgument::Queue(queue) => write!(f, "#{queue}"),
        }
    }
}

impl std::str::FromStr for EtrnArgument {
    type Err = String;
    fn from_str(text: &str) -> Result<EtrnArgument, String> {
        EtrnArgument::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(text: &str) -> Domain {
        Domain::parse(text).unwrap()
    }

    #[test]
    fn wire_forms() {
        let from = ReversePath::parse("<>", &domain("d.example")).unwrap();
        let to = Address::parse("user@customer.example", &domain("d.example")).unwrap();
        let cases = [
            (
                Command::Ehlo(domain("client.example")),
                "EHLO client.example",
            ),
            (
                Command::Helo(domain("client.example")),
                "HELO client.example",
            ),
            (
                Command::Mail {
                    from,
                    parameters: vec![Parameter::size(1024), Parameter::body_8bitmime()],
                },
                "MAIL FROM:<> SIZE=1024 BODY=8BITMIME",
            ),
            (
                Command::Rcpt {
                    to,
                    parameters: vec![Parameter::new("notify", Some("NEVER")).unwrap()],
                },
                "RCPT TO:<user@customer.example> NOTIFY=NEVER",
            ),
            (
                Command::Bdat {
                    size: 10,
                    last: true,
                },
                "BDAT 10 LAST",
            ),
            (
                Command::Etrn(EtrnArgument::parse("@customer.example").unwrap()),
                "ETRN @customer.example",
            ),
            (Command::Quit, "QUIT"),
        ];
        for (command, wire) in cases {
            assert_eq!(command.to_string(), wire);
            assert_eq!(command.redacted(), wire);
        }
    }

    #[test]
    fn secrets_never_reach_the_redacted_form() {
        let auth = Command::Auth {
            mechanism: AuthMechanism::Plain,
            initial_response: Some("AHVzZXIAc2VjcmV0".to_string()),
        };
        assert_eq!(auth.to_string(), "AUTH PLAIN AHVzZXIAc2VjcmV0");
        assert_eq!(auth.redacted(), "AUTH PLAIN ****");
        assert_eq!(format!("{auth:?}"), "AUTH PLAIN ****");
        let answer = Command::AuthResponse("c2VjcmV0".to_string());
        assert_eq!(answer.redacted(), "****");
    }

    #[test]
    fn etrn_arguments() {
        assert_eq!(
            EtrnArgument::parse("customer.example").unwrap(),
            EtrnArgument::Domain(domain("customer.example"))
        );
        assert_eq!(
            EtrnArgument::parse("#mqueue").unwrap(),
            EtrnArgument::Queue("mqueue".to_string())
        );
        for bad in [
            "",
            "@",
            "#",
            "# q",
            "a b.example",
            "a.example\r\nQUIT",
            "x\u{7f}",
            "#q\t",
        ] {
            assert!(EtrnArgument::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Parameter::new("SIZE", Some("1 2")).is_err());
        assert!(Parameter::new("-X", None).is_err());
        assert!(Parameter::new("X", Some("")).is_err());
        assert!(Parameter::new("X", Some("a=b")).is_err());
        assert_eq!(
            Parameter::new("smtputf8", None).unwrap().to_string(),
            "SMTPUTF8"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{config, mutated_text, peak, text};
    use proptest::prelude::*;

    fn argument() -> impl Strategy<Value = String> {
        prop_oneof![
            "@?[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}\\.?",
            "#[!-~]{1,12}",
            any::<[u8; 4]>().prop_map(|o| format!("[{}]", std::net::Ipv4Addr::from(o))),
        ]
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn etrn_arguments_read_back_and_never_break_the_line(
            input in prop_oneof![text(80), mutated_text(argument())]
        ) {
            let (parsed, most) = peak(|| EtrnArgument::parse(&input));
            // An error quotes the input escaped: up to six octets for each.
            prop_assert!(most <= 16 * input.len() + 512, "{} bytes", most);
            if let Ok(argument) = parsed {
                let wire = Command::Etrn(argument.clone()).to_string();
                prop_assert!(wire.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{:?}", wire);
                prop_assert_eq!(wire.matches(' ').count(), 1);
                prop_assert_eq!(EtrnArgument::parse(&argument.to_string()), Ok(argument));
            }
        }

        #[test]
        fn parameters_never_break_the_line(keyword in text(20), value in proptest::option::of(text(20))) {
            if let Ok(parameter) = Parameter::new(&keyword, value.as_deref()) {
                let wire = parameter.to_string();
                prop_assert!(wire.bytes().all(|b| b.is_ascii_graphic()), "{:?}", wire);
                prop_assert_eq!(wire.matches('=').count(), usize::from(value.is_some()));
            }
        }
    }
}
