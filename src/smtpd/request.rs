//! Client commands as the server reads them: one line in, one typed [`Request`] or the reply that
//! refuses it.
//!
//! Parsing is strict where the grammar is (RFC 5321 §4.1): a verb and its arguments separated by
//! one space, paths in angle brackets, domains that are host names or address literals. The one
//! leniency, a space after `FROM:`/`TO:`, is what widespread clients send. What cannot be parsed
//! gets 500 (no such command), 501 (bad arguments), 502 (known, not implemented) or 555 (an
//! unsupported MAIL or RCPT parameter).

use crate::address::{Address, Domain, ReversePath};
use crate::smtp::{EtrnArgument, Reply};

use super::wire::Chunk;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ehlo(Domain),
    Helo(Domain),
    Mail {
        from: ReversePath,
        /// `SIZE=` (RFC 1870): the size the client announces.
        size: Option<u64>,
    },
    Rcpt(ForwardPath),
    Data,
    /// RFC 3030: a chunk of message data follows the command line.
    Bdat(Chunk),
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    Etrn(EtrnArgument),
    /// RFC 3207; whether it is offered is the session's decision.
    StartTls,
}

/// Where RCPT asks mail to go (RFC 5321 §4.1.2 `Forward-path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain, which every server must take (§4.5.1).
    Postmaster,
    Mailbox(Address),
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Request, Reply> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Reply::new(500, "5.5.2 Error: command is not ASCII"));
    };
    if !line.is_ascii() || line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(Reply::new(
            500,
            "5.5.2 Error: command is not printable ASCII",
        ));
    }
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim_start();
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => hello_name(rest, "EHLO").map(Request::Ehlo),
        "HELO" => hello_name(rest, "HELO").map(Request::Helo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_argument(rest, "DATA", Request::Data),
        "BDAT" => bdat(rest),
        "RSET" => no_argument(rest, "RSET", Request::Rset),
        "QUIT" => no_argument(rest, "QUIT", Request::Quit),
        "NOOP" => Ok(Request::Noop),
        "HELP" => Ok(Request::Help),
        "VRFY" if rest.is_empty() => Err(Reply::new(501, "5.5.4 Syntax: VRFY address")),
        "VRFY" => Ok(Request::Vrfy),
        "ETRN" => etrn(rest),
        "STARTTLS" => no_argument(rest, "STARTTLS", Request::StartTls),
        "EXPN" | "AUTH" | "TURN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
            Err(Reply::new(502, "5.5.1 Error: command not implemented"))
        }
        _ => Err(Reply::new(500, "5.5.2 Error: command not recognized")),
    }
}

fn no_argument(rest: &str, verb: &str, request: Request) -> Result<Request, Reply> {
    if rest.is_empty() {
        Ok(request)
    } else {
        Err(Reply::new(501, format!("5.5.4 Syntax: {verb}")))
    }
}

/// RFC 3030 §2: `BDAT` SP chunk-size [ SP `LAST` ].
fn bdat(rest: &str) -> Result<Request, Reply> {
    let (size, marker) = rest.split_once(' ').unwrap_or((rest, ""));
    let last = match marker {
        "" => false,
        m if m.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(Reply::new(501, "5.5.4 Syntax: BDAT size [LAST]")),
    };
    // Digits only: `parse` would also take a sign. A size beyond 64 bits is no size either.
    let size = size
        .parse::<u64>()
        .ok()
        .filter(|_| size.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Reply::new(501, "5.5.4 Syntax: BDAT size [LAST]"))?;
    Ok(Request::Bdat(Chunk { size, last }))
}

fn hello_name(rest: &str, verb: &str) -> Result<Domain, Reply> {
    if rest.is_empty() || rest.contains(' ') {
        return Err(Reply::new(501, format!("5.5.4 Syntax: {verb} hostname")));
    }
    Domain::parse(rest).map_err(|_| {
        Reply::new(
            501,
            format!("5.5.2 <{rest}>: {verb} needs a host name or an address literal"),
        )
    })
}

fn mail(rest: &str) -> Result<Request, Reply> {
    let Some((path, parameters)) = after_keyword(rest, "FROM:").and_then(split_path) else {
        return Err(Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"));
    };
    let from = if path == "<>" {
        ReversePath::Null
    } else {
        mailbox(path)
            .map(ReversePath::Mailbox)
            .ok_or_else(|| Reply::new(501, format!("5.1.7 {path}: bad sender address syntax")))?
    };
    let mut size = None;
    for parameter in parameters.split(' ').filter(|p| !p.is_empty()) {
        let (keyword, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match keyword.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let octets = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| Reply::new(501, "5.5.4 Syntax: SIZE=octets"))?;
                size = Some(octets);
            }
            "BODY"
                if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {
            }
            _ => {
                return Err(Reply::new(
                    555,
                    format!("5.5.4 {parameter}: unsupported MAIL parameter"),
                ));
            }
        }
    }
    Ok(Request::Mail { from, size })
}

fn rcpt(rest: &str) -> Result<Request, Reply> {
    let Some((path, parameters)) = after_keyword(rest, "TO:").and_then(split_path) else {
        return Err(Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"));
    };
    if let Some(parameter) = parameters.split(' ').find(|p| !p.is_empty()) {
        return Err(Reply::new(
            555,
            format!("5.5.4 {parameter}: unsupported RCPT parameter"),
        ));
    }
    if path.eq_ignore_ascii_case("<postmaster>") {
        return Ok(Request::Rcpt(ForwardPath::Postmaster));
    }
    mailbox(path)
        .map(|address| Request::Rcpt(ForwardPath::Mailbox(address)))
        .ok_or_else(|| Reply::new(501, format!("5.1.3 {path}: bad recipient address syntax")))
}

fn etrn(rest: &str) -> Result<Request, Reply> {
    if rest.is_empty() || rest.contains(' ') {
        return Err(Reply::new(
            501,
            "5.5.4 Syntax: ETRN domain, ETRN @domain or ETRN #queue",
        ));
    }
    EtrnArgument::parse(rest)
        .map(Request::Etrn)
        .map_err(|_| Reply::new(501, format!("5.5.4 {rest}: not a domain name")))
}

/// What follows `FROM:` or `TO:` (case-insensitive), a space after the colon allowed.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start())
}

/// Splits `<path> parameters` at the `>` that closes the path, skipping quoted local parts.
fn split_path(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('<') {
        return None;
    }
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let (path, rest) = text.split_at(index + 1);
                return match rest.strip_prefix(' ') {
                    Some(parameters) => Some((path, parameters)),
                    None if rest.is_empty() => Some((path, "")),
                    None => None,
                };
            }
            _ => {}
        }
    }
    None
}

