#!/bin/bash
# The backup-MX story on one machine, on loopback only:
#
#   1. the ISP's queue-smtpd takes mail for customer.test while the site is offline;
#   2. mailq shows it held;
#   3. the site comes online (Postfix's smtp-sink stands in for its mail server) and sends
#      ETRN with etrn-send;
#   4. queue-smtpd starts queue-run -R customer.test, mailq empties, the site has every message.
#
# Needs swaks and smtp-sink (Debian packages swaks and postfix). Everything it starts is stopped
# and everything it writes is removed when it ends, however it ends.
#
# Environment: ETRNQ_BIN (directory of the etrnq programs; default target/release, else
# target/debug, beside this script), ISP_PORT and SITE_PORT (default: free loopback ports,
# so that whatever the machine already runs on 2525 or 2526 is left alone).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${ETRNQ_BIN:-}" ]; then
    ETRNQ_BIN=$here/target/release
    [ -x "$ETRNQ_BIN/queue-smtpd" ] || ETRNQ_BIN=$here/target/debug
fi
# A port nothing answers on, from a random start in the range no service registers by default.
free_port() {
    local port tries
    for tries in $(seq 1 100); do
        port=$((20000 + RANDOM % 30000))
        [ "$port" = "${1:-}" ] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "etrn-demo: no free port on 127.0.0.1 after 100 tries; set ISP_PORT and SITE_PORT" >&2
    return 69
}
isp_port=${ISP_PORT:-$(free_port)}
site_port=${SITE_PORT:-$(free_port "$isp_port")}
messages=3

for program in queue-smtpd queue-run mailq etrn-send; do
    if [ ! -x "$ETRNQ_BIN/$program" ]; then
        echo "etrn-demo: $ETRNQ_BIN/$program not found; run 'cargo build --release' or set ETRNQ_BIN" >&2
        exit 69
    fi
done
for program in swaks smtp-sink; do
    if ! command -v "$program" >/dev/null; then
        echo "etrn-demo: $program not found; install the Debian packages swaks and postfix" >&2
        exit 69
    fi
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }

# Waits up to 60 s for a TCP port on 127.0.0.1 to accept connections.
wait_for_port() {
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "etrn-demo: nothing is listening on 127.0.0.1:$1" >&2
    return 1
}

mkdir -p "$work/site"
cat >"$work/etrnq.toml" <<EOF
queue_dir = "$work/queue"
hostnames = ["mx2.isp.test"]
relay_domains = ["customer.test"]
hold_domains = ["customer.test"]
log = "$work/mail.log"

[routes]
"customer.test" = "[127.0.0.1]:$site_port"
EOF
mailq() { "$ETRNQ_BIN/mailq" -C "$work/etrnq.toml" "$@"; }

step "ISP: queue-smtpd on 127.0.0.1:$isp_port holds mail for customer.test"
"$ETRNQ_BIN/queue-smtpd" -C "$work/etrnq.toml" --listen "127.0.0.1:$isp_port" &
pids+=($!)
wait_for_port "$isp_port"

step "the Internet: $messages messages for the site while it is offline"
for n in $(seq "$messages"); do
    swaks --silent 2 --server 127.0.0.1 --port "$isp_port" --helo sender.example.test \
        --from "alice@example.test" --to "user$n@customer.test" \
        --header "Subject: held message $n" --body "message $n waited at the backup MX"
done

step "ISP: mailq shows the mail held"
mailq
held=$(mailq --json | wc -l)
if [ "$held" -ne "$messages" ]; then
    echo "etrn-demo: expected $messages held messages, mailq lists $held" >&2
    exit 1
fi

step "site: comes online (smtp-sink on 127.0.0.1:$site_port) and sends ETRN"
smtp-sink -u "$(id -un)" -d "$work/site/%Y%m%d%H%M%S." "127.0.0.1:$site_port" 10 &
pids+=($!)
wait_for_port "$site_port"
"$ETRNQ_BIN/etrn-send" -p "$isp_port" --helo site.customer.test 127.0.0.1 customer.test

step "ISP: queue-run delivers; mailq empties"
for _ in $(seq 600); do
    [ "$(mailq --json | wc -l)" -eq 0 ] && break
    sleep 0.1
done
mailq
if [ "$(mailq --json | wc -l)" -ne 0 ]; then
    echo "etrn-demo: the queue did not empty; see $work/mail.log" >&2
    cat "$work/mail.log" >&2
    exit 1
fi

step "site: what arrived"
got=$(find "$work/site" -type f | wc -l)
grep -h '^Subject:' "$work"/site/* | sort
if [ "$got" -ne "$messages" ]; then
    echo "etrn-demo: the site has $got of $messages messages" >&2
    exit 1
fi

step "ISP: the mail log"
cat "$work/mail.log"

printf '\netrn-demo: the site has all %d messages\n' "$messages"
