#!/usr/bin/env bash
# Runs recflow's whole test suite on a fresh machine: formatting, lints, unit, integration and
# doc tests. Everything it needs comes from crates.io; no external service is used yet.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
cargo test --doc --locked
