#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster:
#   - every YAML file (multi-document) and the Grafana dashboard parse;
#   - promtool accepts prometheus.yml and alerts.yml, and the alerts' unit tests pass;
#   - every metric that alerts.yml and the dashboard use is exported by the engine: the release
#     binary runs the simulator for a few seconds and its /metrics is read;
#   - every flag that the Dockerfile, compose.yaml and the StatefulSet pass exists in the engine;
#   - the Dockerfile builds what tests/run.sh builds, from paths that exist;
#   - the Kubernetes manifests reference only ConfigMaps, Secrets, keys, volumes, Services and
#     ports that are defined, and the cluster settings agree with each other.
# Installs what it needs when missing (PyYAML from PyPI, promtool from Debian's `prometheus`
# package); a tool that cannot be installed fails the check. tests/run.sh runs it after the
# build; by hand: bash deploy/check.sh (CDS_BIN names another engine binary).
set -euo pipefail
cd "$(dirname "$0")/.."

PYYAML_VERSION=6.0.3
# The binary that tests/run.sh has just built (CARGO_TARGET_DIR moves it).
CDS_BIN="${CDS_BIN:-${CARGO_TARGET_DIR:-target}/release/cds}"

fail() { printf 'deploy check: FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf '  %s\n' "$*"; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# GET a URL to stdout; fails on anything but a 2xx answer.
fetch() {
  python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

# --- Tools ----------------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || fail "python3 (3.11 or later) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "python3 is $(python3 -V 2>&1); 3.11 or later is required (tomllib)"
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  step "installing PyYAML $PYYAML_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "PyYAML==$PYYAML_VERSION" \
    || python3 -m pip install --quiet --disable-pip-version-check --user "PyYAML==$PYYAML_VERSION" \
    || fail "could not install PyYAML $PYYAML_VERSION with pip"
  python3 -c 'import yaml' || fail "PyYAML is installed but cannot be imported"
fi
if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || fail "could not install Debian's prometheus package (promtool)"
  command -v promtool >/dev/null 2>&1 || fail "promtool is still missing after installing prometheus"
fi
[ -x "$CDS_BIN" ] || fail "no engine binary at $CDS_BIN: build it first (cargo build --release)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cds-deploy-check.XXXXXX")"
ENGINE_PID=""
cleanup() {
  if [ -n "$ENGINE_PID" ]; then kill "$ENGINE_PID" 2>/dev/null || true; wait "$ENGINE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- Prometheus files -------------------------------------------------------------------------
promtool check config deploy/prometheus/prometheus.yml > "$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; fail "promtool check config deploy/prometheus/prometheus.yml"; }
promtool check rules deploy/prometheus/alerts.yml > "$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; fail "promtool check rules deploy/prometheus/alerts.yml"; }
promtool test rules deploy/prometheus/alerts.test.yml > "$WORK/promtool.log" 2>&1 \
  || { cat "$WORK/promtool.log" >&2; fail "promtool test rules deploy/prometheus/alerts.test.yml"; }
step "promtool: prometheus.yml, alerts.yml and the alert tests pass"

# --- A live /metrics --------------------------------------------------------------------------
# The simulator with many dirty events (dead letters, data-quality flags), the rule pack of the
# project, and checkpoints every second, so that the labelled families show up. Port 0: the
# engine picks a free port and prints it.
"$CDS_BIN" run --source simulator --rate 5000 --dirty-rate 0.2 --max-events 200000 \
  --data-dir "$WORK/data" --http 127.0.0.1:0 --checkpoint-interval 1 \
  > "$WORK/engine.out" 2> "$WORK/engine.err" &
ENGINE_PID=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's|^cds: HTTP on http://\([^ ]*\).*|\1|p' "$WORK/engine.err" | head -n 1)"
  [ -n "$ADDR" ] && break
  kill -0 "$ENGINE_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/engine.err" >&2; fail "the engine did not start its HTTP server"; }
got_metrics=""
for _ in $(seq 1 100); do
  if fetch "http://$ADDR/metrics" > "$WORK/metrics.txt" 2>/dev/null \
    && grep -q '^cds_dead_letters_total{' "$WORK/metrics.txt" \
    && grep -q '^cds_checkpoints_written_total [1-9]' "$WORK/metrics.txt" \
    && grep -q '^cds_rule_fires_total{' "$WORK/metrics.txt"; then
    got_metrics=1
    break
  fi
  sleep 0.2
done
[ -n "$got_metrics" ] || { cat "$WORK/engine.err" >&2; fail "no complete /metrics from the engine within 20 s"; }
fetch "http://$ADDR/healthz" >/dev/null || fail "/healthz of the engine does not answer 200"
fetch "http://$ADDR/readyz" >/dev/null || fail "/readyz of the engine does not answer 200"
kill -INT "$ENGINE_PID" 2>/dev/null || true
wait "$ENGINE_PID" 2>/dev/null || true
ENGINE_PID=""
step "engine: /healthz, /readyz and /metrics answered ($(grep -c '^# TYPE' "$WORK/metrics.txt") metric families)"

"$CDS_BIN" run --help > "$WORK/run-help.txt"
"$CDS_BIN" simulate --help > "$WORK/simulate-help.txt"

# --- Everything else --------------------------------------------------------------------------
python3 deploy/check.py "$WORK/metrics.txt" "$WORK/run-help.txt" "$WORK/simulate-help.txt" \
  || fail "see the lines above"
echo "deploy check: OK"
