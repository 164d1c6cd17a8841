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

# --- Browser for the dashboard test ----------------------------------------------------------
if ! command -v chromium >/dev/null 2>&1; then
  log "installing Debian's chromium (dashboard test)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# --- Services on loopback -------------------------------------------------------------------
# Tools are cached outside the checkout, so a second run (and CI on the same machine) reuses them.
TOOLS="${CDS_TOOLS_DIR:-$HOME/.cache/cds/tools}"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Kafka-protocol broker: tansu (Apache-2.0, from crates.io), in-memory storage.
TANSU="$TOOLS/tansu-0.6.0/bin/tansu"
if [ ! -x "$TANSU" ]; then
  log "installing the tansu Kafka broker (once; about 7 minutes on 2 cores)"
  cargo install tansu --version 0.6.0 --features dynostore --locked --root "$TOOLS/tansu-0.6.0" \
    || cargo install tansu --version 0.6.0 --features dynostore --root "$TOOLS/tansu-0.6.0"
fi
KAFKA_PORT="${CDS_TEST_KAFKA_PORT:-19092}"
log "starting tansu on 127.0.0.1:$KAFKA_PORT"
"$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine memory://tansu/ > "${TMPDIR:-/tmp}/cds-tansu.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do
  if "$TANSU" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
"$TANSU" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null \
  || { echo "the Kafka broker did not start:"; cat "${TMPDIR:-/tmp}/cds-tansu.log"; exit 1; }
export CDS_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export CDS_TEST_TANSU="$TANSU"

log "format"
cargo fmt --all -- --check

log "build (release: one profile for the binary, the tests and the benchmarks)"
cargo build --release --workspace --all-targets

log "tests"
cargo test --release --workspace

log "benchmark smoke test (checks that it runs and that outputs agree; asserts no timing)"
cargo run --release -p cds-bench -- --quick
