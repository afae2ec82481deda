#!/bin/bash
# Builds etrnq and shows the flow on a scratch queue in a temporary directory: a few messages
# enqueued the way a site's scripts and a backup MX would, then the queue as mail administrators
# see it (sendmail layout), as monitoring sees it (JSON), and per domain; then, when swaks and
# smtp-sink are installed, the whole ETRN round on loopback (contrib/etrn-demo.sh). Needs no
# root, touches nothing outside its temporary directories, and removes them on exit.
#
# Environment: ETRNQ_BIN, the directory of installed etrnq programs to show (/usr/bin after the
# Debian package) instead of building them; ISP_PORT and SITE_PORT, the loopback ports of the
# ETRN round (default: free ports, so whatever already listens on 2525 or 2526 is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ETRNQ_BIN:-}" ]; then
    cargo build --release --quiet --bins
    ETRNQ_BIN=$PWD/target/release
fi
export PATH="$ETRNQ_BIN:$PATH"

DEMO=$(mktemp -d "${TMPDIR:-/tmp}/etrnq-demo.XXXXXX")
trap 'rm -rf "$DEMO"' EXIT
cat >"$DEMO/etrnq.toml" <<EOF
queue_dir = "$DEMO/queue"
hostnames = ["mx2.isp.example"]
hold_domains = ["customer.example"]
EOF
# Every command below reads this file instead of /etc/etrnq/etrnq.toml.
export ETRNQ_CONFIG="$DEMO/etrnq.toml"

run() {
    printf '\n$ %s\n' "$*"
    "$@"
}

echo "== Mail for a part-time site waits in the backup MX's queue"
printf 'From: Alice <alice@example.org>\nTo: bob@customer.example\nSubject: quarterly figures\n\nSee you on Monday.\n' |
    run queue-enqueue -v -f alice@example.org bob@customer.example
printf 'Subject: build report\n\nAll green.\n' |
    run queue-enqueue -v -f ci@example.org ops@lab.customer.example
printf 'To: carol@other.example\nCc: dave@customer.example\nBcc: audit@example.org\nSubject: minutes\n\nAttached.\n' |
    run queue-enqueue -v -t -i -f erin@example.org

echo
echo "== What the administrator sees (sendmail's layout)"
run mailq

echo
echo "== Only the site's own domain, then with its subdomains"
run mailq -R customer.example
run mailq -R @customer.example

echo
echo "== What monitoring reads (one JSON object per message)"
run mailq --json

echo
echo "== Where the backlog is"
run mailq --summary

echo
echo "== A refusal: nothing is queued, one line on stderr, a sysexits status"
printf 'Subject: oops\n\nno recipient\n' | queue-enqueue -f alice@example.org && status=0 || status=$?
echo "(exit status $status; the queue still holds $(find "$DEMO/queue/env" -type f | wc -l) messages)"

echo
echo "== The whole round on loopback: the backup MX holds mail, the site sends ETRN, mail arrives"
if command -v swaks >/dev/null && command -v smtp-sink >/dev/null; then
    env -u ETRNQ_CONFIG ETRNQ_BIN="$ETRNQ_BIN" contrib/etrn-demo.sh
else
    echo "(skipped: needs swaks and smtp-sink, from the Debian packages swaks and postfix;"
    echo " contrib/run-tests.sh installs them)"
fi
