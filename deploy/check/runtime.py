"""The runtime step of scripts/deploy-check: docker-compose.yml's leadscore services, run from the real binaries
on loopback, exactly as the compose file (and deploy/compose/example.env) configure them, except for addresses:
compose's service names become the local PostgreSQL (a throwaway database), Redis, the fake LLM and an OTLP
sink, and every listener moves to a spare loopback port.

Checks, in order: every flag and environment variable the compose services and the Kubernetes containers use is
one the binary documents (`--help`); migrate exits 0; the API and two workers become ready (/readyz 200 on their
operations listeners); each image's HEALTHCHECK command exits 0 against a ready process and non-zero against
nothing; a small real run through the API (bootstrap key, upload, score) finishes; every metric the dashboard
and the alert rules use appears in the processes' /metrics, with the labels they filter and group by; no secret
appears in any log; SIGTERM stops each process within its grace period; spans reached the OTLP endpoint; the KEDA
query returns the number of claimable jobs on a seeded queue and its plan reads the partial index.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

import deploycheck as dc
from deploycheck import fail, ok

READY_SECS = 60
RUN_SECS = 120
SCRAPE_SECS = 20
WORKERS = 2
LEADS = 24


def spare_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def psql(url, sql):
    r = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"psql: {r.stderr.strip()}")
    return r.stdout.strip()


def redis_delete_prefix(url, prefix):
    """Deletes the keys this check's processes wrote (the verdict cache keeps them for days otherwise)."""
    rest = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=5) as s:
        f = s.makefile("rb")

        def command(*words):
            s.sendall(b"".join([f"*{len(words)}\r\n".encode()] +
                               [f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words]))
            return read(f)

        cursor = "0"
        while True:
            cursor, keys = command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
            cursor = cursor.decode()
            if keys:
                command("DEL", *[k.decode() for k in keys])
            if cursor == "0":
                return


def read(f):
    """One RESP reply."""
    line = f.readline().rstrip(b"\r\n")
    kind, body = line[:1], line[1:]
    if kind == b"*":
        return [read(f) for _ in range(int(body))]
    if kind == b"$":
        n = int(body)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"-":
        raise OSError(body.decode())
    return body


