"""End to end: the image's job, without the image.

peerprep-init runs as PID 1 of a fresh pid namespace inside a test bed
(its own network and mount namespaces), with the real
deploy/nginx/default.conf.template, the real deploy/peerprep-init.ini and
Debian's nginx, in front of six stub backends reached by their
*.peerprep-prod.internal names. Only what the container would get from its
image and task definition differs: paths (set through PEERPREP_INIT_*
variables) and a minimal nginx.conf whose http block includes the rendered
folder. The placeholder site is bind-mounted at /usr/share/nginx/html.

The deploy files (compose, ECS task definition, Dockerfile, INI) are also
checked here for consistency with the template and with each other.

PEERPREP_E2E_DIRECT_NGINX=1 runs nginx directly, with the template rendered
by this file instead of the init: it tells a template problem from an init
problem.
"""

import configparser
import gzip
import json
import fnmatch
import os
import re
import shlex
import signal
import threading
import time
from pathlib import Path

import pytest

import testbed
from pi import init_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
TEMPLATE_DIR = os.path.join(DEPLOY, "nginx")
TEMPLATE = os.path.join(TEMPLATE_DIR, "default.conf.template")
INI = os.path.join(DEPLOY, "peerprep-init.ini")
SITE = os.path.join(DEPLOY, "site")
DIRECT = os.environ.get("PEERPREP_E2E_DIRECT_NGINX") == "1"
ROUTES = {svc: "/%s-api/" % svc for svc in testbed.SERVICES}

REF = re.compile(r"\$\{(NGINX_[A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Variables the init computes itself (SPEC §3), with the value direct mode
# gives them: nothing to set in compose or the task definition.
BUILTINS = {"NGINX_LISTEN_IPV6": "255.255.255.255"}


def template_variables():
    """{variable: default or None} of every reference in the template."""
    with open(TEMPLATE) as f:
        return {m.group(1): m.group(2) for m in REF.finditer(f.read())
                if m.group(1) not in BUILTINS}


def render_py(env):
    """The subset of SPEC §3 the deploy template uses (direct mode only)."""
    with open(TEMPLATE) as f:
        text = f.read()
    return REF.sub(lambda m: env.get(m.group(1)) or m.group(2) or BUILTINS[m.group(1)], text)


class Stack:
    """A bed running the init (or, in direct mode, nginx) with the deploy
    template. `http_get(path)` asks nginx on 127.0.0.1:80 inside the bed."""

    def __init__(self, pi_binary, extra_env=None):
        self.bed = testbed.Bed().start()
        try:
            self._start(pi_binary, extra_env or {})
        except BaseException:
            self.stop()
            raise

    def _start(self, pi_binary, extra_env):
        bed = self.bed
        bed.bind_mount(SITE, "/usr/share/nginx/html")
        self.env = dict(bed.env())
        self.env.update(init_env(Path(bed.dir), TEMPLATE_DIR))
        self.out = self.env["PEERPREP_INIT_TEMPLATES_OUTPUT_DIR"]
        self.env.update(extra_env)
        self.log_path = os.path.join(bed.dir, "init.log")
        log = open(self.log_path, "wb")
        if DIRECT:
            with open(os.path.join(self.out, "default.conf"), "w") as f:
                f.write(render_py(self.env))
            argv = shlex.split(self.env["PEERPREP_INIT_NGINX_COMMAND"])
        else:
            argv = [pi_binary, "-c", INI]
        with log:
            self.init = bed.run(argv, env=self.env, new_pidns=True, stdout=log, stderr=log)
        try:
            testbed.deadline_poll("nginx and the health endpoint to be up", self._up, timeout=30)
        except TimeoutError as exc:
            raise AssertionError("%s\n--- init's output:\n%s" % (exc, self.log())) from None

    def _up(self):
        if self.init.poll() is not None:
            raise AssertionError("the init exited with %s:\n%s" % (self.init.returncode, self.log()))
        if DIRECT:
            return self.bed.port_open("127.0.0.1", 80)
        # Liveness, not /health: readiness must not hinge on the endpoint
        # that test_health_through_nginx is there to judge.
        try:
            return self.bed.http_get("http://127.0.0.1:8081/health/live", timeout=2).status == 200 \
                and self.bed.port_open("127.0.0.1", 80)
        except OSError:
            return False

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-6000:]

    def http_get(self, path, headers=None, **kw):
        return self.bed.http_get("http://127.0.0.1" + path, headers=headers, **kw)

    def stop(self):
        self.bed.stop()


