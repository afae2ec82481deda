#!/bin/bash
# Installs what the test suite needs (contrib/install-test-packages.sh: Debian packages; Rust
# crates come through cargo) and runs every suite, reporting every failure. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash contrib/install-test-packages.sh
cargo test --release --all-targets --no-fail-fast