class TraceSink:
    """An OTLP/HTTP endpoint that accepts everything and counts the trace exports it received."""

    def __init__(self):
        sink = self
        self.paths = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                sink.paths.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Processes:
    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = {}

    def start(self, name, argv, env):
        log = open(os.path.join(self.logdir, f"{name}.log"), "wb")
        self.procs[name] = (subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        return self.procs[name][0]

    def log(self, name, lines=30):
        with open(os.path.join(self.logdir, f"{name}.log"), encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def stop_all(self):
        for p, log in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()


def get(url, key=None, timeout=5):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def call(base, key, method, route, body=None, content_type="application/json"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + route, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


# -------------------------------------------------------------------------------------------- flags and variables

def help_text(bin_dir, argv):
    words = [os.path.join(bin_dir, argv[0])]
    words += [w for w in argv[1:2] if not w.startswith("-")]  # a subcommand (`leadscore migrate`)
    r = subprocess.run(words + ["--help"], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    if r.returncode != 0:
        return None, (r.stdout + r.stderr).strip()
    return r.stdout, None


def check_documented(where, bin_dir, argv, env_names):
    """Each flag in `argv` and each variable in `env_names` is one `argv[0] --help` documents."""
    if not os.path.exists(os.path.join(bin_dir, argv[0])):
        fail(f"{where}: runs {argv[0]}, which is not among the binaries in {bin_dir}")
        return
    text, err = help_text(bin_dir, argv)
    if text is None:
        fail(f"{where}: `{' '.join(argv[:2])} --help` fails: {err}")
        return
    flags = {w.split("=")[0] for w in argv[1:] if w.startswith("--")}
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"\b", text))
    unknown = sorted(v for v in env_names if f"[env: {v}" not in text)
    if missing:
        fail(f"{where}: `{' '.join(argv[:2])}` has no flag {', '.join(missing)}")
    if unknown:
        fail(f"{where}: `{' '.join(argv[:2])}` reads no variable {', '.join(unknown)} (not in its --help)")
    if not missing and not unknown:
        ok(f"{where}: `{' '.join(argv)}` documents its {len(flags)} flags and {len(env_names)} variables")


def k8s_command_lines():
    """(where, argv, env names) of every container of the Kubernetes manifests."""
    docs = dc.k8s_docs()
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in docs if d.get("kind") == "ConfigMap"}
    out = []
    for f, d in docs:
        if d.get("kind") not in ("Deployment", "Job"):
            continue
        _, cs = dc.containers(d)
        for c in cs:
            names = {e["name"] for e in c.get("env", [])}
            for src in c.get("envFrom", []):
                names |= set(configmaps.get(src.get("configMapRef", {}).get("name"), {}))
            argv = c.get("command", []) + c.get("args", [])
            out.append((f"{f} {d['metadata']['name']}/{c['name']}", argv, names))
    return out


# ------------------------------------------------------------------------------------------- compose on loopback

class Loopback:
    """Compose's addresses, mapped to this machine."""

    def __init__(self, db_url, redis_url, sink_port):
        self.db_url, self.redis_url = db_url, redis_url
        self.ports = {}  # compose port -> loopback port, for 0.0.0.0:PORT listeners
        self.hosts = {"otel-collector:4318": f"127.0.0.1:{sink_port}"}

    def listen(self, value):
        def one(m):
            port = self.ports.setdefault(m.group(1), spare_port())
            return f"127.0.0.1:{port}"

        return re.sub(r"0\.0\.0\.0:(\d+)", one, value)

    def env(self, name, value):
        if name == "DATABASE_URL":
            return self.db_url
        if name == "REDIS_URL":
            return self.redis_url
        for host, local in self.hosts.items():
            value = value.replace(host, local)
        for service in ("postgres", "redis", "fake-llm", "otel-collector", "jaeger", "prometheus", "grafana", "api"):
            if re.search(rf"//{service}[:/]", value):
                raise RuntimeError(f"{name}={value}: no loopback address for compose service {service}")
        return self.listen(value)


def compose_services(interp_env):
    """name -> (argv, environment after interpolation) of the compose services that run a leadscore binary."""
    with open(dc.path(dc.COMPOSE), encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out = {}
    for name, s in raw["services"].items():
        argv = dc.interpolate(s.get("command"), interp_env)
        if isinstance(argv, str):
            argv = argv.split()
        if argv and argv[0].startswith("leadscore"):
            out[name] = (argv, dc.service_environment(s, interp_env), s)
    return out


def grace_seconds(service, name):
    """The shorter of the compose stop_grace_period and the Kubernetes terminationGracePeriodSeconds."""
    grace = dc.parse_duration(service.get("stop_grace_period", "10s"))
    for _, d in dc.k8s_docs():
        if d.get("kind") == "Deployment" and d["metadata"]["name"] == f"leadscore-{name}":
            grace = min(grace, d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))
    return grace


# ---------------------------------------------------------------------------------------------------- the checks

def wait_ready(procs, name, proc, port):
    deadline = time.time() + READY_SECS
    last = "no answer"
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"{name} exited with {proc.returncode} before it was ready; its log:\n{procs.log(name)}")
            return False
        try:
            status, body = get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if status == 200:
                ok(f"{name}: /readyz 200 on 127.0.0.1:{port}")
                return True
        except urllib.error.HTTPError as e:
            last = f"{e.code} {e.read().decode('utf-8', 'replace')[:300]}"
        except OSError as e:
            last = str(e)
        time.sleep(0.3)
    fail(f"{name}: /readyz on 127.0.0.1:{port} not 200 within {READY_SECS} s (last: {last}); its log:\n"
         f"{procs.log(name)}")
    return False