@pytest.fixture(scope="module")
def stack(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces and mounts)")
    s = Stack(None if DIRECT else request.getfixturevalue("pi_binary"))
    try:
        yield s
    finally:
        s.stop()


def index_html():
    with open(os.path.join(SITE, "index.html"), "rb") as f:
        return f.read()


def asset_path():
    html = index_html().decode()
    m = re.search(r'src="(/assets/app-[0-9a-f]+\.js)"', html)
    assert m, "index.html names no hashed bundle"
    return m.group(1)


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("svc", testbed.SERVICES)
def test_route_strips_prefix_and_keeps_query(stack, svc):
    r = stack.http_get(ROUTES[svc] + "api/items/42?a=1&b=x%20y&c=",
                       headers={"Host": "peerprep.test", "X-Forwarded-Proto": "https"})
    assert r.status == 200, r
    body = r.json()
    assert body["service"] == svc
    assert body["path"] == "/api/items/42"
    assert body["query"] == "a=1&b=x%20y&c="
    assert body["host"] == "peerprep.test"
    assert body["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert body["headers"]["x-real-ip"] == "127.0.0.1"
    assert body["headers"]["x-forwarded-proto"] == "https"
    # No wildcard CORS: the browser calls these on the SPA's own origin.
    assert r.header("Access-Control-Allow-Origin") is None


@pytest.mark.parametrize("svc", testbed.SERVICES)
def test_route_root_and_methods(stack, svc):
    r = stack.http_get(ROUTES[svc])
    assert (r.status, r.json()["path"], r.json()["query"]) == (200, "/", "")
    r = stack.bed.http("POST", "http://127.0.0.1" + ROUTES[svc] + "login", body=b'{"u":"a"}',
                       headers={"Content-Type": "application/json"})
    assert (r.json()["method"], r.json()["path"], r.json()["body"]) == ("POST", "/login", '{"u":"a"}')
    # Without the trailing slash nginx redirects to the prefix.
    r = stack.http_get(ROUTES[svc].rstrip("/"))
    assert r.status == 301 and r.header("Location").endswith(ROUTES[svc])


def test_proxied_json_is_gzipped(stack):
    r = stack.http_get(ROUTES["question-service"] + "q?pad=" + "x" * 2000,
                       headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body))["service"] == "question-service"


@pytest.mark.parametrize("svc", testbed.WS_SERVICES)
def test_websocket_upgrade_and_echo(stack, svc):
    with stack.bed.websocket("ws://127.0.0.1%ssocket?room=9" % ROUTES[svc]) as ws:
        assert ws.headers["x-stub-service"] == svc
        assert ws.headers["x-stub-path"] == "/socket?room=9"
        for i in range(3):
            ws.send("hello %s %d" % (svc, i))
            assert ws.recv() == (testbed.WS_TEXT, ("hello %s %d" % (svc, i)).encode())
        blob = os.urandom(100000)
        ws.send(blob)
        assert ws.recv() == (testbed.WS_BINARY, blob)


# --------------------------------------------------------------------------
# The SPA
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/index.html", "/some/deep/link", "/room/42?x=1"])
def test_spa_fallback_serves_index_uncached(stack, path):
    r = stack.http_get(path)
    assert r.status == 200
    assert r.body == index_html()
    assert r.header("Cache-Control") == "no-cache"
    assert r.header("Content-Type").startswith("text/html")
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("X-Frame-Options") == "SAMEORIGIN"


