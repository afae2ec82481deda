use super::*;

const FULL: &str = r#"
queue_dir = "/var/spool/etrnq"
hostnames = ["mx2.isp.example"]
max_message_size = 52428800
max_hops = 25
queue_lifetime = "5d"
retry_first = "1h"
retry_factor = 1.5
smarthost = "[relay.isp.example]:25"
hold_domains = ["customer.example"]
relay_domains = ["customer.example"]
tls = "opportunistic"
log = "syslog"
tls_cert = "/etc/etrnq/tls/cert.pem"
tls_key = "/etc/etrnq/tls/key.pem"
queue_min_free = "100M"
allow_untrusted_routing = false
postmaster = "hostmaster@isp.example"
recipients_per_transaction = 50
queue_run_batch = 20000
delay_warning = "4h"
[routes]
"customer.example" = "[127.0.0.1]:2526"
[dns]
nameservers = ["127.0.0.1:5353"]
[relay_recipients]
"customer.example" = ["alice", "Bob"]
[queue_lifetimes]
"customer.example" = "30d"
"#;

#[test]
fn the_documented_example_parses() {
    let c = Config::parse(FULL, "etrnq.toml").unwrap();
    assert_eq!(c.hostnames[0].as_str(), "mx2.isp.example");
    assert_eq!(c.queue_lifetime, Duration::from_secs(5 * 86400));
    assert_eq!(c.delay_warning, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(Config::default().delay_warning, None, "off by default");
    assert_eq!(
        c.lifetime_of("sub.Customer.Example"),
        Duration::from_secs(30 * 86400)
    );
    assert_eq!(c.routes["customer.example"].1.port, 2526);
    assert_eq!(c.dns_nameservers[0].port(), 5353);
    assert!(c.is_held(&Domain::parse("Customer.Example").unwrap()));
    assert_eq!(c.queue_min_free(), 100 << 20);
    assert_eq!(c.queue_run_batch, 20_000);
    assert_eq!(Config::default().queue_run_batch, 250_000);
    assert_eq!(c.postmaster.unwrap().to_string(), "hostmaster@isp.example");
    let (_, users) = &c.relay_recipients["customer.example"];
    assert_eq!(
        users,
        &RecipientList::Listed(["alice".to_string(), "bob".to_string()].into())
    );
}

#[test]
fn the_most_specific_lifetime_wins_and_the_global_one_is_the_rest() {
    let c = Config::parse(
        "queue_lifetime = \"5d\"\n[queue_lifetimes]\n\"customer.example\" = \"30d\"\n\
         \"fast.customer.example\" = \"1d\"\n",
        "etrnq.toml",
    )
    .unwrap();
    let day = |n: u64| Duration::from_secs(n * 86400);
    let cases = [
        ("customer.example", day(30)),
        ("CUSTOMER.example", day(30)),
        ("a.b.customer.example", day(30)),
        ("fast.customer.example", day(1)),
        ("x.fast.customer.example", day(1)),
        ("xcustomer.example", day(5)),
        ("other.example", day(5)),
        ("bad..domain", day(5)),
        ("", day(5)),
    ];
    for (domain, lifetime) in cases {
        assert_eq!(c.lifetime_of(domain), lifetime, "{domain:?}");
    }
}

#[test]
fn the_reserve_defaults_to_one_and_a_half_messages() {
    let c = Config::parse("max_message_size = 1000", "etrnq.toml").unwrap();
    assert_eq!(c.queue_min_free(), 1500);
    let c = Config::parse("queue_min_free = 0", "etrnq.toml").unwrap();
    assert_eq!(c.queue_min_free(), 0);
    assert_eq!(parse_size("75000000"), Ok(75_000_000));
    assert_eq!(parse_size("2k"), Ok(2048));
    assert_eq!(parse_size("3G"), Ok(3 << 30));
    assert!(parse_size("G").is_err());
    assert!(parse_size("-1M").is_err());
    assert!(parse_size("99999999999T").is_err());
}

#[test]
fn errors_name_file_and_key() {
    let cases = [
        ("bogus = 1", "etrnq.toml: bogus: unknown key"),
        (
            "max_hops = \"x\"",
            "etrnq.toml: max_hops: expected a whole number",
        ),
        (
            "max_hops = 0",
            "etrnq.toml: max_hops: must be greater than zero",
        ),
        (
            "queue_lifetime = \"5x\"",
            "etrnq.toml: queue_lifetime: \"5x\": unit",
        ),
        ("tls = \"maybe\"", "etrnq.toml: tls: \"maybe\""),
        (
            "hostnames = [\"bad host\"]",
            "etrnq.toml: hostnames: \"bad host\"",
        ),
        (
            "[routes]\n\"a.example\" = \"[x\"",
            "etrnq.toml: routes.a.example:",
        ),
        (
            "[dns]\nservers = []",
            "etrnq.toml: dns.servers: unknown key",
        ),
        ("log = \"relative.log\"", "etrnq.toml: log:"),
        (
            "retry_factor = 0.5",
            "etrnq.toml: retry_factor: must be between",
        ),
        ("hostnames = [", "etrnq.toml: line 1:"),
        (
            "[dns]\nnameservers = [\"[::1\"]",
            "etrnq.toml: dns.nameservers: \"[::1\" is not an IP address with an optional port",
        ),
        (
            "[dns]\nnameservers = [\"127.0.0.1:0\"]",
            "etrnq.toml: dns.nameservers: \"127.0.0.1:0\" is not an IP address with an optional port",
        ),
        (
            "tls_cert = \"/c.pem\"",
            "etrnq.toml: tls_key: missing: tls_cert is set",
        ),
        (
            "tls_key = \"/k.pem\"",
            "etrnq.toml: tls_cert: missing: tls_key is set",
        ),
        ("tls_cert = \"\"", "etrnq.toml: tls_cert: must not be empty"),
        (
            "queue_min_free = -1",
            "etrnq.toml: queue_min_free: must not be negative",
        ),
        (
            "queue_min_free = \"5Q\"",
            "etrnq.toml: queue_min_free: \"5Q\": unit must be",
        ),
        (
            "allow_untrusted_routing = \"yes\"",
            "etrnq.toml: allow_untrusted_routing: expected true or false",
        ),
        ("postmaster = \"nobody\"", "etrnq.toml: postmaster: "),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = \"users\"",
            "etrnq.toml: relay_recipients.a.example: \"users\": expected an absolute",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = 5",
            "etrnq.toml: relay_recipients.a.example: expected a list",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [\"a b\"]",
            "etrnq.toml: relay_recipients.a.example: \"a b\"",
        ),
        (
            "[relay_recipients]\n\"b.example\" = [\"alice\"]",
            "etrnq.toml: relay_recipients.b.example: not one of relay_domains",
        ),
        (
            "recipients_per_transaction = 0",
            "etrnq.toml: recipients_per_transaction: must be greater than zero",
        ),
        (
            "recipients_per_transaction = \"50\"",
            "etrnq.toml: recipients_per_transaction: expected a whole number",
        ),
        (
            "queue_run_batch = 0",
            "etrnq.toml: queue_run_batch: must be greater than zero",
        ),
        (
            "queue_run_batch = -5",
            "etrnq.toml: queue_run_batch: must be greater than zero",
        ),
    ];
    for (text, expected) in cases {
        let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
        assert!(err.starts_with(expected), "{text:?} gave {err:?}");
        assert!(!err.contains('\n'), "{err:?} spans lines");
    }
}

#[test]
fn a_key_with_control_characters_is_named_on_one_line() {
    let cases = [
        ("\"a\\nb\" = 1", "etrnq.toml: a\\nb: unknown key"),
        (
            "[dns]\n\"x\\r\\ny\" = 1",
            "etrnq.toml: dns.x\\r\\ny: unknown key",
        ),
        (
            "[routes]\n\"a\\u001Bb\" = \"x\"",
            "etrnq.toml: routes.a\\u{1b}b: \"a\\u{1b}b\": domain may",
        ),
    ];
    for (text, expected) in cases {
        let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
        assert!(err.starts_with(expected), "{text:?} gave {err:?}");
    }
}

/// Every message the configuration reader gives, exactly: a change of wording is a change
/// administrators and their scripts see.
#[test]
fn every_error_message_is_exact() {
    let cases = [
        (
            "hostnames = [",
            "etrnq.toml: line 1: unclosed array, expected `]`",
        ),
        ("bogus = 1", "etrnq.toml: bogus: unknown key"),
        ("[bogus]\nx = 1", "etrnq.toml: bogus: unknown key"),
        ("\"a\\nb\" = 1", "etrnq.toml: a\\nb: unknown key"),
        (
            "queue_dir = 5",
            "etrnq.toml: queue_dir: expected a string, found integer",
        ),
        (
            "queue_dir = 1979-05-27",
            "etrnq.toml: queue_dir: expected a string, found datetime",
        ),
        (
            "queue_dir = [1]",
            "etrnq.toml: queue_dir: expected a string, found array",
        ),
        (
            "hostnames = \"a.example\"",
            "etrnq.toml: hostnames: expected a list of domains, found string",
        ),
        (
            "hostnames = [1]",
            "etrnq.toml: hostnames: expected a string, found integer",
        ),
        (
            "hostnames = [\"bad host\"]",
            "etrnq.toml: hostnames: \"bad host\": domain may contain only letters, digits, '-' and '.'",
        ),
        (
            "hostnames = [\"a..example\"]",
            "etrnq.toml: hostnames: \"a..example\": empty label in domain",
        ),
        (
            "hostnames = [\"\"]",
            "etrnq.toml: hostnames: \"\": empty domain",
        ),
        (
            "max_message_size = \"big\"",
            "etrnq.toml: max_message_size: expected a whole number, found string",
        ),
        (
            "max_message_size = 0",
            "etrnq.toml: max_message_size: must be greater than zero",
        ),
        (
            "max_message_size = -3",
            "etrnq.toml: max_message_size: must be greater than zero",
        ),
        (
            "max_message_size = 1.5",
            "etrnq.toml: max_message_size: expected a whole number, found float",
        ),
        (
            "max_hops = \"x\"",
            "etrnq.toml: max_hops: expected a whole number, found string",
        ),
        (
            "max_hops = 0",
            "etrnq.toml: max_hops: must be greater than zero",
        ),
        ("max_hops = 4294967296", "etrnq.toml: max_hops: too large"),
        (
            "queue_lifetime = 5",
            "etrnq.toml: queue_lifetime: expected a string, found integer",
        ),
        (
            "queue_lifetime = \"5x\"",
            "etrnq.toml: queue_lifetime: \"5x\": unit must be s, m, h, d or w",
        ),
        (
            "queue_lifetime = \"x\"",
            "etrnq.toml: queue_lifetime: \"x\" is not an interval such as 30m, 1h or 5d",
        ),
        (
            "queue_lifetime = \"0\"",
            "etrnq.toml: queue_lifetime: must be longer than zero",
        ),
        (
            "queue_lifetime = \"30000000000000000w\"",
            "etrnq.toml: queue_lifetime: \"30000000000000000w\" is too long",
        ),
        (
            "queue_lifetime = \"\"",
            "etrnq.toml: queue_lifetime: \"\" is not an interval such as 30m, 1h or 5d",
        ),
        (
            "retry_first = \"1y\"",
            "etrnq.toml: retry_first: \"1y\": unit must be s, m, h, d or w",
        ),
        (
            "retry_first = \"0s\"",
            "etrnq.toml: retry_first: must be longer than zero",
        ),
        (
            "retry_factor = \"2\"",
            "etrnq.toml: retry_factor: expected a number, found string",
        ),
        (
            "retry_factor = 0.5",
            "etrnq.toml: retry_factor: must be between 1 and 10",
        ),
        (
            "retry_factor = 11",
            "etrnq.toml: retry_factor: must be between 1 and 10",
        ),
        (
            "smarthost = 25",
            "etrnq.toml: smarthost: expected a string, found integer",
        ),
        (
            "smarthost = \"[x\"",
            "etrnq.toml: smarthost: \"[x\": unbalanced '['",
        ),
        (
            "smarthost = \"host:0\"",
            "etrnq.toml: smarthost: \"host:0\": bad port \"0\"",
        ),
        (
            "smarthost = \"host:port\"",
            "etrnq.toml: smarthost: \"host:port\": bad port \"port\"",
        ),
        (
            "smarthost = \"[::1]x\"",
            "etrnq.toml: smarthost: \"[::1]x\": bad port \"x\"",
        ),
        (
            "smarthost = \"bad host\"",
            "etrnq.toml: smarthost: \"bad host\": \"bad host\" is neither a host name nor an IP address",
        ),
        (
            "smarthost = \"\"",
            "etrnq.toml: smarthost: \"\": \"\" is neither a host name nor an IP address",
        ),
        (
            "smarthost = \"[bad host]:25\"",
            "etrnq.toml: smarthost: \"[bad host]:25\": \"bad host\" is neither a host name nor an IP address",
        ),
        (
            "smarthost = \"[127.0.0.1]:99999\"",
            "etrnq.toml: smarthost: \"[127.0.0.1]:99999\": bad port \"99999\"",
        ),
        (
            "smarthost = \"2001:db8::1:x\"",
            "etrnq.toml: smarthost: \"2001:db8::1:x\": bad port \"x\"",
        ),
        (
            "smarthost = \"a:b:25\"",
            "etrnq.toml: smarthost: \"a:b:25\": \"a:b\" is neither a host name nor an IP address",
        ),
        (
            "hold_domains = [true]",
            "etrnq.toml: hold_domains: expected a string, found boolean",
        ),
        (
            "relay_domains = [\"-a.example\"]",
            "etrnq.toml: relay_domains: \"-a.example\": domain label starts or ends with '-'",
        ),
        (
            "relay_domains = \"relay_domains.txt\"",
            "etrnq.toml: relay_domains: expected a list of domains or an absolute file path, found \"relay_domains.txt\"",
        ),
        (
            "hold_domains = 5",
            "etrnq.toml: hold_domains: expected a list of domains or an absolute file path, found integer",
        ),
        (
            "hold_domains = \"/nonexistent/etrnq/held\"",
            "etrnq.toml: hold_domains: /nonexistent/etrnq/held: No such file or directory (os error 2)",
        ),
        (
            "relay_domains = [\"a.example\", \"/nonexistent/etrnq/relay\"]",
            "etrnq.toml: relay_domains: /nonexistent/etrnq/relay: No such file or directory (os error 2)",
        ),
        (
            "tls = \"maybe\"",
            "etrnq.toml: tls: \"maybe\": expected \"opportunistic\", \"required\" or \"off\"",
        ),
        (
            "tls = true",
            "etrnq.toml: tls: expected a string, found boolean",
        ),
        (
            "log = \"relative.log\"",
            "etrnq.toml: log: \"relative.log\": expected \"syslog\", \"stderr\" or an absolute file path",
        ),
        (
            "log = 1",
            "etrnq.toml: log: expected a string, found integer",
        ),
        (
            "routes = 5",
            "etrnq.toml: routes: expected a table, found integer",
        ),
        (
            "delay_warning = \"4x\"",
            "etrnq.toml: delay_warning: \"4x\": unit must be s, m, h, d or w",
        ),
        (
            "delay_warning = \"0\"",
            "etrnq.toml: delay_warning: must be longer than zero",
        ),
        (
            "delay_warning = 4",
            "etrnq.toml: delay_warning: expected a string, found integer",
        ),
        (
            "queue_lifetimes = \"30d\"",
            "etrnq.toml: queue_lifetimes: expected a table, found string",
        ),
        (
            "[queue_lifetimes]\n\"a.example\" = \"30x\"",
            "etrnq.toml: queue_lifetimes.a.example: \"30x\": unit must be s, m, h, d or w",
        ),
        (
            "[queue_lifetimes]\n\"a.example\" = \"0\"",
            "etrnq.toml: queue_lifetimes.a.example: must be longer than zero",
        ),
        (
            "[queue_lifetimes]\n\"a.example\" = 30",
            "etrnq.toml: queue_lifetimes.a.example: expected a string, found integer",
        ),
        (
            "[queue_lifetimes]\n\"bad host\" = \"30d\"",
            "etrnq.toml: queue_lifetimes.bad host: \"bad host\": domain may contain only letters, digits, '-' and '.'",
        ),
        (
            "[routes]\n\"a.example\" = \"[x\"",
            "etrnq.toml: routes.a.example: \"[x\": unbalanced '['",
        ),
        (
            "[routes]\n\"a.example\" = 5",
            "etrnq.toml: routes.a.example: expected a string, found integer",
        ),
        (
            "[routes]\n\"bad host\" = \"relay.example\"",
            "etrnq.toml: routes.bad host: \"bad host\": domain may contain only letters, digits, '-' and '.'",
        ),
        (
            "[routes]\n\"a\\u001Bb\" = \"x\"",
            "etrnq.toml: routes.a\\u{1b}b: \"a\\u{1b}b\": domain may contain only letters, digits, '-' and '.'",
        ),
        (
            "dns = \"x\"",
            "etrnq.toml: dns: expected a table, found string",
        ),
        (
            "[dns]\nservers = []",
            "etrnq.toml: dns.servers: unknown key",
        ),
        (
            "[dns]\n\"x\\r\\ny\" = 1",
            "etrnq.toml: dns.x\\r\\ny: unknown key",
        ),
        (
            "[dns]\nnameservers = \"127.0.0.1\"",
            "etrnq.toml: dns.nameservers: expected a list of addresses, found string",
        ),
        (
            "[dns]\nnameservers = [53]",
            "etrnq.toml: dns.nameservers: expected a string, found integer",
        ),
        (
            "[dns]\nnameservers = [\"localhost\"]",
            "etrnq.toml: dns.nameservers: \"localhost\" is not an IP address with an optional port",
        ),
        (
            "[dns]\nnameservers = [\"127.0.0.1:99999\"]",
            "etrnq.toml: dns.nameservers: \"127.0.0.1:99999\" is not an IP address with an optional port",
        ),
        (
            "tls_cert = \"/c.pem\"",
            "etrnq.toml: tls_key: missing: tls_cert is set, so is needed",
        ),
        (
            "tls_key = \"/k.pem\"",
            "etrnq.toml: tls_cert: missing: tls_key is set, so is needed",
        ),
        ("tls_cert = \"\"", "etrnq.toml: tls_cert: must not be empty"),
        (
            "odmr_accounts = \"\"",
            "etrnq.toml: odmr_accounts: must not be empty",
        ),
        (
            "tls_key = 3",
            "etrnq.toml: tls_key: expected a string, found integer",
        ),
        (
            "queue_min_free = -1",
            "etrnq.toml: queue_min_free: must not be negative",
        ),
        (
            "queue_min_free = \"5Q\"",
            "etrnq.toml: queue_min_free: \"5Q\": unit must be K, M, G or T",
        ),
        (
            "queue_min_free = \"abc\"",
            "etrnq.toml: queue_min_free: \"abc\": unit must be K, M, G or T",
        ),
        (
            "queue_min_free = \"99999999999T\"",
            "etrnq.toml: queue_min_free: \"99999999999T\" is too large",
        ),
        (
            "queue_min_free = true",
            "etrnq.toml: queue_min_free: expected a number of bytes, found boolean",
        ),
        (
            "queue_min_free = \"\"",
            "etrnq.toml: queue_min_free: \"\" is not a size such as 75000000, 100M or 2G",
        ),
        (
            "allow_untrusted_routing = \"yes\"",
            "etrnq.toml: allow_untrusted_routing: expected true or false, found string",
        ),
        (
            "postmaster = \"nobody\"",
            "etrnq.toml: postmaster: \"nobody\": address has no domain",
        ),
        (
            "postmaster = \"a@\"",
            "etrnq.toml: postmaster: \"\": empty domain",
        ),
        (
            "postmaster = 1",
            "etrnq.toml: postmaster: expected a string, found integer",
        ),
        (
            "relay_recipients = []",
            "etrnq.toml: relay_recipients: expected a table, found array",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = \"users\"",
            "etrnq.toml: relay_recipients.a.example: \"users\": expected an absolute file path or a list of local parts",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = 5",
            "etrnq.toml: relay_recipients.a.example: expected a list of local parts or a file path, found integer",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [\"a b\"]",
            "etrnq.toml: relay_recipients.a.example: \"a b\": local part has a character that needs quoting (space, '@', '<', ...)",
        ),
        (
            "relay_domains = [\"a.example\"]\n[relay_recipients]\n\"a.example\" = [5]",
            "etrnq.toml: relay_recipients.a.example: expected a string, found integer",
        ),
        (
            "[relay_recipients]\n\"b.example\" = [\"alice\"]",
            "etrnq.toml: relay_recipients.b.example: not one of relay_domains or hold_domains",
        ),
        (
            "[relay_recipients]\n\"bad host\" = [\"alice\"]",
            "etrnq.toml: relay_recipients.bad host: \"bad host\": domain may contain only letters, digits, '-' and '.'",
        ),
        (
            "recipients_per_transaction = 0",
            "etrnq.toml: recipients_per_transaction: must be greater than zero",
        ),
        (
            "recipients_per_transaction = \"50\"",
            "etrnq.toml: recipients_per_transaction: expected a whole number, found string",
        ),
        ("max_hops = 0\nbogus = 1", "etrnq.toml: bogus: unknown key"),
    ];
    for (text, expected) in cases {
        let err = Config::parse(text, "etrnq.toml").unwrap_err().to_string();
        assert_eq!(err, expected, "{text:?}");
    }
    let missing = Path::new("/nonexistent/etrnq.toml");
    assert_eq!(
        Config::read(missing).unwrap_err().to_string(),
        "/nonexistent/etrnq.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn intervals() {
    assert_eq!(parse_interval("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_interval("90"), Ok(Duration::from_secs(90)));
    assert!(parse_interval("m").is_err());
    assert!(parse_interval("1y").is_err());
}
