use super::*;
use crate::properties::{config, mutated_text, peak, text};
use proptest::prelude::*;

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}"
}

fn string(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    inner.prop_map(|s| format!("{s:?}"))
}

fn list(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    proptest::collection::vec(string(item), 0..4)
        .prop_map(|items| format!("[{}]", items.join(", ")))
}

/// One line of configuration, with a value that is usually valid.
fn setting() -> impl Strategy<Value = String> {
    let interval = "[0-9]{1,6}[smhdw]?";
    let size = "[0-9]{1,8}[KMGT]?";
    let host = prop_oneof![
        domain(),
        domain().prop_map(|d| format!("[{d}]:25")),
        any::<[u8; 4]>().prop_map(|o| format!("[{}]:2525", std::net::Ipv4Addr::from(o))),
        any::<u128>().prop_map(|a| format!("[{}]:26", std::net::Ipv6Addr::from(a))),
    ];
    prop_oneof![
        string("/[a-z/]{1,20}").prop_map(|v| format!("queue_dir = {v}")),
        list(domain()).prop_map(|v| format!("hostnames = {v}")),
        (1..100_000_000i64).prop_map(|v| format!("max_message_size = {v}")),
        (-5..100i64).prop_map(|v| format!("max_hops = {v}")),
        string(interval).prop_map(|v| format!("queue_lifetime = {v}")),
        string(interval).prop_map(|v| format!("retry_first = {v}")),
        (0.0..20.0f64).prop_map(|v| format!("retry_factor = {v}")),
        string(host.clone()).prop_map(|v| format!("smarthost = {v}")),
        list(domain()).prop_map(|v| format!("hold_domains = {v}")),
        list(domain()).prop_map(|v| format!("relay_domains = {v}")),
        string("opportunistic|required|off|maybe").prop_map(|v| format!("tls = {v}")),
        string("syslog|stderr|/var/log/etrnq.log|relative").prop_map(|v| format!("log = {v}")),
        string("/[a-z]{1,8}\\.pem").prop_map(|v| format!("tls_cert = {v}\ntls_key = {v}")),
        prop_oneof![string(size), (-1..1_000_000i64).prop_map(|n| n.to_string())]
            .prop_map(|v| format!("queue_min_free = {v}")),
        any::<bool>().prop_map(|v| format!("allow_untrusted_routing = {v}")),
        string("[a-z]{1,8}@[a-z]{1,8}\\.example").prop_map(|v| format!("postmaster = {v}")),
        (domain(), host).prop_map(|(d, h)| format!("[routes]\n{d:?} = {h:?}")),
        list("127\\.0\\.0\\.1(:[0-9]{1,5})?|\\[::1\\]:53")
            .prop_map(|v| format!("[dns]\nnameservers = {v}")),
        (
            domain(),
            prop_oneof![list("[a-z.+-]{1,10}"), string("/[a-z/]{1,20}")]
        )
            .prop_map(|(d, users)| format!(
                "relay_domains = [{d:?}]\n[relay_recipients]\n{d:?} = {users}"
            )),
    ]
}

/// A key of any text, quoted as TOML quotes it, under any table or none.
fn odd_key() -> impl Strategy<Value = String> {
    let table = prop_oneof![
        Just(""),
        Just("[routes]\n"),
        Just("[dns]\n"),
        Just("[relay_recipients]\n")
    ];
    (table, text(12)).prop_map(|(table, key)| {
        let quoted: String = key
            .chars()
            .map(|c| match c {
                '"' | '\\' => format!("\\{c}"),
                c if c.is_control() => format!("\\u{:04X}", u32::from(c)),
                c => c.to_string(),
            })
            .collect();
        format!("{table}\"{quoted}\" = \"x\"")
    })
}

/// Settings in an order TOML takes: plain keys first, tables after.
fn configuration() -> impl Strategy<Value = String> {
    proptest::collection::vec(setting(), 0..8).prop_map(|mut lines| {
        lines.sort_by_key(|line| line.contains('['));
        lines.dedup_by_key(|line| line.split(' ').next().map(str::to_string));
        lines.join("\n") + "\n"
    })
}

/// Parses `text`: no panic, an error on one line naming the file, and memory in proportion
/// to the text.
fn parse_checked(text: &str) -> Result<Config, ConfigError> {
    let (result, most) = peak(|| Config::parse(text, "etrnq.toml"));
    // The TOML parser holds some 50 to 90 bytes for each octet of the text it reads
    // (measured up to 1 MB): linear, in a file only the administrator writes.
    assert!(
        most <= 128 * text.len() + 64 * 1024,
        "{most} bytes for {} octets",
        text.len()
    );
    if let Err(e) = &result {
        let message = e.to_string();
        assert!(message.starts_with("etrnq.toml: "), "{message}");
        assert!(!message.contains(char::is_control), "{message:?}");
    }
    result
}

proptest! {
    #![proptest_config(config(8000))]

    #[test]
    fn any_text_is_a_configuration_or_one_error(input in text(300)) {
        let _ = parse_checked(&input);
    }

    #[test]
    fn near_valid_configurations_are_configurations_or_one_error(
        input in mutated_text(configuration())
    ) {
        let _ = parse_checked(&input);
    }

    #[test]
    fn odd_keys_are_named_on_one_line(input in odd_key()) {
        let _ = parse_checked(&input);
    }

    #[test]
    fn sizes_and_intervals_read_as_written(count in any::<u64>(), unit in 0..5usize, input in text(30)) {
        let _ = (parse_size(&input), parse_interval(&input), parse_nameserver(&input));
        let (suffix, scale) = [("", 1u64), ("K", 1 << 10), ("M", 1 << 20), ("g", 1 << 30), ("T", 1 << 40)][unit];
        prop_assert_eq!(parse_size(&format!("{count}{suffix}")).ok(), count.checked_mul(scale));
        let (suffix, scale) = [("", 1u64), ("m", 60), ("h", 3600), ("d", 86400), ("w", 604800)][unit];
        prop_assert_eq!(
            parse_interval(&format!(" {count}{suffix} ")).ok(),
            count.checked_mul(scale).map(Duration::from_secs)
        );
    }

    #[test]
    fn name_servers_read_as_written(ip in any::<std::net::IpAddr>(), port in 1..=u16::MAX) {
        let addr = SocketAddr::new(ip, port);
        prop_assert_eq!(parse_nameserver(&addr.to_string()), Ok(addr));
        prop_assert_eq!(parse_nameserver(&ip.to_string()), Ok(SocketAddr::new(ip, 53)));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [1_000, 100_000] {
        let text = format!("a = {}{}", "[".repeat(depth), "]".repeat(depth));
        let _ = parse_checked(&text);
        let text = format!("a = {}1{}", "{b = ".repeat(depth), "}".repeat(depth));
        let _ = parse_checked(&text);
    }
}
