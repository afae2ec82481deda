//! mx-check: the MX records of a domain, their hosts, and what each answers on port 25.

use std::io::IsTerminal;
use std::process::ExitCode;

use etrnq::args::mx_check::{Cli, PROGRAM};
use etrnq::cli::finish_check;
use etrnq::cli::parse_check;
use etrnq::diagnosis::{self, ProbeRequest, Request};

fn main() -> ExitCode {
    let cli: Cli = match parse_check(PROGRAM) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let stdout = std::io::stdout();
    let request = Request {
        colour: !cli.json
            && stdout.is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        domain: cli.domain,
        nameservers: cli.nameserver,
        config: cli.config,
        dns_timeout: cli.dns_timeout,
        probe: cli.probe.then_some(ProbeRequest {
            port: cli.port,
            timeout: cli.timeout,
            rcpt: cli.rcpt,
        }),
        json: cli.json,
    };
    let outcome = diagnosis::check(&request, &mut stdout.lock());
    finish_check(PROGRAM, outcome.map(|verdict| verdict.exit_code()))
}
