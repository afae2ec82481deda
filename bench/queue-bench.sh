#!/bin/bash
# Benchmark: queue-enqueue against Postfix's sendmail, and mailq against postqueue, in one run.
#
#   bench/queue-bench.sh [N] [QUEUED]
#
#   N       1 KB messages submitted one process each, durably committed (default 1000)
#   QUEUED  messages in the queue that is listed (default 100000)
#
# Needs root: it starts a private Postfix instance (its own config, queue and data directories
# under a temporary directory, no network listener, every message held by a header check so
# nothing is ever delivered) and always stops it on exit. Postfix is installed when missing.
# Submissions go to a work directory on disk (BENCH_DIR, default /var/tmp), so that fsync costs
# what it costs; the large queues are then listed from tmpfs (see below).
set -euo pipefail
N=${1:-1000}
QUEUED=${2:-100000}
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "queue-bench: needs root to run a private Postfix instance" >&2
    exit 77
fi
if [ "$QUEUED" -lt "$N" ]; then
    echo "queue-bench: QUEUED ($QUEUED) must be at least N ($N)" >&2
    exit 64
fi
if ! command -v postqueue >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix </dev/null
fi

cargo build --release --quiet --bin queue-enqueue --bin mailq --example queue-fill
BIN=$PWD/target/release
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/etrnq-bench.XXXXXX")
PF=$W/postfix
# Postfix's daemons run as the postfix user and must reach their directories.
chmod 755 "$W"
# The large queues are listed from memory (tmpfs) when there is one: both tools read a page-cached
# queue either way, and filling and removing 200,000 files on disk would take minutes.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    L=$(mktemp -d /dev/shm/etrnq-bench.XXXXXX)
else
    L=$W/list
    mkdir "$L"
