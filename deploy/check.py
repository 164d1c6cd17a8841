#!/usr/bin/env python3
"""Static and live checks of the deployment files; deploy/check.sh runs it.

Usage: check.py METRICS_TXT RUN_HELP_TXT SIMULATE_HELP_TXT
  METRICS_TXT        /metrics of a running engine
  RUN_HELP_TXT       output of `cds run --help` of the same binary
  SIMULATE_HELP_TXT  output of `cds simulate --help`

Every failure is printed; the exit status is 1 if there was any.
"""

import fnmatch
import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

# --- Names that the engine does not export yet, kept in one place -------------------------------
#
# Metrics added for pipeline failure alerting. Until the engine exports them, the alerts and
# panels that use them stay silent; the check says so and does not fail. Once they are exported,
# they are checked like every other name (and these lines may go).
PENDING_METRICS: dict[str, str] = {}
# `cds run` flags that the deployment files use before the engine has them: the cluster flags
# (StatefulSet) and the lake location (compose, StatefulSet when CDS_LAKE is set).
PENDING_RUN_FLAGS: dict[str, str] = {}
# Labelled metric families that /metrics shows only after their first sample (a Cosmos DB
# write, a retry, a dead-lettered document, a clinician's acknowledgement), so a short local run
# cannot show them. They are checked against the names registered in engine/src/metrics/.
FIRST_SAMPLE_METRICS = {
    "cds_cosmos_documents_written_total",
    "cds_cosmos_retries_total",
    "cds_cosmos_dead_lettered_total",
    "cds_alert_acks_total",
    "cds_rule_accept_ratio",
    "cds_rule_override_ratio",
}
# The rule pack ConfigMaps are made with kubectl from cds-rules/ (deploy/README.md), not kept
# as manifests: the keys are the files that `kubectl create configmap --from-file=DIR` takes.
RULES_DIR = ROOT / "cds-rules"

failures = []
notes = []


def fail(msg):
    failures.append(msg)


def rel(p):
    return str(Path(p).relative_to(ROOT))


# --- 1. Every YAML and JSON file parses ---------------------------------------------------------

def load_yaml_docs(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{rel(path)}: not valid YAML: {e}")
        return []


yaml_files = sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext))
docs = {p: load_yaml_docs(p) for p in yaml_files}
for p, ds in docs.items():
    if not ds:
        fail(f"{rel(p)}: no YAML document")

dashboard_path = DEPLOY / "grafana" / "cds-dashboard.json"
try:
    dashboard = json.loads(dashboard_path.read_text(encoding="utf-8"))
except (OSError, json.JSONDecodeError) as e:
    fail(f"{rel(dashboard_path)}: not valid JSON: {e}")
    dashboard = {}


def doc(path, index=0):
    ds = docs.get(DEPLOY / path, [])
    return ds[index] if len(ds) > index else {}


# --- 2. Metric names exist in the engine's live /metrics ------------------------------------------

metrics_txt = Path(sys.argv[1]).read_text(encoding="utf-8")
live = set()
for line in metrics_txt.splitlines():
    if line.startswith("# TYPE ") or line.startswith("# HELP "):
        live.add(line.split()[2])
    elif line and not line.startswith("#"):
        live.add(re.split(r"[{ ]", line, maxsplit=1)[0])
if "cds_events_in_total" not in live:
    fail("the live /metrics has no cds_events_in_total: the engine did not read events")

registered = {
    name
    for path in sorted((ROOT / "engine/src/metrics").glob("*.rs"))
    for name in re.findall(r'"(cds_[a-z0-9_]+)"', path.read_text())
}

used = {}  # metric name -> where


def collect(expr, where):
    for name in re.findall(r"\b(?:cds|process)_[a-z0-9_]+\b", expr):
        used.setdefault(name, set()).add(where)


alerts = doc("prometheus/alerts.yml")
for group in alerts.get("groups", []):
    for rule in group.get("rules", []):
        collect(rule.get("expr", ""), "alerts.yml " + rule.get("alert", rule.get("record", "?")))
        if "alert" in rule:
            if "severity" not in rule.get("labels", {}):
                fail(f"alerts.yml {rule['alert']}: no severity label")
            if "summary" not in rule.get("annotations", {}):
                fail(f"alerts.yml {rule['alert']}: no summary annotation")