def healthchecks(bin_dir, ops_ports):
    dead = spare_port()
    for rel in dc.DOCKERFILES:
        facts = dc.image_facts(rel)
        hc = facts["targets"][facts["final"]]["healthcheck"] or ""
        m = re.search(r"CMD (\[.*\])", hc)
        if not m:
            continue  # the dockerfiles step reports it
        argv = json.loads(m.group(1))
        argv[0] = os.path.join(bin_dir, argv[0])
        name = "api" if rel.endswith(".api") else "worker-1"
        url = f"http://127.0.0.1:{ops_ports[name]}/readyz"
        r = subprocess.run(argv + [url], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            fail(f"{rel}: HEALTHCHECK `{' '.join(argv[1:])} {url}` exits {r.returncode} against a ready {name}: "
                 f"{(r.stdout + r.stderr).strip()}")
            continue
        r2 = subprocess.run(argv + [f"http://127.0.0.1:{dead}/readyz"], capture_output=True, text=True, timeout=30)
        if r2.returncode == 0:
            fail(f"{rel}: HEALTHCHECK exits 0 against a port nobody listens on: it cannot detect anything")
            continue
        ok(f"{rel}: HEALTHCHECK {json.loads(m.group(1))} exits 0 against {name}, {r2.returncode} against nothing")


def real_run(base, key):
    offer = call(base, key, "POST", "/v1/offers", {
        "name": "Deploy check", "value_props": ["Fewer manual steps", "Faster onboarding"],
        "ideal_use_cases": ["B2B SaaS", "Fintech"]})
    rows = ["name,role,company,industry,location,linkedin_bio"]
    roles = ["CEO", "Head of Growth", "CTO", "Marketing Manager", "Intern", "VP Sales"]
    for i in range(LEADS):
        rows.append(f"Lead {i},{roles[i % len(roles)]},Company {i},{'B2B SaaS' if i % 2 else 'Retail'},"
                    f"Berlin,Works on growth and onboarding at company {i}")
    upload = call(base, key, "POST", "/v1/leads/upload", ("\n".join(rows) + "\n").encode(), "text/csv")
    run = call(base, key, "POST", "/v1/leads/score", {"offer_id": offer["id"], "upload_id": upload["upload_id"]})
    deadline = time.time() + RUN_SECS
    status = {}
    while time.time() < deadline:
        status = call(base, key, "GET", f"/v1/runs/{run['id']}")
        if status.get("finished_at"):
            ok(f"run {run['id']}: {status.get('status')} with {LEADS} leads, counts {status.get('job_counts')}")
            return True
        time.sleep(0.5)
    fail(f"run {run['id']} did not finish within {RUN_SECS} s: {json.dumps(status)[:500]}")
    return False


def _is_json_object(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def parse_metrics(text):
    """sample name -> set of label names seen on it (label values may hold `}`: route templates do)."""
    out = {}
    label = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
        if not m or line.startswith("#"):
            continue
        names, rest = set(), line[m.end():]
        if rest.startswith("{"):
            rest = rest[1:]
            while (lm := label.match(rest)) is not None:
                names.add(lm.group(1))
                rest = rest[lm.end():]
        out.setdefault(m.group(1), set()).update(names)
    return out


# Labels Prometheus adds when it scrapes (and histograms' bucket label): not in the processes' own output.
SCRAPE_LABELS = {"instance", "job", "le"}


def query_labels(expr):
    """(metric, label names matched in its selector) and the label names of by/without clauses."""
    selectors = [(m.group(1), set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2) or "")))
                 for m in re.finditer(r"\b(leadscore_[a-z0-9_]+)(\{[^}]*\})?", expr)]
    grouped = set()
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        grouped |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    return selectors, grouped


def check_metrics(ports):
    """Every metric (and label) the dashboard and the alert rules use appears in the scrapes."""
    deadline = time.time() + SCRAPE_SECS
    while True:
        seen = {}
        for name, port in ports.items():
            try:
                _, text = get(f"http://127.0.0.1:{port}/metrics")
            except (OSError, urllib.error.HTTPError) as e:
                fail(f"{name}: GET /metrics on 127.0.0.1:{port} failed: {e}")
                return
            for metric, labels in parse_metrics(text).items():
                seen.setdefault(metric, set()).update(labels)
        problems = []
        for where, expr in dc.used_queries():
            selectors, grouped = query_labels(expr)
            for metric, labels in selectors:
                if metric not in seen and metric.endswith("_bucket") and metric[:-7] in seen:
                    problems.append(f"{where}: {metric[:-7]} is exported without buckets (a summary): "
                                    f"metrics-exporter-prometheus needs buckets set for it to be a histogram")
                elif metric not in seen:
                    problems.append(f"{where}: {metric} is in no /metrics scrape of {', '.join(ports)}")
                elif labels - seen[metric] - SCRAPE_LABELS:
                    problems.append(f"{where}: {metric} has no label {sorted(labels - seen[metric] - SCRAPE_LABELS)} "
                                    f"(scraped: {sorted(seen[metric])})")
            on_metrics = set().union(*(seen.get(m, set()) for m, _ in selectors)) if selectors else set()
            if grouped - on_metrics - SCRAPE_LABELS and all(m in seen for m, _ in selectors):
                problems.append(f"{where}: groups by {sorted(grouped - on_metrics - SCRAPE_LABELS)}, which no metric "
                                f"of the query carries")
        if not problems or time.time() > deadline:
            break
        time.sleep(1)  # gauges are refreshed periodically: give them a moment
    for p in sorted(set(problems)):
        fail(p + " (a counter or histogram should be registered at start, with zero, so that it is there before "
                 "its first event)" if "in no /metrics" in p else p)
    if not problems:
        used = {m for _, e in dc.used_queries() for m in dc.metric_names(e)}
        ok(f"all {len(used)} metric series the dashboard and the alerts use are in the scrapes of "
           f"{', '.join(ports)}, with their labels")


def keda_query(db_url, query_file):
    """The ScaledObject's query on the real schema: seeded runs in every state, the count it returns, its plan."""
    with open(query_file, encoding="utf-8") as f:
        query = f.read()
    seed = """
    begin;
    insert into runs (id, workspace_id, offer_id, offer_snapshot, status, stop_reason) values
      ('kc-running', 'default', 'o', '{}', 'running', null),
      ('kc-queued', 'default', 'o', '{}', 'queued', null),
      ('kc-paused', 'default', 'o', '{}', 'paused', 'requested'),
      ('kc-blocked', 'default', 'o', '{}', 'blocked', 'provider_rejected'),
      ('kc-cancelling', 'default', 'o', '{}', 'cancelling', null),
      ('kc-completed', 'default', 'o', '{}', 'completed', null);
    -- claimable: 3000 due queued + 1500 due retrying (kc-running), 500 due queued (kc-queued) = 5000
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-running', 'a' || g, 'queued', 0, 3, 0 from generate_series(1, 3000) g;
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-running', 'b' || g, 'retrying', 1, 3, 0 from generate_series(1, 1500) g;
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-queued', 'c' || g, 'queued', 0, 3, 0 from generate_series(1, 500) g;
    -- not claimable: a retry due in an hour, finished jobs, jobs of stopped or finishing runs
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-running', 'd' || g, 'retrying', 1, 3, 9999999999999 from generate_series(1, 2000) g;
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-running', 'e' || g, 'succeeded', 1, 3, 0 from generate_series(1, 100000) g;
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select r, 'f' || g, 'queued', 0, 3, 0
      from unnest(array['kc-paused', 'kc-blocked', 'kc-cancelling']) r, generate_series(1, 10000) g;
    insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at)
      select 'kc-completed', 'g' || g, 'failed', 3, 3, 0 from generate_series(1, 10000) g;
    commit;
    analyze runs;
    analyze jobs;
    """
    psql(db_url, seed)
    got = psql(db_url, query)
    if got != "5000":
        fail(f"KEDA query returned {got!r} on the seeded queue; expected 5000 (3000 + 1500 + 500 claimable; "
             f"paused, blocked, cancelling, finished, future and succeeded jobs left out)")
    else:
        ok("KEDA query returns 5000 on 141,000 seeded jobs: exactly the claimable ones")
    plan = psql(db_url, "explain " + query)
    if "Seq Scan on jobs" in plan or not re.search(r"Index (Only )?Scan.* on jobs|Bitmap Index Scan on jobs_", plan):
        fail(f"the KEDA query's plan reads the jobs table without a partial index:\n{plan}")
    # A large backlog (the case that matters at 1M jobs): the count stops at the cap, reading jobs_claimable in
    # run_at order, and never touches the finished or future jobs.
    psql(db_url, "insert into jobs (run_id, lead_id, status, attempts, max_attempts, run_at) "
                 "select 'kc-running', 'h' || g, 'queued', 0, 3, 0 from generate_series(1, 200000) g; analyze jobs;")
    got = psql(db_url, query)
    plan = psql(db_url, "explain (analyze, buffers) " + query)
    timing = re.search(r"Execution Time: ([\d.]+) ms", plan)
    if got != "10000":
        fail(f"KEDA query returned {got!r} with 205,000 claimable jobs; expected its cap, 10000")
    elif "Seq Scan on jobs" in plan or "jobs_claimable" not in plan:
        fail(f"with a large backlog the KEDA query's plan does not read jobs_claimable:\n{plan}")
    else:
        ok(f"KEDA query returns its cap (10000) on 341,000 jobs in {timing.group(1) if timing else '?'} ms, "
           f"reading jobs through the partial index jobs_claimable")


def run(args):
    bin_dir = os.path.abspath(args.bin_dir)
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    if not server.startswith("postgres"):
        server = "postgres://postgres@127.0.0.1:5432/test"
    server = server.rsplit("/", 1)[0]
    db = f"leadscore_deploy_check_{os.getpid()}"
    db_url = f"{server}/{db}"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    try:
        psql(f"{server}/postgres", f'create database "{db}"')
    except RuntimeError as e:
        fail(f"cannot create a throwaway database on {server} (PostgreSQL must run: scripts/test starts it): {e}")
        dc.done()
    logdir = tempfile.mkdtemp(prefix="leadscore-deploy-runtime.")
    procs = Processes(logdir)
    sink = TraceSink()
    try:
        _run(bin_dir, db_url, redis_url, procs, sink, args.query)
    except (RuntimeError, subprocess.TimeoutExpired, urllib.error.URLError, OSError) as e:
        fail(f"runtime check stopped: {e}")
    finally:
        procs.stop_all()
        sink.close()
        try:
            redis_delete_prefix(redis_url, f"deploy-check-{os.getpid()}:")
        except OSError as e:
            print(f"  note: could not delete this run's Redis keys: {e}")
        try:
            psql(f"{server}/postgres", f'drop database if exists "{db}" with (force)')
        except RuntimeError as e:
            print(f"  note: could not drop {db}: {e}")
        if dc.errors:
            print(f"  logs kept in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    dc.done()


def _run(bin_dir, db_url, redis_url, procs, sink, query_file):
    key = secrets.token_hex(32)
    provider_key = "sk-deploycheck-" + secrets.token_hex(12)
    interp = dc.read_env_file(dc.EXAMPLE_ENV)
    interp.update(LEADSCORE_BOOTSTRAP_KEY=key, OPENAI_API_KEY=provider_key)
    services = compose_services(interp)
    for need in ("migrate", "api", "worker", "fake-llm"):
        if need not in services:
            fail(f"{dc.COMPOSE}: no service {need} running a leadscore binary")
    if dc.errors:
        return

    # Every flag and variable the files use is documented by the binary that gets it.
    injected = {"api": {"LEADSCORE_LISTEN", "LEADSCORE_OPS_LISTEN", "LEADSCORE_REDIS_PREFIX"},
                "worker": {"LEADSCORE_OPS_LISTEN", "LEADSCORE_REDIS_PREFIX"}}
    for name, (argv, _, service) in services.items():
        declared = set(service.get("environment") or {})
        check_documented(f"{dc.COMPOSE} {name}", bin_dir, argv, declared | injected.get(name, set()))
    for where, argv, names in k8s_command_lines():
        check_documented(where, bin_dir, argv, names)
    if dc.errors:
        return

    loop = Loopback(db_url, redis_url, sink.port)
    fake_argv, _, _ = services["fake-llm"]
    fake_argv = [os.path.join(bin_dir, fake_argv[0])] + [loop.listen(a) for a in fake_argv[1:]]
    loop.hosts["fake-llm:8090"] = f"127.0.0.1:{loop.ports.get('8090', 0)}"
    base_env = {"PATH": os.environ["PATH"]}
    fake = procs.start("fake-llm", fake_argv, base_env)

    def environment(name, extra):
        _, env, _ = services[name]
        out = dict(base_env)
        out.update({k: loop.env(k, v) for k, v in env.items()})
        out["LEADSCORE_REDIS_PREFIX"] = f"deploy-check-{os.getpid()}:"
        out.update(extra)
        return out

    deadline = time.time() + 10
    while not port_open(int(loop.ports["8090"])) and time.time() < deadline and fake.poll() is None:
        time.sleep(0.1)
    if not port_open(int(loop.ports["8090"])):
        fail(f"fake-llm did not listen: {procs.log('fake-llm')}")
        return

    argv = services["migrate"][0]
    r = subprocess.run([os.path.join(bin_dir, argv[0])] + argv[1:], env=environment("migrate", {}),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"migrate: `{' '.join(argv)}` exits {r.returncode}: {(r.stdout + r.stderr).strip()[-1500:]}")
        return
    ok(f"migrate: `{' '.join(argv)}` exits 0")

    ops, started = {}, {}
    api_port = spare_port()
    ops["api"] = spare_port()
    argv = services["api"][0]
    started["api"] = procs.start("api", [os.path.join(bin_dir, argv[0])] + argv[1:], environment("api", {
        "LEADSCORE_LISTEN": f"127.0.0.1:{api_port}", "LEADSCORE_OPS_LISTEN": f"127.0.0.1:{ops['api']}"}))
    for i in range(1, WORKERS + 1):
        name = f"worker-{i}"
        ops[name] = spare_port()
        argv = services["worker"][0]
        started[name] = procs.start(name, [os.path.join(bin_dir, argv[0])] + argv[1:], environment("worker", {
            "LEADSCORE_OPS_LISTEN": f"127.0.0.1:{ops[name]}"}))
    if not all(wait_ready(procs, n, p, ops[n]) for n, p in started.items()):
        return

    healthchecks(bin_dir, ops)
    if not real_run(f"http://127.0.0.1:{api_port}", key):
        return
    check_metrics(ops)

    # SIGTERM: each process drains and exits 0 within its grace period.
    for name, p in started.items():
        p.send_signal(signal.SIGTERM)
    t0 = time.time()
    for name, p in started.items():
        service = services["api" if name == "api" else "worker"][2]
        grace = grace_seconds(service, "api" if name == "api" else "worker")
        try:
            code = p.wait(timeout=max(0.1, grace - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            fail(f"{name} still runs {grace:g} s after SIGTERM (the grace period): the orchestrator would kill it")
            continue
        if code != 0:
            fail(f"{name} exited {code} after SIGTERM; its log:\n{procs.log(name)}")
        else:
            ok(f"{name}: SIGTERM -> exit 0 in {time.time() - t0:.1f} s (grace {grace:g} s)")
    fake.terminate()

    # Secrets never appear in logs.
    for name in list(started) + ["fake-llm"]:
        with open(os.path.join(procs.logdir, f"{name}.log"), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for label, secret in (("LEADSCORE_BOOTSTRAP_KEY", key), ("OPENAI_API_KEY", provider_key)):
            if secret in text:
                fail(f"{name}'s log contains the value of {label}")
    ok("no log line holds the bootstrap key or the provider key")

    # The log format the compose file asks for.
    for name in started:
        fmt = services["api" if name == "api" else "worker"][1].get("LEADSCORE_LOG_FORMAT")
        if fmt != "json":
            continue
        with open(os.path.join(procs.logdir, f"{name}.log"), encoding="utf-8", errors="replace") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        bad = [line for line in lines if not _is_json_object(line)]
        if bad:
            fail(f"{name}: LEADSCORE_LOG_FORMAT=json, but {len(bad)} of {len(lines)} log lines are not JSON objects, "
                 f"e.g. {bad[0][:200]!r}")
        else:
            ok(f"{name}: all {len(lines)} log lines are JSON (LEADSCORE_LOG_FORMAT=json)")

    if "OTEL_EXPORTER_OTLP_ENDPOINT" in services["api"][1]:
        traces = [p for p in sink.paths if p.endswith("/v1/traces")]
        if not traces:
            fail(f"OTEL_EXPORTER_OTLP_ENDPOINT is set (example.env) but no span reached it (requests: {sink.paths})")
        else:
            ok(f"{len(traces)} OTLP/HTTP trace exports reached the collector's address")

    keda_query(db_url, query_file)
