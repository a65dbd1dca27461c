#!/usr/bin/env bash
# Runs recflow's whole test suite on a fresh machine: formatting, lints, unit, integration and
# doc tests, and the API documentation's links. Everything it needs comes from crates.io,
# except Chromium, from Debian. The Kafka tests talk to a real Kafka-compatible broker, Tansu;
# it is installed here the first time (a 10-30 minute build on two cores) and started by the
# tests themselves on free localhost ports.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ -z "${TANSU:-}" ]]; then
    if [[ "$("$CARGO_BIN/tansu" --version 2>/dev/null || true)" != "tansu $TANSU_VERSION" ]]; then
        echo "test.sh: installing Tansu $TANSU_VERSION (Kafka-compatible broker for the Kafka tests; 10-30 min once)" >&2
        cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
    fi
    export TANSU="$CARGO_BIN/tansu"
fi

# tests/dashboard.rs loads the served dashboard in a headless Chromium: Debian's package, installed
# here when missing (CI runs as root with Debian's package registry; elsewhere via sudo).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [[ -z "${CHROMIUM:-}" ]]; then
    echo "test.sh: installing Chromium (Debian's package) for the dashboard's browser test" >&2
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo apt-get install -y chromium || { $sudo apt-get update && $sudo apt-get install -y chromium; }
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
cargo test --doc --locked
# The API documentation builds without a broken or private link (renames leave stale ones).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked
