#!/bin/bash
# Installs the Debian package built by `cargo deb --strip`, proves it works the way an
# administrator meets it, and purges it again: the user etrnq and its spool directory, the
# programs on the PATH, a message queued, listed and attempted as etrnq, the whole demo against
# the installed programs as etrnq, the man pages, and another mail system's mailq and sendmail
# left alone; then `dpkg --purge` and no file of the package, its user or its spool left.
#
# Needs root, on a machine where the package is not installed. Usage: contrib/deb-check.sh DEB
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:?usage: contrib/deb-check.sh target/debian/etrnq_VERSION_ARCH.deb}
fail() {
    echo "deb-check: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || fail "needs root to install the package"
if dpkg-query -W -f='${Status}' etrnq 2>/dev/null | grep -q installed; then
    fail "etrnq is installed already; purge it first (dpkg --purge etrnq)"
fi
getent passwd etrnq >/dev/null && fail "a user etrnq exists already; the package's purge would remove it"

# What another mail system has under the names etrnq must not take.
mta_names=(/usr/bin/mailq /usr/sbin/sendmail /usr/lib/sendmail)
before() { for name in "${mta_names[@]}"; do printf '%s %s\n' "$name" "$(readlink "$name" || stat -c %s "$name" 2>/dev/null || echo absent)"; done; }
mta_before=$(before)

work=$(mktemp -d)
installed=no
cleanup() {
    if [ "$installed" = yes ]; then
        dpkg --purge etrnq >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' | grep -v '/$' >"$work/files"
echo "== dpkg -i $deb"
dpkg -i "$deb"
installed=yes

echo "== the user etrnq owns /var/spool/etrnq (0700); the configuration is a conffile"
id etrnq
[ "$(stat -c '%U %G %a' /var/spool/etrnq)" = "etrnq etrnq 700" ] || fail "/var/spool/etrnq: $(stat -c '%U %G %a' /var/spool/etrnq)"
grep -qx /etc/etrnq/etrnq.toml /var/lib/dpkg/info/etrnq.conffiles || fail "/etc/etrnq/etrnq.toml is not a conffile"
for unit in etrnq-queue-run.timer queue-smtpd.service queue-smtpd.socket; do
    [ -f "/lib/systemd/system/$unit" ] || fail "$unit not installed"
    [ ! -e "/etc/systemd/system/timers.target.wants/$unit" ] && [ ! -e "/etc/systemd/system/multi-user.target.wants/$unit" ] \
        && [ ! -e "/etc/systemd/system/sockets.target.wants/$unit" ] || fail "$unit was enabled"
done

echo "== man pages"
for page in queue-run etrnq.toml queue-enqueue queue-smtpd etrn-send mx-check odmr-fetch queue-admin etrnq-mailq; do
    man -w "$page"
done

echo "== another mail system's names are left alone; free names become etrnq's alternatives"
while read -r name was; do
    if [ "$was" = absent ]; then
        case $(readlink -f "$name") in
            /usr/lib/etrnq/mailq | /usr/sbin/etrnq-sendmail) ;;
            *) fail "$name was free, and is not etrnq's: $(readlink -f "$name")" ;;
        esac
    elif [ "$(readlink "$name" || stat -c %s "$name")" != "$was" ]; then
        fail "$name changed: it was $was"
    fi
done <<<"$mta_before"
/usr/sbin/etrnq-sendmail -bp >/dev/null
/usr/sbin/etrnq-mailq >/dev/null

echo "== as etrnq, on the default queue with the packaged configuration"
as_etrnq() { runuser -u etrnq -- "$@"; }
printf 'Subject: installed\n\nfrom the package\n' |
    as_etrnq queue-enqueue -f postmaster@example.test 'user@[127.0.0.1]'
as_etrnq /usr/sbin/etrnq-mailq | tee "$work/listing"
grep -q 'Total requests: 1' "$work/listing" || fail "etrnq-mailq does not list the message"
# Nothing listens on 127.0.0.1:25 (Postfix is not started), so the run defers: exit 75.
status=0
as_etrnq queue-run -f || status=$?
[ "$status" -eq 75 ] || fail "queue-run exited $status, expected 75 (deferred)"
as_etrnq /usr/sbin/etrnq-mailq | tee "$work/listing"
grep -q 'Connection refused' "$work/listing" || fail "the deferral is not listed"

echo "== the demo against the installed programs, as etrnq"
mkdir -p "$work/demo/contrib"
cp contrib/demo.sh contrib/etrn-demo.sh "$work/demo/contrib/"
chmod -R a+rX "$work"
(cd /tmp && as_etrnq env ETRNQ_BIN=/usr/lib/etrnq TMPDIR=/tmp bash "$work/demo/contrib/demo.sh") >"$work/demo.log" 2>&1 ||
    { cat "$work/demo.log"; fail "the demo failed as etrnq"; }
grep -q 'etrn-demo: the site has all 3 messages' "$work/demo.log" || { cat "$work/demo.log"; fail "the ETRN round did not run"; }
echo "demo: the site has all 3 messages"

echo "== dpkg --purge"
dpkg --purge etrnq
installed=no
left=()
while read -r file; do
    [ -e "$file" ] || [ -L "$file" ] && left+=("$file")
done <"$work/files"
for path in /var/spool/etrnq /etc/etrnq /usr/lib/etrnq /usr/share/doc/etrnq; do
    [ -e "$path" ] && left+=("$path")
done
[ "${#left[@]}" -eq 0 ] || fail "left after purge: ${left[*]}"
getent passwd etrnq >/dev/null && fail "the user etrnq is left after purge"
getent group etrnq >/dev/null && fail "the group etrnq is left after purge"
update-alternatives --list mailq 2>/dev/null | grep -q etrnq && fail "the mailq alternative is left"
update-alternatives --list sendmail 2>/dev/null | grep -q etrnq && fail "the sendmail alternative is left"
[ "$(before)" = "$mta_before" ] || fail "purge changed another mail system's names: $(before)"
echo "deb-check: installed, used and purged cleanly"
