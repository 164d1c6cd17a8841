#!/usr/bin/env bash
# The project's one test command: builds everything, starts what the tests need on loopback,
# and runs every test. Safe to run on a fresh machine and to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# Services: none are needed yet. The Kafka broker, the Cosmos DB emulator and the Azure
# Storage emulator are installed and started here by the features that use them.

log "format"
cargo fmt --all -- --check

log "build (release: one profile for the binary, the tests and the benchmarks)"
cargo build --release --workspace --all-targets

log "tests"
cargo test --release --workspace

log "benchmark smoke test (checks that it runs and that outputs agree; asserts no timing)"
cargo run --release -p cds-bench -- --quick
