"""The checks behind scripts/deploy-check, one subcommand per step (the script times them and stops at the first
failure). Each failure is one line saying which file is wrong and what to change.

Static steps read only the files: `dockerfiles`, `compose`, `k8s`, `keda`, `dashboard`, `metric-names`, `otel`.
`build` runs the Dockerfiles' cargo commands on a clean copy of the build context, `libc` reads the binaries,
`runtime` runs every leadscore command line of docker-compose.yml against the binaries on loopback.
"""

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dockerctx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILES = ["Dockerfile.api", "Dockerfile.worker"]
COMPOSE = "docker-compose.yml"
EXAMPLE_ENV = "deploy/compose/example.env"
K8S = "deploy/k8s"
KEDA_SCHEMA = "deploy/schemas/keda-scaledobject-v2.18.json"
DASHBOARD = "deploy/grafana/leadscore.json"
ALERTS = "deploy/prometheus/alerts.yml"
GRAFANA_DATASOURCES = "deploy/grafana/provisioning/datasources/leadscore.yml"
OTEL = "deploy/otel/collector.yaml"
# Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
K8S_VERSION = "1.33.0"
# Services meant to run as several copies: no container_name, no fixed host port.
SCALABLE = {"worker"}
# Seconds of drain the binaries are configured with (LEADSCORE_DRAIN_SECS in the compose file and ConfigMap).
OPS_PORT = 9464
# glibc of the runtime base images we know (Debian 12 / distroless on Debian 12: 2.36; Debian 13: 2.41), and
# the shared libraries such an image has without installing anything.
BASE_GLIBC = {
    "debian:bookworm-slim": "2.36",
    "debian:bookworm": "2.36",
    "gcr.io/distroless/cc-debian12": "2.36",
    "gcr.io/distroless/cc-debian12:nonroot": "2.36",
    "debian:trixie-slim": "2.41",
}
BASE_LIBS = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
             "libutil.so.1", "ld-linux-x86-64.so.2"}
# The metric names the team agreed on (docs/operations.md, "Metrics"): dashboards and alerts use only these.
AGREED_METRICS = {
    "leadscore_queue_jobs": "gauge",
    "leadscore_queue_oldest_job_age_seconds": "gauge",
    "leadscore_jobs_claimed_total": "counter",
    "leadscore_jobs_succeeded_total": "counter",
    "leadscore_jobs_failed_total": "counter",
    "leadscore_jobs_retried_total": "counter",
    "leadscore_jobs_rescued_total": "counter",
    "leadscore_job_duration_seconds": "histogram",
    "leadscore_llm_requests_total": "counter",
    "leadscore_llm_request_duration_seconds": "histogram",
    "leadscore_llm_tokens_total": "counter",
    "leadscore_llm_cost_usd_total": "counter",
    "leadscore_llm_limiter_wait_seconds": "histogram",
    "leadscore_llm_breaker_open": "gauge",
    "leadscore_llm_cache_requests_total": "counter",
    "leadscore_upload_rows_total": "counter",
    "leadscore_http_requests_total": "counter",
    "leadscore_http_request_duration_seconds": "histogram",
}
# Grafana's variables, replaced by fixed values so that promtool can parse each dashboard query.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

errors = []


def fail(msg):
    errors.append(msg)
    print(f"  FAIL {msg}", file=sys.stderr)


def ok(msg):
    print(f"  ok   {msg}")


def done():
    if errors:
        print(f"{len(errors)} problem(s); fix the files named above.", file=sys.stderr)
        sys.exit(1)


def path(rel):
    return os.path.join(ROOT, rel)