/// A mailbox that names its domain: over SMTP nothing is qualified with ours.
fn mailbox(path: &str) -> Option<Address> {
    Address::parse_qualified(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Request {
        parse(line.as_bytes()).unwrap()
    }

    fn code(line: &str) -> u16 {
        parse(line.as_bytes()).unwrap_err().code.value()
    }

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            ok("MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME"),
            Request::Mail {
                from: ReversePath::Mailbox(Address::parse_qualified("a@example.test").unwrap()),
                size: Some(1000)
            }
        );
        assert_eq!(
            ok("mail from: <>"),
            Request::Mail {
                from: ReversePath::Null,
                size: None
            }
        );
        assert!(matches!(
            ok("RCPT TO:<\"a>b\"@customer.example>"),
            Request::Rcpt(_)
        ));
        assert!(matches!(
            ok("RCPT TO:<@relay.example:u@customer.example>"),
            Request::Rcpt(_)
        ));
        assert_eq!(code("MAIL FROM:a@example.test"), 501);
        assert_eq!(code("MAIL FROM:<a@example.test"), 501);
        assert_eq!(code("MAIL FROM:<a@example.test>x"), 501);
        assert_eq!(code("MAIL FROM:<a@example.test> SIZE=x"), 501);
        assert_eq!(code("MAIL FROM:<a@example.test> AUTH=<>"), 555);
        assert_eq!(
            ok("RCPT TO:<postmaster>"),
            Request::Rcpt(ForwardPath::Postmaster)
        );
        assert_eq!(
            ok("rcpt to: <PostMaster>"),
            Request::Rcpt(ForwardPath::Postmaster)
        );
        assert_eq!(code("RCPT TO:<postmaster> NOTIFY=NEVER"), 555);
        assert_eq!(code("RCPT TO:<webmaster>"), 501);
        assert_eq!(code("RCPT TO:<u@customer.example> NOTIFY=NEVER"), 555);
        assert_eq!(code("RCPT TO:<u@bad domain>"), 501);
    }

    #[test]
    fn hello_and_etrn() {
        assert_eq!(
            ok("EHLO client.example"),
            Request::Ehlo(Domain::parse("client.example").unwrap())
        );
        assert!(matches!(ok("HELO [127.0.0.1]"), Request::Helo(_)));
        assert_eq!(code("EHLO"), 501);
        assert_eq!(code("EHLO a b"), 501);
        assert_eq!(code("EHLO $(reboot)"), 501);
        assert_eq!(
            ok("etrn @customer.example"),
            Request::Etrn(EtrnArgument::parse("@customer.example").unwrap())
        );
        assert!(matches!(
            ok("ETRN #mqueue"),
            Request::Etrn(EtrnArgument::Queue(_))
        ));
        for bad in [
            "ETRN",
            "ETRN ",
            "ETRN a.example extra",
            "ETRN @",
            "ETRN ;ls",
            "ETRN a..b",
        ] {
            assert_eq!(code(bad), 501, "{bad}");
        }
    }

    #[test]
    fn other_verbs() {
        assert_eq!(ok("NOOP anything"), Request::Noop);
        assert_eq!(ok("VRFY root"), Request::Vrfy);
        assert_eq!(code("VRFY"), 501);
        assert_eq!(code("DATA now"), 501);
        assert_eq!(code("EXPN staff"), 502);
        assert_eq!(ok("starttls"), Request::StartTls);
        assert_eq!(code("STARTTLS now"), 501);
        assert_eq!(code("XYZZY"), 500);
        assert_eq!(parse(b"NOOP \xff").unwrap_err().code.value(), 500);
    }

    #[test]
    fn bdat_takes_a_size_and_an_optional_last() {
        let chunk = |size, last| Request::Bdat(Chunk { size, last });
        assert_eq!(ok("BDAT 0"), chunk(0, false));
        assert_eq!(ok("bdat 1234 last"), chunk(1234, true));
        assert_eq!(ok("BDAT 7 LAST"), chunk(7, true));
        for bad in [
            "BDAT",
            "BDAT LAST",
            "BDAT -1",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
            "BDAT 0x10",
        ] {
            assert_eq!(code(bad), 501, "{bad}");
        }
        assert_eq!(code("BDAT 99999999999999999999999"), 501);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::properties::{bytes, config, mutated, peak};
    use crate::smtp::{Command, Parameter};
    use proptest::prelude::*;

    fn domain() -> impl Strategy<Value = Domain> {
        prop_oneof![
            3 => "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
            1 => any::<[u8; 4]>().prop_map(|o| format!("[{}]", std::net::Ipv4Addr::from(o))),
            1 => any::<u128>().prop_map(|a| format!("[IPv6:{}]", std::net::Ipv6Addr::from(a))),
        ]
        .prop_map(|text| Domain::parse(&text).unwrap())
    }

    fn address() -> impl Strategy<Value = Address> {
        let local = prop_oneof![
            3 => "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9+_-]{1,8}){0,2}",
            1 => "\"([ !#-\\[\\]-~]|\\\\[ -~]){0,20}\"",
        ];
        (local, domain()).prop_map(|(local, domain)| {
            Address::parse_qualified(&format!("{local}@{domain}")).unwrap()
        })
    }

    fn reverse_path() -> impl Strategy<Value = ReversePath> {
        prop_oneof![
            1 => Just(ReversePath::Null),
            4 => address().prop_map(ReversePath::Mailbox),
        ]
    }

    fn etrn_argument() -> impl Strategy<Value = EtrnArgument> {
        prop_oneof![
            domain().prop_map(EtrnArgument::Domain),
            domain().prop_map(EtrnArgument::Subdomains),
            "[!-~]{1,20}".prop_map(EtrnArgument::Queue),
        ]
    }

    /// A command as the client writes it, and the request the server must read from it.
    fn command() -> impl Strategy<Value = (Command, Request)> {
        prop_oneof![
            domain().prop_map(|d| (Command::Ehlo(d.clone()), Request::Ehlo(d))),
            domain().prop_map(|d| (Command::Helo(d.clone()), Request::Helo(d))),
            (
                reverse_path(),
                proptest::option::of(any::<u64>()),
                any::<bool>()
            )
                .prop_map(|(from, size, eight_bit)| {
                    let mut parameters = Vec::new();
                    parameters.extend(size.map(Parameter::size));
                    if eight_bit {
                        parameters.push(Parameter::body_8bitmime());
                    }
                    let command = Command::Mail {
                        from: from.clone(),
                        parameters,
                    };
                    (command, Request::Mail { from, size })
                }),
            address().prop_map(|to| (
                Command::Rcpt {
                    to: to.clone(),
                    parameters: Vec::new()
                },
                Request::Rcpt(ForwardPath::Mailbox(to))
            )),
            etrn_argument().prop_map(|a| (Command::Etrn(a.clone()), Request::Etrn(a))),
            Just((Command::Data, Request::Data)),
            (any::<u64>(), any::<bool>()).prop_map(|(size, last)| (
                Command::Bdat { size, last },
                Request::Bdat(Chunk { size, last })
            )),
            Just((Command::Rset, Request::Rset)),
            Just((Command::Noop, Request::Noop)),
            Just((Command::Quit, Request::Quit)),
            Just((Command::StartTls, Request::StartTls)),
        ]
    }

    /// Parses one line: no panic, a refusal with one of the documented codes whose text stays
    /// on one line, and memory in proportion to the line.
    fn parse_line(line: &[u8]) -> Result<Request, Reply> {
        let (result, most) = peak(|| parse(line));
        assert!(
            most <= 4 * line.len() + 1024,
            "{most} bytes for {} octets",
            line.len()
        );
        if let Err(refusal) = &result {
            assert!(
                [500, 501, 502, 555].contains(&refusal.code.value()),
                "{refusal:?}"
            );
            assert_eq!(refusal.lines.len(), 1, "{refusal:?}");
        }
        if line.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            assert_eq!(
                result.as_ref().map_err(|r| r.code.value()),
                Err(500),
                "{line:?}"
            );
        }
        result
    }

    proptest! {
        #![proptest_config(config(15000))]

        #[test]
        fn any_line_is_a_request_or_a_refusal(line in bytes(600)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn near_valid_commands_are_requests_or_refusals(
            line in mutated(command().prop_map(|(c, _)| c.to_string().into_bytes()))
        ) {
            let _ = parse_line(&line);
        }

        #[test]
        fn what_the_client_writes_the_server_reads((command, request) in command()) {
            let wire = command.to_string();
            prop_assert_eq!(parse_line(wire.as_bytes()), Ok(request.clone()));
            // Verbs and keywords are read without case.
            let lower = wire.to_ascii_lowercase();
            prop_assert!(parse_line(lower.as_bytes()).is_ok(), "{}", lower);
        }
    }
}