def test_hashed_assets_are_immutable(stack):
    r = stack.http_get(asset_path())
    assert r.status == 200
    with open(os.path.join(SITE, asset_path().lstrip("/")), "rb") as f:
        assert r.body == f.read()
    cc = r.header("Cache-Control")
    assert "immutable" in cc and "max-age=31536000" in cc
    assert "javascript" in r.header("Content-Type")
    assert r.header("X-Content-Type-Options") == "nosniff"
    # A missing bundle is a 404, never index.html cached for a year.
    r = stack.http_get("/assets/app-00000000.js")
    assert r.status == 404 and r.header("Cache-Control") is None


# --------------------------------------------------------------------------
# Health and lifecycle (need the init)
# --------------------------------------------------------------------------

needs_init = pytest.mark.skipif(DIRECT, reason="needs the init (PEERPREP_E2E_DIRECT_NGINX=1)")


@needs_init
def test_health_through_nginx(stack):
    r = stack.http_get("/health")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("application/health+json")
    h = r.json()
    assert h["status"] == "pass", h
    for svc in testbed.SERVICES:
        check = h["checks"]["upstream:" + testbed.host_var(svc)][0]
        assert check["status"] == "pass"
        assert check["componentId"] == "%s.peerprep-prod.internal" % svc
    r = stack.http_get("/health/live")
    assert r.status == 200 and r.json()["status"] == "pass"


@needs_init
def test_health_report_is_not_for_forwarded_clients(stack):
    """The report names internal hosts and addresses: a request a proxy
    forwarded (X-Forwarded-For, as the ALB adds to client requests) gets
    the liveness answer; the load balancer's own checks (no such header)
    get the report."""
    r = stack.http_get("/health", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status == 200, r
    assert r.json() == {"status": "pass"}
    assert b"peerprep-prod.internal" not in r.body
    r = stack.http_get("/health")
    assert "checks" in r.json()


@needs_init
def test_graceful_stop_finishes_in_flight_request(pi_binary):
    s = Stack(pi_binary)
    try:
        result = {}

        def slow():
            try:
                result["r"] = s.http_get(ROUTES["history-service"] + "slow?sleep_ms=4000", timeout=20)
            except Exception as exc:  # noqa: BLE001 - asserted below
                result["exc"] = exc

        t = threading.Thread(target=slow)
        t.start()
        testbed.deadline_poll("the slow request to reach the backend",
                              lambda: s.bed.stub_stats("history-service")["inflight"] == 1, timeout=15)
        t0 = time.monotonic()
        s.init.send_signal(signal.SIGTERM)
        # From the moment of SIGTERM (once the init has taken the signal)
        # the health endpoint says "stopping", while nginx still drains:
        # the 503 must come while the backend still holds the request (it
        # answers 4 s after it came), not once nginx is done with it. An
        # order, not a time bound: a loaded machine only shortens the
        # margin, which is seconds.
        testbed.deadline_poll(
            "/health to answer 503",
            lambda: s.bed.http_get("http://127.0.0.1:8081/health", timeout=1).status == 503, 10)
        assert s.bed.stub_stats("history-service")["inflight"] == 1, \
            "/health turned 503 only after the in-flight request was done"
        # New connections are refused once nginx has closed its listeners.
        testbed.deadline_poll("nginx to stop accepting", lambda: not s.bed.port_open("127.0.0.1", 80), 10)
        t.join(20)
        assert "exc" not in result, result.get("exc")
        assert result["r"].status == 200 and result["r"].json()["query"] == "sleep_ms=4000"
        assert s.init.wait(10) == 0, s.log()
        # The drain's 4 s and a loaded machine's slack, far below the
        # 25 s after which a stop that never sent the stop signal would end.
        assert time.monotonic() - t0 < 4 + 10
    finally:
        s.stop()


@needs_init
def test_address_change_reloads_nginx(pi_binary):
    """A backend moves: after the next re-check nginx sends its traffic to
    the new address (here, the question-service stub answers for user)."""
    s = Stack(pi_binary, {"PEERPREP_INIT_UPSTREAMS_RECHECK": "200ms"})
    try:
        assert s.http_get(ROUTES["user-service"]).json()["service"] == "user-service"
        s.bed.set_host("user-service.peerprep-prod.internal", "127.0.0.12")
        testbed.deadline_poll(
            "nginx to follow the new address",
            lambda: s.http_get(ROUTES["user-service"]).json()["service"] == "question-service", 30)
        assert s.init.poll() is None
    finally:
        s.stop()


# --------------------------------------------------------------------------
# Deploy files agree with the template and with each other
# --------------------------------------------------------------------------

SPEC_KEYS = {
    "templates": {"dir", "suffix", "output_dir", "stream_suffix", "stream_output_dir", "prefix"},
    "upstreams": {"hosts", "wait", "recheck"},
    "nginx": {"command", "test", "stop_signal", "stop_delay", "stop_timeout"},
    "health": {"listen", "path", "probe"},
    "log": {"format", "level"},
}


def seconds(value):
    m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", value.strip())
    assert m, value
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def ini():
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    cp.read(INI)
    return cp


def test_ini_uses_only_spec_keys_and_matches_the_template():
    cp = ini()
    for section in cp.sections():
        assert section in SPEC_KEYS, section
        assert set(cp[section]) <= SPEC_KEYS[section], (section, set(cp[section]) - SPEC_KEYS[section])
    assert cp["templates"]["dir"] == "/etc/nginx/templates"
    assert cp["templates"]["output_dir"] == "/etc/nginx/conf.d"
    with open(TEMPLATE) as f:
        text = f.read()
    listen = re.search(r"^\s*listen\s+(\d+);", text, re.M).group(1)
    assert cp["health"]["probe"] == "127.0.0.1:" + listen
    health_port = cp["health"]["listen"].rsplit(":", 1)[1]
    assert "proxy_pass http://127.0.0.1:%s;" % health_port in text


def test_template_variables_are_the_six_hosts():
    assert template_variables() == {testbed.host_var(s): s for s in testbed.SERVICES}


def test_retries_cover_connect_failures_never_read_timeouts():
    """A request is passed to a host's next address after a connect
    failure (every try's connect timeout fits the retry window), never
    after a read timeout (nginx's default 60 s, which the API routes keep,
    is past it): a hung backend must not hold a GET for 3 minutes and
    repeat its effect."""
    text = open(TEMPLATE).read()
    top = text.split("location /user-service-api/")[0]

    def value(name):
        m = re.findall(r"^\s*%s\s+(\S+);" % name, top, re.M)
        assert len(m) == 1, name
        return m[0]
    assert re.search(r"^\s*proxy_next_upstream\s+error timeout;", top, re.M)
    tries = int(value("proxy_next_upstream_tries"))
    window = seconds(value("proxy_next_upstream_timeout"))
    connect = seconds(value("proxy_connect_timeout"))
    assert connect * (tries - 1) < window < 60
    assert "proxy_read_timeout" not in top


def _compose():
    import yaml  # python3-yaml
    with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
        return yaml.safe_load(f)


def test_compose_file_parses_and_references_what_exists():
    c = _compose()
    fe = c["services"]["frontend"]
    build = fe["build"]
    context = os.path.normpath(os.path.join(DEPLOY, build["context"]))
    assert os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile")))
    assert build["target"] == "${FRONTEND_BUILD_STAGE:-development}"
    assert "frontend" in build["additional_contexts"]
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", open(os.path.join(context, "Dockerfile")).read(), re.M | re.I)
    assert {"development", "production"} <= set(stages)
    assert fe["healthcheck"]["test"] == ["CMD", "/peerprep-init", "health"]
    env = dict(e.split("=", 1) for e in fe["environment"]) if isinstance(fe["environment"], list) \
        else fe["environment"]
    for var, default in template_variables().items():
        assert env[var] == "${%s:-%s}" % (var, default)
    assert c["networks"]["shared_network"] == {"external": True, "name": "peerprep_shared_network"}
    assert seconds(fe["stop_grace_period"]) > stop_budget()


def stop_budget():
    """Worst-case seconds from SIGTERM to the init's exit (SPEC §5)."""
    n = ini()["nginx"]
    return seconds(n["stop_delay"]) + seconds(n["stop_timeout"]) + 5


def _env_file(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))


def test_env_compose_prod_runs_production_on_the_compose_names():
    """The local production run: the production target, nginx's port 80 on
    both sides, and no host variable (the compose service names apply:
    the ECS names would never resolve beside the backends' compose stack)."""
    env = _env_file(".env.compose-prod")
    assert env["FRONTEND_BUILD_STAGE"] == "production"
    listen = [l.split()[1].rstrip(";") for l in open(TEMPLATE) if l.strip().startswith("listen ")]
    assert env["FRONTEND_PORT"] == env["FRONTEND_INTERNAL_PORT"] == "80" and "80" in listen
    assert not [k for k in env if k.startswith("NGINX_")]
    fe = _compose()["services"]["frontend"]
    assert fe["ports"] == ["${FRONTEND_PORT:-5173}:${FRONTEND_INTERNAL_PORT:-5173}"]


def test_env_prod_names_every_host():
    with open(os.path.join(DEPLOY, ".env.prod")) as f:
        env = dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))
    for svc in testbed.SERVICES:
        assert env[testbed.host_var(svc)] == "%s.peerprep-prod.internal" % svc


def test_ecs_task_definition_matches_the_image():
    with open(os.path.join(DEPLOY, "ecs-task-definition.json")) as f:
        td = json.load(f)
    (c,) = [c for c in td["containerDefinitions"] if c["name"] == "frontend"]
    assert c["essential"] is True
    assert c["healthCheck"]["command"] == ["CMD", "/peerprep-init", "health"]
    hc = c["healthCheck"]
    assert 5 <= hc["interval"] <= 300 and 2 <= hc["timeout"] <= 60 and 1 <= hc["retries"] <= 10
    assert hc["startPeriod"] >= seconds(ini()["upstreams"]["wait"])
    assert c["stopTimeout"] > stop_budget() and c["stopTimeout"] <= 120
    assert [p["containerPort"] for p in c["portMappings"]] == [80]
    env = {e["name"]: e["value"] for e in c["environment"]}
    for svc in testbed.SERVICES:
        assert env[testbed.host_var(svc)] == "%s.peerprep-prod.internal" % svc
    assert c["readonlyRootFilesystem"] is True
    mounts = {m["containerPath"]: m["sourceVolume"] for m in c["mountPoints"]}
    assert ini()["templates"]["output_dir"] in mounts
    assert {"/var/cache/nginx", "/var/run"} <= set(mounts)
    assert set(mounts.values()) <= {v["name"] for v in td["volumes"]}
    assert c["logConfiguration"]["logDriver"] == "awslogs"
    assert c.get("linuxParameters", {}).get("initProcessEnabled") is not True


def test_dockerfile_copies_what_exists():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read()
    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = [l.strip().rstrip("/") for l in f if l.strip() and not l.startswith("#")]
    sources = re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(\S+)\s+\S+\s*$", text, re.M)
    assert "Makefile" in sources and "deploy/peerprep-init.ini" in sources, sources
    for src in sources:
        assert os.path.exists(os.path.join(REPO, src)), src
        # A source the build context leaves out fails `docker build`.
        path = src.rstrip("/")
        assert not any(fnmatch.fnmatch(path, pat) or path.startswith(pat + "/")
                       for pat in ignored), (src, "excluded by .dockerignore")
    assert 'CMD ["/peerprep-init"]' in text
    assert 'HEALTHCHECK' in text and '["/peerprep-init", "health"]' in text
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\]$", text, re.M)
    assert "/etc/nginx/templates" in text and "/etc/peerprep-init.ini" in text
    assert "npm ci" in text and "--only=production" not in text