fi
chmod 755 "$L"
postfix_started=""
cleanup() {
    if [ -n "$postfix_started" ]; then
        postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
    fi
    rm -rf "$W" "$L"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# One message of exactly 1024 bytes.
{
    printf 'From: bench@example.test\nTo: customer@customer.test\nSubject: benchmark\n\n'
    for i in $(seq 30); do printf 'line %02d of a one kilobyte benchmark message, padded out..\n' "$i"; done
} | head -c 1024 >"$W/msg"

# --- the private Postfix instance -------------------------------------------------------------
mkdir -p "$PF/etc" "$PF/spool" "$PF/data"
chown postfix "$PF/data"
cp /etc/postfix/master.cf "$PF/etc/"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example.test
mydomain = example.test
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
defer_transports = smtp
header_checks = regexp:$PF/etc/hold
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
EOF
echo '/^/ HOLD held for the benchmark' >"$PF/etc/hold"
postconf -c "$PF/etc" -M# smtp/inet   # no SMTP listener
postconf -c "$PF/etc" -F '*/*/chroot = n'
postfix_started=yes
postfix -c "$PF/etc" start >/dev/null 2>&1 || {
    echo "queue-bench: Postfix did not start; see $PF/maillog:" >&2
    tail -5 "$PF/maillog" >&2
    exit 69
}

echo 'hostnames = ["bench.example.test"]' >"$W/etrnq.toml"
EQ="$W/etrnq"

# --- enqueue: one process per message -----------------------------------------------------------
t0=$(now)
for ((i = 0; i < N; i++)); do
    "$BIN/queue-enqueue" -C "$W/etrnq.toml" --queue-dir "$EQ" -f bench@example.test "u$i@customer.test" <"$W/msg"
done
t1=$(now)
etrnq_enqueue=$(elapsed "$t0" "$t1")

t0=$(now)
for ((i = 0; i < N; i++)); do
    MAIL_CONFIG="$PF/etc" /usr/sbin/sendmail -odq -f bench@example.test "u$i@customer.test" <"$W/msg"
done
t1=$(now)
postfix_enqueue=$(elapsed "$t0" "$t1")

# Let pickup and cleanup move everything into hold/ before anything is listed.
for _ in $(seq 600); do
    held=$(find "$PF/spool/hold" -type f | wc -l)
    [ "$held" -ge "$N" ] && break
    sleep 0.2
done
if [ "$held" -lt "$N" ]; then
    echo "queue-bench: Postfix held only $held of $N messages" >&2
    exit 70
fi

# --- a queue of QUEUED messages for each -------------------------------------------------------
# Both queues move to the listing file system. Postfix's held messages stay behind: its queue ids
# name inode numbers, so a copied queue file would be renamed (and logged) by the start-up check.
postfix -c "$PF/etc" stop >/dev/null 2>&1
for _ in $(seq 50); do
    postfix -c "$PF/etc" status >/dev/null 2>&1 || break
    sleep 0.2
done
postfix_started=""
cp -a "$EQ" "$L/etrnq"
EQ="$L/etrnq"
cp -a "$PF/spool" "$L/postfix-spool"
find "$L/postfix-spool/hold" -type f -delete
postconf -c "$PF/etc" -e "queue_directory = $L/postfix-spool"
postfix_started=yes
postfix -c "$PF/etc" start >/dev/null 2>&1 || {
    echo "queue-bench: Postfix did not restart; see $PF/maillog:" >&2
    tail -5 "$PF/maillog" >&2
    exit 69
}
# etrnq: committed through the queue library, as queue-enqueue commits, 32 at a time.
t0=$(now)
"$BIN/examples/queue-fill" "$EQ" $((QUEUED - N)) 32 <"$W/msg"
t1=$(now)
etrnq_fill=$(elapsed "$t0" "$t1")
# Postfix: copies of one of its held queue files under fresh queue ids (mode 0700 marks a
# complete file), so neither postsuper nor a delivery agent is involved.
t0=$(now)
template=$(find "$PF/spool/hold" -type f -print -quit)
perl -e '
    my ($src, $dir, $count) = @ARGV;
    open(my $in, "<:raw", $src) or die "$src: $!";
    my $bytes = do { local $/; <$in> };
    my ($uid, $gid) = (getpwnam("postfix"))[2, 3];
    for my $n (1 .. $count) {
        my $path = sprintf("%s/F%09X", $dir, $n);
        open(my $out, ">:raw", $path) or die "$path: $!";
        print $out $bytes;
        close($out) or die "$path: $!";
        chown($uid, $gid, $path);
        chmod(0700, $path);
    }' "$template" "$L/postfix-spool/hold" "$QUEUED"
t1=$(now)
postfix_fill=$(elapsed "$t0" "$t1")

# --- listing: best of three, output to a file and checked -------------------------------------
best() {
    local best="" t0 t1 e
    for _ in 1 2 3; do
        t0=$(now)
        "$@" >"$W/listing"
        t1=$(now)
        e=$(elapsed "$t0" "$t1")
        best=$(awk -v a="$best" -v b="$e" 'BEGIN { print (a == "" || b < a) ? b : a }')
    done
    echo "$best"
}
etrnq_list=$(best "$BIN/mailq" -C "$W/etrnq.toml" --queue-dir "$EQ")
[[ "$(tail -1 "$W/listing")" == *"Total requests: $QUEUED" ]] || {
    echo "queue-bench: mailq did not list $QUEUED messages: $(tail -1 "$W/listing")" >&2
    exit 70
}
postfix_list=$(best postqueue -c "$PF/etc" -p)
[[ "$(tail -1 "$W/listing")" == *" in $QUEUED Requests." ]] || {
    echo "queue-bench: postqueue -p did not list $QUEUED messages: $(tail -1 "$W/listing")" >&2
    exit 70
}
etrnq_json=$(best "$BIN/mailq" -C "$W/etrnq.toml" --queue-dir "$EQ" --json)
[ "$(wc -l <"$W/listing")" -eq "$QUEUED" ] || { echo "queue-bench: mailq --json is short" >&2; exit 70; }
postfix_json=$(best postqueue -c "$PF/etc" -j)
[ "$(wc -l <"$W/listing")" -eq "$QUEUED" ] || { echo "queue-bench: postqueue -j is short" >&2; exit 70; }

# --- report -------------------------------------------------------------------------------------
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f msg/s", n / s }'; }
secs() { printf '%s s' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
fs() { df -P "$1" | awk 'NR == 2 { print $1 }'; }
echo "queue-bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; submissions on $(fs "$W"), listings on $(fs "$L")"
printf '%-44s %14s %14s %8s\n' "" "etrnq" "Postfix 3" "etrnq is"
printf '%-44s %14s %14s %8s\n' "enqueue $N x 1 KB, one process each" \
    "$(rate "$N" "$etrnq_enqueue")" "$(rate "$N" "$postfix_enqueue")" "$(ratio "$postfix_enqueue" "$etrnq_enqueue")"
printf '%-44s %14s %14s %8s\n' "list $QUEUED (mailq / postqueue -p)" \
    "$(secs "$etrnq_list")" "$(secs "$postfix_list")" "$(ratio "$postfix_list" "$etrnq_list")"
printf '%-44s %14s %14s %8s\n' "list $QUEUED as JSON (--json / postqueue -j)" \
    "$(secs "$etrnq_json")" "$(secs "$postfix_json")" "$(ratio "$postfix_json" "$etrnq_json")"
echo "(filling the $QUEUED-message queues took ${etrnq_fill} s for etrnq, ${postfix_fill} s for Postfix; not compared)"
