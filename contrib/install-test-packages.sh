#!/bin/bash
# Installs the Debian packages the tests and the package check need (Rust crates come through
# cargo). Safe to run again: packages already present are not reinstalled. Needs root only when
# something is missing.
set -euo pipefail

# Debian packages the end-to-end tests drive:
#   postfix  - smtp-sink as a real SMTP server on loopback (tests/queue_run.rs delivers to it),
#              and a real MTA for interop tests (tests/etrn_send.rs runs a private instance as
#              the ETRN server)
#   swaks    - a real SMTP client
#   libnet-ssleay-perl - swaks' TLS (only recommended by swaks, and recommends are skipped)
#   python3  - contrib/module-graph, which tests/contrib.rs runs to prove the modules form no cycle
#   fetchmail - a real ODMR client (tests/odmr.rs runs it against queue-smtpd)
# and what contrib/deb-check.sh needs beside them:
#   adduser  - the package's postinst creates the user etrnq with it
#   man-db   - man -w finds the installed pages
packages=(postfix swaks libnet-ssleay-perl python3 fetchmail adduser man-db)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-packages: need root to install: ${missing[*]}" >&2
        exit 77
    fi
    # Postfix unconfigured: installed for its programs, never started as the system's MTA.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
