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

# --- openssl and curl: the TLS tests make their certificates with one and call HTTPS with the
# other, as an operator would -----------------------------------------------------------------
if ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  log "installing Debian's openssl and curl (TLS tests)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl curl >/dev/null
fi

# --- Services on loopback -------------------------------------------------------------------
# Tools are cached outside the checkout, so a second run (and CI on the same machine) reuses them.
TOOLS="${CDS_TOOLS_DIR:-$HOME/.cache/cds/tools}"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Kafka-protocol broker: tansu (Apache-2.0, from crates.io). The shared broker keeps its log in
# memory; the broker-restart test starts its own with a SQLite log (the `libsql` feature), so
# that a restart keeps topics and messages as a real broker does.
TANSU="$TOOLS/tansu-0.6.0-sqlite/bin/tansu"
if [ ! -x "$TANSU" ]; then
  log "installing the tansu Kafka broker (once; about 10 minutes on 2 cores)"
  cargo install tansu --version 0.6.0 --features dynostore,libsql --locked --root "$TOOLS/tansu-0.6.0-sqlite" \
    || cargo install tansu --version 0.6.0 --features dynostore,libsql --root "$TOOLS/tansu-0.6.0-sqlite"
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

# Cosmos DB API server: @vercel/cosmosdb-server (MIT, from npm), in memory, plain HTTP, pinned
# by tests/cosmos/package-lock.json and started through the small launcher next to it.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Node.js 20 (node and npm) is required for the Cosmos DB test server" >&2
  exit 1
fi
if [ ! -d tests/cosmos/node_modules/@vercel/cosmosdb-server ] \
  || ! cmp -s tests/cosmos/package-lock.json tests/cosmos/node_modules/.package-lock.json.installed; then
  log "installing the Cosmos DB test server (npm ci, once)"
  (cd tests/cosmos && npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.package-lock.json.installed)
fi
COSMOS_PORT="${CDS_TEST_COSMOS_PORT:-18081}"
log "starting the Cosmos DB test server on 127.0.0.1:$COSMOS_PORT"
node tests/cosmos/server.js "$COSMOS_PORT" > "${TMPDIR:-/tmp}/cds-cosmos.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 40); do
  if grep -q '^listening' "${TMPDIR:-/tmp}/cds-cosmos.log" 2>/dev/null; then break; fi
  sleep 0.25
done
grep -q '^listening' "${TMPDIR:-/tmp}/cds-cosmos.log" \
  || { echo "the Cosmos DB test server did not start:"; cat "${TMPDIR:-/tmp}/cds-cosmos.log"; exit 1; }
export CDS_TEST_COSMOS_ENDPOINT="http://127.0.0.1:$COSMOS_PORT/"
export CDS_TEST_COSMOS_SERVER="$PWD/tests/cosmos/server.js"

# Azure Storage emulator: azurite (MIT, from npm), Blob service only, pinned by
# tests/azurite/package-lock.json; the lake tests write Delta tables to it over az://.
if [ ! -x tests/azurite/node_modules/.bin/azurite-blob ] \
  || ! cmp -s tests/azurite/package-lock.json tests/azurite/node_modules/.package-lock.json.installed; then
  log "installing the Azure Storage emulator (npm ci, once)"
  (cd tests/azurite && npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.package-lock.json.installed)
fi
AZURITE_PORT="${CDS_TEST_AZURITE_PORT:-10000}"
AZURITE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cds-azurite.XXXXXX")"
log "starting azurite-blob on 127.0.0.1:$AZURITE_PORT"
tests/azurite/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
  --location "$AZURITE_DIR" --disableTelemetry > "${TMPDIR:-/tmp}/cds-azurite.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 240); do
  if grep -q 'successfully listens' "${TMPDIR:-/tmp}/cds-azurite.log" 2>/dev/null; then break; fi
  sleep 0.25
done
grep -q 'successfully listens' "${TMPDIR:-/tmp}/cds-azurite.log" \
  || { echo "azurite did not start:"; cat "${TMPDIR:-/tmp}/cds-azurite.log"; exit 1; }
export CDS_TEST_AZURITE="http://127.0.0.1:$AZURITE_PORT"

log "format"
cargo fmt --all -- --check

# Supply chain: advisories, licences, banned and duplicate crates, sources (deny.toml says why
# each exception is there). cargo-deny comes from crates.io, cached with the other tools.
DENY="$TOOLS/cargo-deny/bin/cargo-deny"
if [ ! -x "$DENY" ]; then
  log "installing cargo-deny (once)"
  cargo install cargo-deny --version 0.20.2 --locked --root "$TOOLS/cargo-deny"
fi
log "cargo deny check (advisories, licences, bans, sources)"
# Every crate of the lock file, for every platform: an offline check reads them all.
cargo fetch --locked -q
# The RustSec advisory database is a git repository on github.com. Where that is out of reach,
# the copy cached by an earlier fetch is used; with no copy, advisories cannot be checked here and
# the log says so (licences, bans and sources need no network).
if "$DENY" fetch db >/dev/null 2>&1; then
  "$DENY" check
elif ls -d "$HOME"/.cargo/advisory-dbs/*/ >/dev/null 2>&1; then
  echo "the advisory database could not be fetched; checking against the cached copy"
  "$DENY" --offline check
else
  echo "WARNING: the RustSec advisory database (github.com) is unreachable and not cached:"
  echo "WARNING: advisories are NOT checked on this machine; licences, bans and sources are"
  "$DENY" --offline check licenses bans sources
fi

# The test build turns on what release builds leave off (Cosmos DB fault injection for the sink's
# retry tests, failure drills for the failure-contract tests); every cargo command below uses the
# same features, so nothing is built twice.
FEATURES=(--features cds-engine/cosmos-fault-injection,cds-engine/chaos)

log "clippy (every crate, every target, warnings are errors)"
cargo clippy --workspace --all-targets "${FEATURES[@]}" -- -D warnings

log "build (release: one profile for the binary, the tests and the benchmarks)"
cargo build --release --workspace --all-targets "${FEATURES[@]}"

log "deployment files (deploy/check.sh: YAML, promtool, metric names against a live /metrics, flags, manifests)"
bash deploy/check.sh

log "tests"
cargo test --release --workspace "${FEATURES[@]}"

log "benchmark smoke test (checks that it runs and that outputs agree; asserts no timing)"
cargo run --release -p cds-bench "${FEATURES[@]}" -- --quick