def load_yaml_docs(rel):
    with open(path(rel), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def tool(name):
    """An executable of the venv this script runs from."""
    return os.path.join(os.path.dirname(sys.executable), name)


# ---------------------------------------------------------------------------------------------------- Dockerfiles

def image_facts(rel):
    """What the rest of the checks need to know about one Dockerfile, per target stage."""
    df = dockerctx.Dockerfile(path(rel))
    facts = {"file": rel, "targets": {}, "cargo": [], "stub_script": None, "deps_copies": []}
    for run in df.of("RUN"):
        # The shell script as written (quotes kept), without RUN's own --mount/--network options.
        script = re.sub(r"^(--\S+\s+)+", "", run.args)
        for m in re.finditer(r"cargo build[^;&|]*", script):
            cmd = m.group(0).strip()
            facts["cargo"].append({"stage": run.stage, "cmd": cmd, "line": run.line})
        if "src/lib.rs" in script and run.stage == df.stages[0][0]:
            facts["stub_script"] = script.split("&& cargo build")[0]
    for copy in df.of("COPY", df.stages[0][0]):
        flags, words = copy.flags_and_rest()
        if "from" not in flags:
            facts["deps_copies"].append(words)
    for name, _ in df.stages:
        chain = df.chain(name)
        insts = [i for i in df.instructions if i.stage in chain]
        health = [i for i in insts if i.keyword == "HEALTHCHECK"]
        cmd = [i for i in insts if i.keyword == "CMD"]
        user = [i for i in insts if i.keyword == "USER"]
        expose = [p for i in insts if i.keyword == "EXPOSE" for p in i.args.split()]
        bins = []
        for c in insts:
            if c.keyword == "COPY":
                flags, words = c.flags_and_rest()
                if "from" in flags and words[-1].rstrip("/") == "/usr/local/bin":
                    bins.append((flags["from"][0], words[0]))
        facts["targets"][name] = {
            "image": df.image_of(name),
            "cmd": json.loads(cmd[0].args) if cmd else None,
            "healthcheck": health[0].args if health else None,
            "user": user[0].args if user else None,
            "expose": expose,
            "bin_copies": bins,
        }
    facts["final"] = df.final_stage()
    facts["stages"] = [n for n, _ in df.stages]
    facts["df"] = df
    return facts


def built_bins(facts, stage_chain, out_dir):
    """Binaries the RUNs of these stages copy from target/release into `out_dir` (what a COPY --from takes)."""
    out = set()
    df = facts["df"]
    for run in df.of("RUN"):
        if run.stage not in stage_chain:
            continue
        for m in re.finditer(r"cp ((?:target/release/[\w-]+ )+)(/[\w-]+)/", run.args):
            if m.group(2) == out_dir.rstrip("/"):
                out.update(os.path.basename(p) for p in m.group(1).split())
    return out


def image_bins(facts, target):
    """The binaries an image target gets in /usr/local/bin."""
    bins = set()
    for stage, src in target["bin_copies"]:
        bins |= built_bins(facts, facts["df"].chain(stage), src)
    return bins


def cmd_dockerfiles(args):
    ctx = args.context_copy
    for rel in DOCKERFILES:
        facts = image_facts(rel)
        df = facts["df"]
        # Every COPY source (not from another stage) exists in the build context after .dockerignore.
        for copy in df.of("COPY") + df.of("ADD"):
            flags, words = copy.flags_and_rest()
            if "from" in flags:
                if flags["from"][0] not in facts["stages"]:
                    fail(f"{rel}:{copy.line}: COPY --from={flags['from'][0]}: no such stage")
                continue
            for src in words[:-1]:
                if not glob.glob(os.path.join(ctx, src.lstrip("/"))):
                    fail(f"{rel}:{copy.line}: COPY source {src} is not in the build context "
                         f"(missing, or left out by .dockerignore)")
        ok(f"{rel}: every COPY source is in the build context after .dockerignore")
        for c in facts["cargo"]:
            if "--release" not in c["cmd"] or "--locked" not in c["cmd"]:
                fail(f"{rel}:{c['line']}: `{c['cmd']}` must build with --release --locked")
        # The image targets people run: the final stage, and named stages with a CMD other than the builders.
        for name, t in facts["targets"].items():
            if not t["cmd"] or not t["bin_copies"]:
                continue
            bins = image_bins(facts, t)
            if t["cmd"][0] not in bins:
                fail(f"{rel}: stage {name}: CMD runs {t['cmd'][0]}, which no build stage copies to /usr/local/bin")
            user = (t["user"] or "root").split(":")[0]
            if user in ("root", "0"):
                fail(f"{rel}: stage {name} runs as root: add USER with a non-root uid")
            base = t["image"]
            if base not in BASE_GLIBC:
                fail(f"{rel}: stage {name} is based on {base}, whose glibc this check does not know: "
                     f"add it to BASE_GLIBC in deploy/check/deploycheck.py")
            if name == facts["final"]:
                hc = t["healthcheck"] or ""
                m = re.search(r"CMD (\[.*\])", hc)
                if not m or json.loads(m.group(1))[:2] != ["leadscore", "healthcheck"]:
                    fail(f"{rel}: the final stage needs HEALTHCHECK ... CMD [\"leadscore\", \"healthcheck\"]")
                elif "leadscore" not in bins:
                    fail(f"{rel}: HEALTHCHECK runs `leadscore`, which the image does not contain")
                if str(OPS_PORT) not in t["expose"]:
                    fail(f"{rel}: the final stage should EXPOSE {OPS_PORT} (operations listener)")
            ok(f"{rel}: target {name} on {base}: runs {t['cmd'][0]} as user {t['user']}, has {sorted(bins)}")
        # The builder and the runtime stand on the same Debian release (same glibc).
        builder = df.image_of(facts["stages"][0])
        runtime = facts["targets"][facts["final"]]["image"]
        release = lambda image: re.sub(r"-slim$", "", image.split(":")[-1].split("-")[-1])  # noqa: E731
        if release(builder) != release(runtime.replace("-slim", "")):
            fail(f"{rel}: the build image {builder} and the runtime image {runtime} are different Debian releases "
                 f"(the binaries may need a newer glibc than the runtime has)")
        else:
            ok(f"{rel}: builds on {builder}, runs on {runtime} (glibc {BASE_GLIBC.get(runtime, '?')})")
    done()


# ------------------------------------------------------------------------------------------------------- compose

def read_env_file(rel):
    env = {}
    with open(path(rel), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"').strip("'")
    return env


class InterpolationError(Exception):
    pass


def interpolate(value, env):
    """Compose's variable syntax: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op in (":-", "-"):
            empty = current is None or (op == ":-" and current == "")
            return arg if empty else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise InterpolationError(f"{name}: {arg}")
            return current
        return current or ""

    pattern = r"\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}|\$(?P<plain>\w+)"
    return re.sub(pattern, one, value)


def service_environment(service, env):
    """A service's environment after interpolation; variables without a value come from `env`, or are unset."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict((item.split("=", 1) + [None])[:2] for item in raw)
    out = {}
    for key, value in raw.items():
        if value is None:
            if key in env:
                out[key] = env[key]
            continue
        out[key] = str(interpolate(value, env)) if not isinstance(value, bool) else str(value).lower()
    return out


def compose_project(env):
    with open(path(COMPOSE), encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    return interpolate(raw, env)


def parse_duration(text):
    total = 0.0
    for amount, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", str(text)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}[unit]
    return total


def cmd_compose(args):
    env = read_env_file(EXAMPLE_ENV)
    env["LEADSCORE_BOOTSTRAP_KEY"] = "0" * 64
    with open(path(COMPOSE), encoding="utf-8") as f:
        text = f.read()
    raw = yaml.safe_load(text)
    # Without a bootstrap key compose refuses to start (instead of an API that stays unready without a key).
    try:
        interpolate(raw, {k: v for k, v in env.items() if k != "LEADSCORE_BOOTSTRAP_KEY"})
        fail(f"{COMPOSE}: the api's LEADSCORE_BOOTSTRAP_KEY must be required (${{LEADSCORE_BOOTSTRAP_KEY:?...}})")
    except InterpolationError:
        ok("compose refuses to start without LEADSCORE_BOOTSTRAP_KEY")
    project = interpolate(raw, env)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(project, f)
    services = project["services"]
    profiles = set(p for s in services.values() for p in s.get("profiles", []))
    active = set(env.get("COMPOSE_PROFILES", "").split(",")) - {""}
    for name in SCALABLE:
        s = services.get(name)
        if s is None:
            fail(f"{COMPOSE}: no service {name}")
            continue
        if "container_name" in s:
            fail(f"{COMPOSE}: service {name} is scaled (--scale {name}=N) and must not set container_name")
        for port in s.get("ports", []):
            published = port.get("published") if isinstance(port, dict) else (
                str(port).rsplit(":", 1)[0] if ":" in str(port) else None)
            if published:
                fail(f"{COMPOSE}: service {name} publishes host port {port}: copies would clash; use `expose`")
        ok(f"service {name} can scale: no container_name, no fixed host port")
    for name, s in services.items():
        build = s.get("build")
        if build:
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            if not os.path.exists(path(dockerfile)):
                fail(f"{COMPOSE}: service {name} builds {dockerfile}, which does not exist")
                continue
            target = build.get("target") if isinstance(build, dict) else None
            stages = [n for n, _ in dockerctx.Dockerfile(path(dockerfile)).stages]
            if target and target not in stages:
                fail(f"{COMPOSE}: service {name} builds target {target}, not a stage of {dockerfile}")
        for vol in s.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
            if source and source.startswith("."):
                if not os.path.exists(path(source)):
                    fail(f"{COMPOSE}: service {name} mounts {source}, which does not exist")
        deps = s.get("depends_on") or {}
        for dep in deps if isinstance(deps, (dict, list)) else []:
            if dep not in services:
                fail(f"{COMPOSE}: service {name} depends on unknown service {dep}")
            elif services[dep].get("profiles") and not s.get("profiles"):
                fail(f"{COMPOSE}: service {name} (always on) depends on {dep}, which only runs with a profile")
    for name, profile in [("fake-llm", "demo"), ("otel-collector", "observability"), ("prometheus", "observability"),
                          ("grafana", "observability")]:
        if profile not in services.get(name, {}).get("profiles", []):
            fail(f"{COMPOSE}: service {name} should run only with profile {profile}")
    for name in ["postgres", "redis", "migrate", "api", "worker"]:
        if services.get(name, {}).get("profiles"):
            fail(f"{COMPOSE}: service {name} is part of every start and must not have a profile")
    for name in ["api", "worker"]:
        deps = services.get(name, {}).get("depends_on", {})
        if not isinstance(deps, dict) or deps.get("migrate", {}).get("condition") != "service_completed_successfully":
            fail(f"{COMPOSE}: service {name} must wait for migrate (condition: service_completed_successfully)")
        env_s = service_environment(services.get(name, {}), env)
        drain = float(env_s.get("LEADSCORE_DRAIN_SECS", 20))
        grace = parse_duration(services.get(name, {}).get("stop_grace_period", "10s"))
        if grace <= drain:
            fail(f"{COMPOSE}: service {name}: stop_grace_period {grace:g}s must be above LEADSCORE_DRAIN_SECS={drain:g}")
    ok(f"services {', '.join(services)}; profiles {sorted(profiles)} (example.env turns on {sorted(active)})")
    done()


# ---------------------------------------------------------------------------------------------------- Kubernetes

def k8s_docs():
    docs = []
    for file in sorted(glob.glob(path(f"{K8S}/*.yaml"))):
        for doc in load_yaml_docs(os.path.relpath(file, ROOT)):
            docs.append((os.path.relpath(file, ROOT), doc))
    return docs


def containers(doc):
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
    pod = template.get("spec", {})
    return pod, pod.get("containers", []) + pod.get("initContainers", [])


def cmd_k8s(args):
    docs = k8s_docs()
    kust = [d for f, d in docs if d.get("kind") == "Kustomization"]
    if len(kust) != 1:
        fail(f"{K8S}: expected one kustomization.yaml")
        done()
    kust = kust[0]
    listed = set(kust.get("resources", []))
    present = {os.path.basename(f) for f, _ in docs} - {"kustomization.yaml"}
    templates = {f for f in present if ".example." in f}
    for missing in sorted(present - listed - templates):
        fail(f"{K8S}/kustomization.yaml: {missing} is not listed in resources")
    for extra in sorted(listed - present):
        fail(f"{K8S}/kustomization.yaml: resource {extra} does not exist")
    ok(f"kustomization lists {len(listed)} resources; templates outside the base: {sorted(templates)}")
    # Kubernetes' own kinds, against the schemas of K8S_VERSION (strict: unknown fields are errors).
    files = sorted({f for f, d in docs if d.get("apiVersion", "").split("/")[0] not in
                    ("keda.sh", "kustomize.config.k8s.io")})
    r = subprocess.run([tool("kubernetes-validate"), "-k", K8S_VERSION, "--strict", "--quiet", *files],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"kubernetes-validate {K8S_VERSION}: {(r.stdout + r.stderr).strip()}")
    else:
        ok(f"kubernetes-validate --strict against Kubernetes {K8S_VERSION}: {len(files)} files")

    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d.get("kind"), []).append((f, d))
    images = {i["name"] for i in kust.get("images", [])}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
               for _, d in by_kind.get("Secret", [])}
    for f, d in by_kind.get("Deployment", []) + by_kind.get("Job", []):
        name = d["metadata"]["name"]
        pod, cs = containers(d)
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        selector = d["spec"].get("selector", {}).get("matchLabels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(f"{f}: {name}: the selector does not match the pod labels")
        for c in cs:
            if c["image"].split(":")[0] not in images:
                fail(f"{f}: {name}: image {c['image']} has no entry in kustomization images (tag it there)")
            env = {e["name"]: e for e in c.get("env", [])}
            for e in env.values():
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional") and ref["key"] not in secrets.get(ref["name"], set()):
                    fail(f"{f}: {name}: secret key {ref['name']}/{ref['key']} is not in the Secret template")
            for src in c.get("envFrom", []):
                cm = src.get("configMapRef", {}).get("name")
                if cm and cm not in configmaps:
                    fail(f"{f}: {name}: envFrom ConfigMap {cm} is not in the base")
            if d["kind"] == "Deployment":
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe"):
                    p = c.get(probe, {}).get("httpGet")
                    if not p:
                        fail(f"{f}: {name}: no {probe} (httpGet on the operations port)")
                        continue
                    port = ports.get(p["port"], p["port"])
                    want = "/readyz" if probe == "readinessProbe" else "/healthz"
                    if port != OPS_PORT or p["path"] != want:
                        fail(f"{f}: {name}: {probe} must ask {want} on port {OPS_PORT}, not {p['path']} on {port}")
                if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
                    fail(f"{f}: {name}: set resources.requests and resources.limits")
                drain = float(configmaps.get("leadscore", {}).get("LEADSCORE_DRAIN_SECS", 20))
                env_drain = env.get("LEADSCORE_DRAIN_SECS", {}).get("value")
                drain = float(env_drain) if env_drain else drain
                pre = c.get("lifecycle", {}).get("preStop", {})
                pre_secs = float(pre.get("exec", {}).get("command", ["", "0"])[-1]) if "exec" in pre else float(
                    pre.get("sleep", {}).get("seconds", 0))
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if grace <= drain + pre_secs:
                    fail(f"{f}: {name}: terminationGracePeriodSeconds {grace} must be above preStop {pre_secs:g}s "
                         f"+ LEADSCORE_DRAIN_SECS {drain:g}s")
                else:
                    ok(f"{name}: probes on :{OPS_PORT}, grace {grace}s > preStop {pre_secs:g}s + drain {drain:g}s")
    deployments = {d["metadata"]["name"]: d for _, d in by_kind.get("Deployment", [])}
    for f, d in by_kind.get("PodDisruptionBudget", []) + by_kind.get("Service", []):
        sel = d["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        if not any(all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   for dep in deployments.values()):
            fail(f"{f}: {d['kind']} {d['metadata']['name']} selects no Deployment's pods")
    ok("PodDisruptionBudgets and Services select Deployment pods")
    done()


def cmd_keda(args):
    import jsonschema

    with open(path(KEDA_SCHEMA), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    deployments = {d["metadata"]["name"]: d for _, d in k8s_docs() if d.get("kind") == "Deployment"}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in k8s_docs() if d.get("kind") == "ConfigMap"}
    found = 0
    for f, d in k8s_docs():
        if d.get("kind") != "ScaledObject":
            continue
        found += 1
        v = jsonschema.Draft202012Validator(schema)
        for e in sorted(v.iter_errors(d), key=lambda e: list(e.path)):
            fail(f"{f}: {'/'.join(map(str, e.path))}: {e.message}")
        spec = d["spec"]
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if hi < lo:
            fail(f"{f}: maxReplicaCount {hi} is below minReplicaCount {lo}")
        target = deployments.get(spec["scaleTargetRef"]["name"])
        if not target:
            fail(f"{f}: scaleTargetRef {spec['scaleTargetRef']['name']} is not a Deployment of the base")
            continue
        c = target["spec"]["template"]["spec"]["containers"][0]
        names = {e["name"] for e in c.get("env", [])}
        for src in c.get("envFrom", []):
            names |= set(configmaps.get(src.get("configMapRef", {}).get("name"), {}))
        for t in spec["triggers"]:
            md = t["metadata"]
            if "connectionFromEnv" in md and md["connectionFromEnv"] not in names:
                fail(f"{f}: connectionFromEnv {md['connectionFromEnv']} is not set on the target's first container")
            if t["type"] == "postgresql":
                limits = [int(n) for n in re.findall(r"(?i)limit\s+(\d+)", md["query"])]
                need = float(md["targetQueryValue"]) * hi
                if not limits or min(limits) < need:
                    fail(f"{f}: the query's LIMIT ({limits}) must be at least targetQueryValue x maxReplicaCount "
                         f"({need:g}), or the workers can never reach maxReplicaCount")
                with open(args.query_out, "w", encoding="utf-8") as out:
                    out.write(md["query"])
        ok(f"{f}: valid against {KEDA_SCHEMA}; {lo}-{hi} replicas of {spec['scaleTargetRef']['name']}")
    if not found:
        fail(f"{K8S}: no ScaledObject")
    done()


# -------------------------------------------------------------------------------------- dashboard, alerts, otel

def dashboard_panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def cmd_dashboard(args):
    with open(path(DASHBOARD), encoding="utf-8") as f:
        dash = json.load(f)
    uids = {d["uid"] for d in load_yaml_docs(GRAFANA_DATASOURCES)[0]["datasources"]}
    ids, cells, rules = set(), {}, []
    for p in dashboard_panels(dash):
        if p["id"] in ids:
            fail(f"{DASHBOARD}: panel id {p['id']} is used twice")
        ids.add(p["id"])
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"{DASHBOARD}: panels {cells[(x, y)]} and {p['id']} overlap at x={x} y={y}")
                    break
                cells[(x, y)] = p["id"]
        if g["x"] + g["w"] > 24:
            fail(f"{DASHBOARD}: panel {p['id']} is wider than the grid")
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") not in uids:
            fail(f"{DASHBOARD}: panel {p['id']} uses datasource {p.get('datasource')}, not a provisioned one ({uids})")
        if not p.get("targets"):
            fail(f"{DASHBOARD}: panel {p['id']} ({p['title']}) has no query")
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                fail(f"{DASHBOARD}: panel {p['id']} uses a variable this check cannot replace: {t['expr']}")
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})
    with open(args.rules_out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
    ok(f"{DASHBOARD}: {len(ids)} panels, {len(rules)} queries written as recording rules for promtool")
    done()


def metric_names(expr):
    return set(re.findall(r"\bleadscore_[a-z0-9_]+\b", expr))


def used_queries():
    """(where, expression) for every query of the dashboard and the alert rules."""
    out = []
    with open(path(DASHBOARD), encoding="utf-8") as f:
        dash = json.load(f)
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            out.append((f"{DASHBOARD} panel {p['id']} ({p['title']})", t["expr"]))
    for group in load_yaml_docs(ALERTS)[0]["groups"]:
        for rule in group["rules"]:
            out.append((f"{ALERTS} {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def base_metric(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in AGREED_METRICS:
            return name[: -len(suffix)], suffix
    return name, ""


def cmd_metric_names(args):
    used = set()
    for where, expr in used_queries():
        for name in metric_names(expr):
            base, suffix = base_metric(name)
            used.add(base)
            if base not in AGREED_METRICS:
                fail(f"{where}: {name} is not one of the agreed metric names (docs/operations.md, Metrics)")
            elif suffix and AGREED_METRICS[base] != "histogram":
                fail(f"{where}: {name}: {base} is a {AGREED_METRICS[base]}, it has no {suffix}")
            elif AGREED_METRICS[base] == "histogram" and not suffix:
                fail(f"{where}: {name} is a histogram: query {name}_bucket / _sum / _count")
    unused = sorted(set(AGREED_METRICS) - used)
    ok(f"{len(used)} agreed metric names used by the dashboard and the alerts"
       + (f"; not shown anywhere: {unused}" if unused else ""))
    done()


def cmd_otel(args):
    cfg = load_yaml_docs(OTEL)[0]
    for name, pipeline in cfg["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                if component not in (cfg.get(kind) or {}):
                    fail(f"{OTEL}: pipeline {name} uses {kind[:-1]} {component}, which is not defined")
    http = cfg["receivers"]["otlp"]["protocols"].get("http", {}).get("endpoint", "")
    if not http.endswith(":4318"):
        fail(f"{OTEL}: the OTLP/HTTP receiver must listen on :4318 (what OTEL_EXPORTER_OTLP_ENDPOINT points at)")
    ok(f"{OTEL}: pipelines {sorted(cfg['service']['pipelines'])} use defined components")
    done()


# --------------------------------------------------------------------------------------------------------- build

def cmd_build(args):
    """Runs each Dockerfile's cargo command (profile of the target dir, not --release) on a clean copy of the
    build context; and checks that the manifests-only copy of the deps stage, with its stand-in sources, is a
    workspace cargo can read."""
    target_dir, profile = os.path.split(os.path.abspath(args.bin_dir))
    if profile not in ("debug", "release"):
        print(f"  skip {args.bin_dir} is not a cargo target directory's debug/ or release/: the Dockerfiles' cargo "
              f"commands are not run (point BIN_DIR at TARGET/debug to run them)")
        return
    with tempfile.TemporaryDirectory(prefix="leadscore-deploy-build.") as tmp:
        ctx = os.path.join(tmp, "context")
        files = dockerctx.copy_context(ROOT, ctx)
        ok(f"build context through .dockerignore: {len(files)} files")
        seen = set()
        for rel in DOCKERFILES:
            facts = image_facts(rel)
            # The deps stage: only the manifests it copies, then its stand-in script.
            deps = os.path.join(tmp, f"deps-{rel}")
            for words in facts["deps_copies"]:
                for src in words[:-1]:
                    # Every deps-stage COPY names a directory (`./`, `crates/x/`) as its destination.
                    dst = os.path.join(deps, words[-1], os.path.basename(src))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    with open(os.path.join(ctx, src), "rb") as a, open(dst, "wb") as b:
                        b.write(a.read())
            if facts["stub_script"]:
                r = subprocess.run(["sh", "-c", facts["stub_script"]], cwd=deps, capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"{rel}: the deps stage's stand-in script fails: {r.stderr.strip()}")
                host = re.search(r"host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True,
                                                                  text=True).stdout).group(1)
                r = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
                                    "--filter-platform", host], cwd=deps, capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"{rel}: the deps stage (manifests + stand-ins) is not a workspace cargo can build: "
                         f"{r.stderr.strip()[-600:]}")
                else:
                    ok(f"{rel}: deps stage (manifests and stand-in sources only) is a valid workspace")
            for c in facts["cargo"]:
                words = shlex.split(c["cmd"])
                if profile == "debug":
                    words = [w for w in words if w != "--release"]
                elif "--release" not in words:
                    words.append("--release")
                key = " ".join(words)
                if key in seen:
                    continue
                seen.add(key)
                print(f"  ..   {rel}:{c['line']} (stage {c['stage']}): {key}", flush=True)
                env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
                r = subprocess.run(words, cwd=ctx, env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"{rel}:{c['line']}: `{key}` fails on a clean copy of the build context "
                         f"(a file it needs is missing or left out by .dockerignore):\n{r.stderr[-3000:]}")
                else:
                    rebuilt = re.findall(r"Compiling (\S+)", r.stderr)
                    ok(f"{key}: builds on the clean copy ({'rebuilt: ' + ', '.join(rebuilt) if rebuilt else 'fresh'})")
    done()


# ---------------------------------------------------------------------------------------------------------- libc

def glibc_needed(binary):
    out = subprocess.run(["objdump", "-T", binary], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", out)}
    needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    libs = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed))
    return max(versions) if versions else None, libs


