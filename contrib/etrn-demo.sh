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

# Waits up to 60 s for the server PID to accept connections on 127.0.0.1:PORT; fails as soon as
# the server has ended (it could not listen).
wait_for_port() {
    for _ in $(seq 600); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "etrn-demo: nothing is listening on 127.0.0.1:$1 after 60 s" >&2
    return 1
}

# Starts a server in the background and sets VARIABLE (ISP_PORT, SITE_PORT) to the port it
# listens on: the user's VARIABLE when set, else FIRST when given, else a free port other than
# AVOID. "@PORT@" in its words stands for the port. A free port that something else took before
# the server could bind it is replaced by another; a port the user chose is used or the demo
# stops, and the server's own one line says why.
serve() {
    local variable=$1 first=$2 avoid=$3 chosen=${!1:-} port pid
    shift 3
    for _ in 1 2 3 4 5; do
        port=${chosen:-${first:-$(free_port "$avoid")}}
        first=
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            if [ -n "$chosen" ]; then
                echo "etrn-demo: something already listens on 127.0.0.1:$port; choose another $variable or unset it" >&2
                exit 69
            fi
            continue
        fi
        "${@//@PORT@/$port}" 2>"$work/$variable.err" &
        pid=$!
        if wait_for_port "$port" "$pid"; then
            pids+=("$pid")
            printf -v "$variable" '%s' "$port"
            return 0
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -n "$chosen" ]; then
            cat "$work/$variable.err" >&2
            echo "etrn-demo: $variable=$port cannot be used; choose another or unset it" >&2
            exit 69
        fi
    done
    cat "$work/$variable.err" >&2
    echo "etrn-demo: no free port on 127.0.0.1 would take the server for $variable after 5 tries" >&2
    exit 69
}

# The route to the site names its port; queue-run reads the file when ETRN starts it, so the
# file is written again once the site listens.
write_config() {
    cat >"$work/etrnq.toml" <<EOF
queue_dir = "$work/queue"
hostnames = ["mx2.isp.test"]
relay_domains = ["customer.test"]
hold_domains = ["customer.test"]
log = "$work/mail.log"

[routes]
"customer.test" = "[127.0.0.1]:$1"
EOF
}

mkdir -p "$work/site"
site_port=${SITE_PORT:-$(free_port)}
write_config "$site_port"
mailq() { "$ETRNQ_BIN/mailq" -C "$work/etrnq.toml" "$@"; }

serve ISP_PORT "" "$site_port" "$ETRNQ_BIN/queue-smtpd" -C "$work/etrnq.toml" --listen "127.0.0.1:@PORT@"
step "ISP: queue-smtpd on 127.0.0.1:$ISP_PORT holds mail for customer.test"

step "the Internet: $messages messages for the site while it is offline"
for n in $(seq "$messages"); do
    swaks --silent 2 --server 127.0.0.1 --port "$ISP_PORT" --helo sender.example.test \
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

# smtp-sink changes to the user -u names, which only root may do, and root must name one.
sink_user=()
[ "$(id -u)" -ne 0 ] || sink_user=(-u root)
serve SITE_PORT "$site_port" "$ISP_PORT" smtp-sink "${sink_user[@]}" -d "$work/site/%Y%m%d%H%M%S." "127.0.0.1:@PORT@" 10
write_config "$SITE_PORT"
step "site: comes online (smtp-sink on 127.0.0.1:$SITE_PORT) and sends ETRN"
"$ETRNQ_BIN/etrn-send" -p "$ISP_PORT" --helo site.customer.test 127.0.0.1 customer.test

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