def walk_dashboard(node, where):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                collect(v, where)
            else:
                walk_dashboard(v, node.get("title", where) if isinstance(node.get("title"), str) else where)
    elif isinstance(node, list):
        for v in node:
            walk_dashboard(v, where)


walk_dashboard(dashboard, "dashboard")
if not used:
    fail("no cds_ metric found in alerts.yml and the dashboard")


def base_name(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in live | registered:
            return name[: -len(suffix)]
    return name


pending_seen = set()
for name in sorted(used):
    where = ", ".join(sorted(used[name]))
    if name in live:
        continue
    if name in PENDING_METRICS:
        pending_seen.add(name)
        continue
    if name in FIRST_SAMPLE_METRICS and base_name(name) in registered:
        continue
    fail(f"metric {name} (used in {where}) is not exported by the engine")
for name in sorted(PENDING_METRICS):
    if name in live:
        notes.append(f"metric {name} is exported now: it is checked like the others")
    elif name in pending_seen:
        notes.append(f"PENDING metric {name} ({PENDING_METRICS[name]}): not exported by this engine build; its alerts and panels stay empty until it is")
for name in sorted(FIRST_SAMPLE_METRICS):
    if name not in registered:
        fail(f"metric {name} of the first-sample list is not registered in engine/src/metrics/")
print(f"  metrics: {len(used)} names used in alerts.yml and the dashboard; "
      f"{sum(1 for n in used if n in live)} seen on a live /metrics, "
      f"{sum(1 for n in used if n not in live and n in FIRST_SAMPLE_METRICS)} registered (first-sample families), "
      f"{len(pending_seen)} pending")


# --- 3. Flags the deployment files pass exist in the engine ------------------------------------

def help_flags(path):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", Path(path).read_text(encoding="utf-8")))


run_flags = help_flags(sys.argv[2])
simulate_flags = help_flags(sys.argv[3])
if "--source" not in run_flags or "--seed" not in simulate_flags:
    fail("the help texts of `cds run` / `cds simulate` were not captured")


def check_flags(args, known, where):
    for a in args:
        flag = a.split("=", 1)[0]
        if not re.fullmatch(r"--[a-z][a-z0-9-]*", flag):
            continue
        if flag in known:
            continue
        if known is run_flags and flag in PENDING_RUN_FLAGS:
            notes.append(f"PENDING flag {flag} ({PENDING_RUN_FLAGS[flag]}) used in {where}: not in this engine build's `cds run`")
            continue
        fail(f"{where}: `{flag}` is not a flag of this engine")


dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
cmd_match = re.search(r"^CMD\s+(\[.*\])\s*$", dockerfile, re.M)
cmd = json.loads(cmd_match.group(1)) if cmd_match else []
if not cmd or cmd[0] != "run":
    fail("Dockerfile: CMD must be a JSON array starting with `run`")
check_flags(cmd, run_flags, "Dockerfile CMD")

compose = doc("compose.yaml")
services = compose.get("services", {})
engine_cmd = services.get("engine", {}).get("command", [])
if not engine_cmd or engine_cmd[0] != "run":
    fail("compose.yaml: the engine's command must start with `run`")
check_flags(engine_cmd, run_flags, "compose.yaml engine")
sim_cmd = services.get("simulator", {}).get("command", [])
if sim_cmd[:1] == ["simulate"]:
    check_flags(sim_cmd, simulate_flags, "compose.yaml simulator")

sts = doc("k8s/statefulset.yaml")
pod = sts.get("spec", {}).get("template", {}).get("spec", {})
containers = pod.get("containers", [])
container = containers[0] if containers else {}
sts_args = container.get("args", [])
if container.get("command") or sts_args[:1] != ["run"]:
    fail("k8s/statefulset.yaml: the container must run the image's `cds` with args starting `run`, "
         "no start script (the engine as process 1 gets the stop signal)")
check_flags(sts_args[1:], run_flags, "k8s/statefulset.yaml args")
# Settings come from CDS_ variables: each names a flag of `cds run` (docs/configuration.md), except
# the variables that are not options and the tokens file's older name.
NOT_OPTIONS = {"CDS_PSEUDONYM_KEY", "CDS_LOG", "CDS_OPS_WEBHOOK", "CDS_CONFIG"}
OLDER_NAMES = {"CDS_TOKENS_FILE": "--tokens"}
sts_env = {e["name"]: e for e in container.get("env", [])}
for name in sts_env:
    if not name.startswith("CDS_") or name in NOT_OPTIONS:
        continue
    flag = OLDER_NAMES.get(name, "--" + name[4:].lower().replace("_", "-"))
    check_flags([flag], run_flags, f"k8s/statefulset.yaml env {name}")


# --- 4. The Dockerfile builds what CI builds, from paths that exist -----------------------------

ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
members = ws["workspace"]["members"]
packages = {}
for m in members:
    manifest = tomllib.loads((ROOT / m / "Cargo.toml").read_text())
    packages[manifest["package"]["name"]] = (m, manifest)

build = re.search(r"cargo build ([^\n&\\]*)", dockerfile)
if not build:
    fail("Dockerfile: no `cargo build` command")
else:
    bargs = build.group(1).split()
    if "--release" not in bargs or "--locked" not in bargs:
        fail("Dockerfile: `cargo build` must use --release (the profile tests/run.sh builds and tests) and --locked")
    if any(a.startswith("--features") or a in ("--no-default-features", "--all-features") for a in bargs):
        fail("Dockerfile: `cargo build` changes features; tests/run.sh tests the default features")
    pkg = bargs[bargs.index("-p") + 1] if "-p" in bargs else None
    if pkg not in packages:
        fail(f"Dockerfile: `cargo build -p {pkg}`: not a package of the workspace ({', '.join(sorted(packages))})")
    else:
        bins = [b["name"] for b in packages[pkg][1].get("bin", [])]
        if "cds" not in bins:
            fail(f"Dockerfile: package {pkg} has no binary `cds`")
        if "target/release/cds" not in dockerfile:
            fail("Dockerfile: the image does not take target/release/cds")
run_sh = (ROOT / "tests/run.sh").read_text(encoding="utf-8")
if not re.search(r"^cargo build --release\b", run_sh, re.M):
    fail("tests/run.sh no longer builds with `cargo build --release`: align the Dockerfile's build")

rust_image = re.search(r"^FROM rust:(\d+)\.(\d+)", dockerfile, re.M)
need = tuple(int(x) for x in ws["workspace"]["package"]["rust-version"].split(".")[:2])
if not rust_image:
    fail("Dockerfile: the builder is not an official rust image")
elif (int(rust_image.group(1)), int(rust_image.group(2))) < need:
    fail(f"Dockerfile: rust:{rust_image.group(1)}.{rust_image.group(2)} is older than the workspace's rust-version {need}")

ignore = [l.strip().rstrip("/") for l in (ROOT / ".dockerignore").read_text().splitlines()
          if l.strip() and not l.startswith("#")] if (ROOT / ".dockerignore").exists() else []
copied = []
for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", dockerfile, re.M):
    parts = m.group(1).split()
    for src in parts[:-1]:
        if src.startswith("--"):
            continue
        copied.append(src.rstrip("/"))
        if not (ROOT / src).exists():
            fail(f"Dockerfile: COPY {src}: no such path in the project")
        for pat in ignore:
            if fnmatch.fnmatch(src.rstrip("/"), pat.removeprefix("**/")):
                fail(f"Dockerfile: COPY {src} is excluded by .dockerignore ({pat})")
for m in members:
    if m not in copied:
        fail(f"Dockerfile: workspace member {m}/ is not copied into the builder (Cargo reads every member)")
for src_file in list((ROOT / "engine/src").rglob("*.rs")) + list((ROOT / "rules/src").rglob("*.rs")):
    for inc in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', src_file.read_text(encoding="utf-8")):
        target = (src_file.parent / inc).resolve()
        top = target.relative_to(ROOT).parts[0]
        if top not in copied and str(target.relative_to(ROOT)) not in copied:
            fail(f"Dockerfile: {rel(src_file)} includes {rel(target)} at compile time, but {top}/ is not copied")
for needed in ("cds-rules", "config"):
    if not re.search(rf"^COPY\s+{needed}\s", dockerfile, re.M):
        fail(f"Dockerfile: the runtime image must carry {needed}/")

http_port = cmd[cmd.index("--http") + 1].rsplit(":", 1)[1] if "--http" in cmd else None
if not re.search(rf"^EXPOSE\s+{http_port}\b", dockerfile, re.M):
    fail(f"Dockerfile: EXPOSE does not match the CMD's --http port {http_port}")
if f"127.0.0.1:{http_port}/healthz" not in dockerfile:
    fail(f"Dockerfile: the HEALTHCHECK does not ask /healthz on the CMD's port {http_port}")
user = re.search(r"^USER\s+(\d+)", dockerfile, re.M)
if not user:
    fail("Dockerfile: the runtime must run as a numeric non-root USER")


# --- 5. Kubernetes: names and keys that the manifests reference are defined --------------------

k8s_docs = []
for p in sorted((DEPLOY / "k8s").glob("*.yaml")):
    for d in docs.get(p, []):
        k8s_docs.append((p, d))
namespace = next((d["metadata"]["name"] for _, d in k8s_docs if d.get("kind") == "Namespace"), None)
if not namespace:
    fail("k8s: no Namespace")
kustomization = next((d for p, d in k8s_docs if d.get("kind") == "Kustomization"), {})
for r in kustomization.get("resources", []):
    if not (DEPLOY / "k8s" / r).exists():
        fail(f"k8s/kustomization.yaml: resource {r} does not exist")
if "secrets.example.yaml" in kustomization.get("resources", []):
    fail("k8s/kustomization.yaml must not apply secrets.example.yaml (placeholder values)")

defined = {"ConfigMap": {}, "Secret": {}}
for p, d in k8s_docs:
    kind = d.get("kind")
    if kind == "Kustomization":
        continue
    for field in ("apiVersion", "kind", "metadata"):
        if field not in d:
            fail(f"{rel(p)}: a document without {field}")
    md = d.get("metadata", {})
    if kind != "Namespace" and md.get("namespace") != namespace:
        fail(f"{rel(p)}: {kind} {md.get('name')} is not in namespace {namespace}")
    if kind in defined:
        keys = set(d.get("data", {}) or {}) | set(d.get("stringData", {}) or {})
        defined[kind][md.get("name")] = keys


def kubectl_from_file_keys(directory):
    return {f.name for f in directory.iterdir() if f.is_file()}


external = {
    "cds-rules": kubectl_from_file_keys(RULES_DIR),
    "cds-rules-lib": kubectl_from_file_keys(RULES_DIR / "lib"),
}
for name, keys in external.items():
    defined["ConfigMap"].setdefault(name, keys)


def need(kind, name, key, where):
    if name not in defined[kind]:
        fail(f"k8s/statefulset.yaml: {where} references {kind} {name}, which no manifest defines")
    elif key is not None and key not in defined[kind][name]:
        fail(f"k8s/statefulset.yaml: {where} references key {key} of {kind} {name}, which it does not have")


env = {e["name"]: e for e in container.get("env", [])}
for e in env.values():
    vf = e.get("valueFrom", {})
    if "configMapKeyRef" in vf:
        need("ConfigMap", vf["configMapKeyRef"]["name"], vf["configMapKeyRef"]["key"], f"env {e['name']}")
    if "secretKeyRef" in vf:
        need("Secret", vf["secretKeyRef"]["name"], vf["secretKeyRef"]["key"], f"env {e['name']}")
for ef in container.get("envFrom", []):
    if "configMapRef" in ef:
        need("ConfigMap", ef["configMapRef"]["name"], None, "envFrom")
    if "secretRef" in ef:
        need("Secret", ef["secretRef"]["name"], None, "envFrom")

volumes = {v["name"]: v for v in pod.get("volumes", [])}


def check_source(kind, name, items, where):
    need(kind, name, None, where)
    for it in items or []:
        need(kind, name, it["key"], where)


for vname, v in volumes.items():
    if "configMap" in v:
        check_source("ConfigMap", v["configMap"]["name"], v["configMap"].get("items"), f"volume {vname}")
    if "secret" in v:
        check_source("Secret", v["secret"]["secretName"], v["secret"].get("items"), f"volume {vname}")
    for s in v.get("projected", {}).get("sources", []):
        if "configMap" in s:
            check_source("ConfigMap", s["configMap"]["name"], s["configMap"].get("items"), f"volume {vname}")
        if "secret" in s:
            check_source("Secret", s["secret"]["name"], s["secret"].get("items"), f"volume {vname}")
claims = {c["metadata"]["name"] for c in sts.get("spec", {}).get("volumeClaimTemplates", [])}
for m in container.get("volumeMounts", []):
    if m["name"] not in volumes and m["name"] not in claims:
        fail(f"k8s/statefulset.yaml: volumeMount {m['name']} has no volume")
    if "subPath" in m and m["name"] == "rules":
        fail("k8s/statefulset.yaml: the rule pack is mounted with subPath, which stops ConfigMap updates (hot reload)")

# Every module of the rule pack's lib/ is projected, or rules that import it fail to load.
lib_items = set()
for s in volumes.get("rules", {}).get("projected", {}).get("sources", []):
    if s.get("configMap", {}).get("name") == "cds-rules-lib":
        lib_items = {it["path"] for it in s["configMap"].get("items", [])}
for f in sorted((RULES_DIR / "lib").glob("*.rhai")):
    if f"lib/{f.name}" not in lib_items:
        fail(f"k8s/statefulset.yaml: rule module cds-rules/lib/{f.name} is not projected into the rules volume")
rules_mount = next((m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] == "rules"), None)
if rules_mount and env.get("CDS_RULES", {}).get("value") != rules_mount:
    fail(f"k8s/statefulset.yaml: the engine's CDS_RULES is not the rules volume's mount path {rules_mount}")

# The cluster: replicas, the hosts file, the headless Service and the ports agree.
replicas = sts.get("spec", {}).get("replicas")
processes = env.get("CDS_PROCESSES", {}).get("value")
if str(replicas) != str(processes):
    fail(f"k8s/statefulset.yaml: replicas {replicas} differ from CDS_PROCESSES {processes}")
if sts.get("spec", {}).get("podManagementPolicy") != "Parallel":
    fail("k8s/statefulset.yaml: podManagementPolicy must be Parallel (processes wait for each other when the cluster forms)")
svc_name = sts.get("spec", {}).get("serviceName")
services_k8s = {d["metadata"]["name"]: d for _, d in k8s_docs if d.get("kind") == "Service"}
headless = services_k8s.get(svc_name)
pod_labels = sts.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
if not headless or headless["spec"].get("clusterIP") != "None":
    fail(f"k8s: the StatefulSet's serviceName {svc_name} is not a headless Service")
elif not headless["spec"].get("publishNotReadyAddresses"):
    fail("k8s: the headless Service must publish not-ready addresses (peers connect before readiness)")
container_ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
# The hosts file: CDS_HOSTS names a key of a ConfigMap volume whose line I is pod cds-I of the
# headless Service on the timely port; as many lines as replicas. CDS_PROCESS is the pod's index.
hosts_path = env.get("CDS_HOSTS", {}).get("value", "")
hosts_text = None
for m in container.get("volumeMounts", []):
    prefix = m["mountPath"].rstrip("/") + "/"
    v = volumes.get(m["name"], {})
    if hosts_path.startswith(prefix) and "configMap" in v:
        inside = hosts_path[len(prefix):]
        key = next((it["key"] for it in v["configMap"].get("items", []) if it["path"] == inside), inside)
        cm = next((d for _, d in k8s_docs if d.get("kind") == "ConfigMap"
                   and d["metadata"]["name"] == v["configMap"]["name"]), {})
        hosts_text = (cm.get("data") or {}).get(key)
if hosts_text is None:
    fail(f"k8s/statefulset.yaml: CDS_HOSTS {hosts_path!r} is not a key of a mounted ConfigMap")
else:
    want = [f"{sts['metadata']['name']}-{i}.{svc_name}.{namespace}.svc.cluster.local:{container_ports.get('timely')}"
            for i in range(int(replicas or 0))]
    if hosts_text.split() != want:
        fail(f"k8s: the hosts file {hosts_path} is not {want} (pods cds-I of Service {svc_name}, the timely port, one per replica)")
process_ref = env.get("CDS_PROCESS", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
if process_ref != "metadata.labels['apps.kubernetes.io/pod-index']":
    fail("k8s/statefulset.yaml: CDS_PROCESS must be the pod's index (fieldRef metadata.labels['apps.kubernetes.io/pod-index'])")
for name, s in services_k8s.items():
    sel = s["spec"].get("selector", {})
    if any(pod_labels.get(k) != v for k, v in sel.items()):
        fail(f"k8s: Service {name} selects no pod of the StatefulSet")
    for port in s["spec"].get("ports", []):
        tp = port.get("targetPort")
        if isinstance(tp, str) and tp not in container_ports:
            fail(f"k8s: Service {name} targets port {tp}, which the container does not name")
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    path = container.get(probe, {}).get("httpGet", {}).get("path")
    want = "/readyz" if probe == "readinessProbe" else "/healthz"
    if path != want:
        fail(f"k8s/statefulset.yaml: {probe} must ask {want}, not {path}")
if env.get("CDS_HTTP", {}).get("value") != "0.0.0.0:8080" or container_ports.get("http") != 8080:
    fail("k8s/statefulset.yaml: the engine's CDS_HTTP and the container's http port disagree")
if user and str(pod.get("securityContext", {}).get("runAsUser")) != user.group(1):
    fail("k8s/statefulset.yaml: runAsUser differs from the image's USER")
for r in ("requests", "limits"):
    if r not in container.get("resources", {}):
        fail(f"k8s/statefulset.yaml: no resource {r}")


# --- 6. Compose and Prometheus agree with each other ------------------------------------------

build_cfg = services.get("engine", {}).get("build") or compose.get("x-engine-image", {}).get("build", {})
if (DEPLOY / build_cfg.get("context", ".") / build_cfg.get("dockerfile", "")).resolve() != (DEPLOY / "Dockerfile").resolve():
    fail("compose.yaml: the engine is not built from deploy/Dockerfile with the project root as context")
for sname, s in services.items():
    for v in s.get("volumes", []):
        src = v.split(":", 1)[0]
        if src.startswith(".") and not (DEPLOY / src).exists():
            fail(f"compose.yaml: service {sname} mounts {src}, which does not exist")
prom = doc("prometheus/prometheus.yml")
for rf in prom.get("rule_files", []):
    if not (DEPLOY / "prometheus" / rf).exists():
        fail(f"prometheus.yml: rule file {rf} does not exist next to it")
targets = [t for sc in prom.get("scrape_configs", []) if sc.get("job_name") == "cds"
           for stc in sc.get("static_configs", []) for t in stc.get("targets", [])]
engine_http = engine_cmd[engine_cmd.index("--http") + 1] if "--http" in engine_cmd else ""
if not targets or any(t.split(":")[0] not in services or t.split(":")[1] != engine_http.rsplit(":", 1)[-1] for t in targets):
    fail(f"prometheus.yml: the cds job's targets {targets} are not the engine service's --http port")
if 'job="cds"' in (DEPLOY / "prometheus/alerts.yml").read_text(encoding="utf-8") and not targets:
    fail("alerts.yml selects job=\"cds\", which prometheus.yml does not scrape")
provider = doc("grafana/provisioning/dashboards/cds.yml").get("providers", [{}])[0]
dash_dir = provider.get("options", {}).get("path", "")
if not any(v.endswith(f":{dash_dir}/cds-dashboard.json:ro") for v in services.get("grafana", {}).get("volumes", [])):
    fail("compose.yaml: Grafana does not mount the dashboard where its provisioning looks for it")

ids = [p.get("id") for p in dashboard.get("panels", [])]
if len(ids) != len(set(ids)):
    fail("cds-dashboard.json: panel ids are not unique")


for n in notes:
    print("  " + n)
if failures:
    for f in failures:
        print("  FAIL: " + f, file=sys.stderr)
    sys.exit(1)
