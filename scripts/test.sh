#!/usr/bin/env bash
# Runs recflow's whole test suite on a fresh machine: formatting, lints, unit, integration and
# doc tests. Everything it needs comes from crates.io. The Kafka tests talk to a real
# Kafka-compatible broker, Tansu; it is installed here the first time (a 10-30 minute build on two
# cores) and started by the tests themselves on free localhost ports.
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

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
cargo test --doc --locked