def cmd_libc(args):
    for rel in DOCKERFILES:
        facts = image_facts(rel)
        for name, t in facts["targets"].items():
            if not t["cmd"] or not t["bin_copies"]:
                continue
            bins = image_bins(facts, t)
            base = BASE_GLIBC.get(t["image"])
            have = tuple(int(x) for x in base.split(".")) if base else None
            for b in sorted(bins):
                binary = os.path.join(args.bin_dir, b)
                if not os.path.exists(binary):
                    fail(f"{binary}: missing (build the binaries first: cargo build --bins)")
                    continue
                need, libs = glibc_needed(binary)
                shown = ".".join(map(str, need)) if need else "none"
                if have and need and need > have:
                    fail(f"{rel} target {name}: {b} needs glibc {shown}, {t['image']} has {base}: build on the same "
                         f"Debian release as the runtime image")
                extra = sorted(libs - BASE_LIBS)
                if extra:
                    fail(f"{rel} target {name}: {b} links {extra}, which {t['image']} does not have: install them in "
                         f"the runtime stage or link statically")
                ok(f"{rel} target {name}: {b} needs glibc {shown} (image: {base}), links {sorted(libs)}")
    done()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("dockerfiles")
    p.add_argument("context_copy")
    p.set_defaults(run=cmd_dockerfiles)
    p = sub.add_parser("copy-context")
    p.add_argument("dest")
    p.set_defaults(run=lambda a: print(f"  ok   {len(dockerctx.copy_context(ROOT, a.dest))} files in the build context"))
    p = sub.add_parser("compose")
    p.add_argument("out")
    p.set_defaults(run=cmd_compose)
    p = sub.add_parser("k8s")
    p.set_defaults(run=cmd_k8s)
    p = sub.add_parser("keda")
    p.add_argument("query_out")
    p.set_defaults(run=cmd_keda)
    p = sub.add_parser("dashboard")
    p.add_argument("rules_out")
    p.set_defaults(run=cmd_dashboard)
    p = sub.add_parser("metric-names")
    p.set_defaults(run=cmd_metric_names)
    p = sub.add_parser("otel")
    p.set_defaults(run=cmd_otel)
    p = sub.add_parser("build")
    p.add_argument("bin_dir")
    p.set_defaults(run=cmd_build)
    p = sub.add_parser("libc")
    p.add_argument("bin_dir")
    p.set_defaults(run=cmd_libc)
    p = sub.add_parser("runtime")
    p.add_argument("bin_dir")
    p.add_argument("query")
    p.set_defaults(run=lambda a: __import__("runtime").run(a))
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
