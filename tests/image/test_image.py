"""The image, built from the root Dockerfile and run by podman.

Each test starts its own frontend container on the session's network of
six stub backends (conftest.py) and talks to it through a published port
on 127.0.0.1. Timings that the README quotes are recorded in
build/image-metrics.json.
"""

import calendar
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import engine
import testbed
from engine import Container, request

ROUTES = {svc: "/%s-api/" % svc for svc in testbed.SERVICES}
TEMPLATE = os.path.join(engine.REPO, "deploy", "nginx", "default.conf.template")
TASKDEF = os.path.join(engine.REPO, "deploy", "ecs-task-definition.json")


def name(tag):
    return "pit%s-%s-%d" % (engine.RUN, tag, int(time.monotonic() * 1000) % 100000)


def ini_seconds(section, key):
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(os.path.join(engine.REPO, "deploy", "peerprep-init.ini"))
    m = re.fullmatch(r"([0-9.]+)(ms|s|m)?", cp[section][key])
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def start_frontend(containers, backends, image, tag, env=None, args=(), healthy=True):
    t0 = time.monotonic()
    c = Container.run(name(tag), image, *args, network=backends.network, env=env, publish=80)
    containers.append(c)
    c.port_no = c.port()
    if healthy:
        c.wait_healthy(timeout=60)
        c.start_to_healthy = time.monotonic() - t0
    return c


def get(c, path, **kw):
    return request("127.0.0.1", c.port_no, "GET", path, **kw)


def epoch(stamp):
    """Seconds since the epoch of a time as the init logs it
    (2026-12-02T11:19:00.123Z) or as podman shows one (Go's
    2026-12-02 11:19:00.123456789 +0000 UTC)."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s*"
                 r"(Z|[+-]\d\d:?\d\d)?", stamp.strip())
    assert m, stamp
    secs = calendar.timegm(tuple(int(x) for x in m.groups()[:6]))
    secs += float("0." + m.group(7)) if m.group(7) else 0.0
    off = m.group(8)
    if off and off != "Z":
        sign = -1 if off[0] == "-" else 1
        secs -= sign * (int(off[1:3]) * 3600 + int(off[-2:]) * 60)
    return secs


def log_epoch(logs, needle):
    """epoch() of the first of the init's log lines (text format) that
    holds needle; fails when there is none."""
    for line in logs.splitlines():
        if needle in line and "ts=" in line:
            return epoch(line.split("ts=", 1)[1].split()[0])
    raise AssertionError("no log line holding %r:\n%s" % (needle, logs[-3000:]))


# --------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------


def test_images_keep_the_healthcheck_and_the_init_as_pid_1(images):
    for key, tag in images.items():
        cfg = json.loads(engine.podman("image", "inspect", tag).stdout)[0]["Config"]
        hc = cfg.get("Healthcheck") or json.loads(
            engine.podman("image", "inspect", "--format", "{{json .HealthCheck}}", tag).stdout)
        assert hc and hc["Test"] == ["CMD", "/peerprep-init", "health"], (key, hc)
        assert cfg["Cmd"][0] == "/peerprep-init", (key, cfg["Cmd"])
        assert not cfg.get("Entrypoint"), (key, cfg.get("Entrypoint"))
        assert cfg["StopSignal"] == "SIGTERM", key
    dev = json.loads(engine.podman("image", "inspect", images["development"]).stdout)[0]["Config"]
    assert dev["Cmd"][:4] == ["/peerprep-init", "--", "npm", "run"], dev["Cmd"]


def test_development_target_without_a_frontend_says_what_it_needs(images):
    with pytest.raises(engine.EngineError) as e:
        engine.build("localhost/peerprep-frontend:test-dev-none", "development", None, timeout=600)
    assert "the development target needs --build-context frontend=DIR" in str(e.value)
    assert engine.podman("image", "exists", "localhost/peerprep-frontend:test-dev-none",
                         check=False).returncode != 0


def test_placeholder_site_ships_without_a_frontend(images, backends, containers):
    c = start_frontend(containers, backends, images["placeholder"], "ph")
    r = get(c, "/")
    assert r.status == 200
    with open(os.path.join(engine.REPO, "deploy", "site", "index.html"), "rb") as f:
        assert r.body == f.read()


# --------------------------------------------------------------------------
# The production container with the defaults
# --------------------------------------------------------------------------


def test_routes_websockets_spa_assets_and_health(images, backends, containers):
    c = start_frontend(containers, backends, images["production"], "routes")
    engine.record("start_to_healthy_seconds", round(c.start_to_healthy, 2))
    for svc, prefix in ROUTES.items():
        r = get(c, prefix + "a/b?x=1&y=two")
        assert r.status == 200, (svc, r)
        j = r.json()
        assert (j["service"], j["path"], j["query"]) == (svc, "/a/b", "x=1&y=two")
    for svc in testbed.WS_SERVICES:
        with engine.websocket("127.0.0.1", c.port_no, ROUTES[svc] + "socket?room=7") as ws:
            assert ws.headers["x-stub-service"] == svc
            assert ws.headers["x-stub-path"] == "/socket?room=7"
            ws.send("hello " + svc)
            assert ws.recv() == (testbed.WS_TEXT, ("hello " + svc).encode())
    # The SPA: any unknown path is index.html, which names the hashed bundle.
    index = get(c, "/")
    assert index.status == 200 and index.header("cache-control") == "no-cache"
    route = get(c, "/rooms/42")
    assert route.status == 200 and route.body == index.body
    m = re.search(rb'src="(/assets/index-[A-Za-z0-9_-]+\.js)"', index.body)
    assert m, index.body
    asset = get(c, m.group(1).decode())
    assert asset.status == 200
    assert asset.header("cache-control") == "public, max-age=31536000, immutable"
    # VITE_USER_SERVICE_URL was compiled in by `vite build`.
    assert b"/user-service-api" in asset.body and b"fixture-bundle" in asset.body
    assert get(c, "/assets/index-missing.js").status == 404
    health = get(c, "/health")
    assert health.status == 200 and health.json()["status"] == "pass", health.body
    took = c.stop(timeout=40)
    assert c.exit_code() == 0, c.logs()
    engine.record("stop_idle_seconds", round(took, 2))


def test_workers_follow_the_cpu_quota(images, backends, containers):
    """`--cpus 1` on this 2-CPU machine: the init renders worker_processes 1
    into conf.d/main/ (the image's nginx.conf includes it), where the stock
    `worker_processes auto` would start one worker per host CPU."""
    c = start_frontend(containers, backends, images["production"], "cpus", args=["--cpus", "1"])
    conf = engine.podman("exec", c.name, "cat", "/etc/nginx/conf.d/main/workers.conf").stdout
    assert "\nworker_processes 1;\n" in conf, conf
    # An answer first: a worker has then started (healthy alone is nginx's
    # master listening), and the master forks all its workers at once.
    assert get(c, "/").status == 200
    ps = engine.podman("top", c.name, "args").stdout
    assert ps.count("nginx: worker process") == 1, ps


def test_missing_backend_waits_then_exits_4_naming_the_variable(images, backends, containers):
    c = start_frontend(containers, backends, images["production"], "missing", healthy=False,
                       env={"NGINX_CHAT_SERVICE_HOST": "no-such-service",
                            "PEERPREP_INIT_UPSTREAMS_WAIT": "3s"})
    assert c.healthcheck()[0] != 0  # nothing serves while the init waits
    code = c.wait_exit(timeout=30)
    assert code == 4, c.logs()
    logs = c.logs()
    # It waited its 3 s (0.1 s for the event loop's cached clock), by the
    # init's own clock: a clock in this test would start only after
    # `podman run` and `podman port` returned, seconds on a loaded machine.
    waited = log_epoch(logs, "did not resolve in time") - log_epoch(logs, "waiting for upstream hosts")
    assert waited >= 2.9, (waited, logs)
    assert "NGINX_CHAT_SERVICE_HOST" in logs and "no-such-service" in logs, logs


@pytest.mark.timeout(120)
def test_stop_lets_a_slow_request_finish(images, backends, containers):
    c = start_frontend(containers, backends, images["production"], "stop")
    user = backends.services["user-service"]
    result = {}

    def slow():
        try:
            result["r"] = get(c, ROUTES["user-service"] + "slow?sleep_ms=3000", timeout=20)
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            result["r"] = e

    t = threading.Thread(target=slow)
    t.start()
    engine.poll("the slow request to reach the backend",
                lambda: backends.stats(user)["inflight"] >= 1, timeout=10, interval=0.05)
    took = c.stop(timeout=40)
    t.join(30)
    r = result.get("r")
    assert isinstance(r, testbed.Response) and r.status == 200, r
    assert c.exit_code() == 0, c.logs()
    # nginx's own notice (the stock error_log level) that PID 1 sent QUIT.
    assert re.search(r"signal 3 \(SIGQUIT\) received from 1\b", c.logs()), c.logs()
    # The request's 3 s and podman's own stop and clean-up (seconds on a
    # loaded machine); a stop that waited out stop_timeout takes 25 s.
    assert took < 20, took
    engine.record("stop_with_3s_request_seconds", round(took, 2))


# --------------------------------------------------------------------------
# A backend redeploy under load
# --------------------------------------------------------------------------


def health_addresses(c, var):
    return get(c, "/health").json()["checks"]["upstream:" + var][0]["observedValue"]


@pytest.mark.timeout(150)
def test_redeploy_under_load_loses_no_request(images, own_backends, containers):
    backends = own_backends
    recheck = ini_seconds("upstreams", "recheck")
    c = start_frontend(containers, backends, images["production"], "redeploy")
    old = backends.services["user-service"]
    var = testbed.host_var("user-service")
    assert health_addresses(c, var) == [old.addr]

    stop = threading.Event()
    # Held by the load for each request, and by the test while the old
    # backend goes: an ECS task drains what it is answering before its
    # address disappears (deregistration, then SIGTERM, then the stop
    # timeout), so no request is in flight to it at that moment. What the
    # test asks is the rest: every request sent *after* the address
    # vanished (no reset, as on ECS) is answered, although nginx still
    # routes to that address until the next recheck. A request caught in
    # flight by a host that vanishes is lost whatever the proxy does.
    gate = threading.Lock()
    log = []  # (t, status or exception text, service, seconds)

    def load():
        # Steady and bounded: 20 requests a second, at most 1500 requests.
        for _ in range(1500):
            if stop.is_set():
                return
            with gate:
                t0 = time.monotonic()
                try:
                    r = get(c, ROUTES["user-service"] + "ping", timeout=15)
                    log.append((t0, r.status,
                                r.json().get("service") if r.status == 200 else r.body[:200],
                                time.monotonic() - t0))
                except Exception as e:  # noqa: BLE001 - a failed request is the finding
                    log.append((t0, repr(e), None, time.monotonic() - t0))
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))

    t = threading.Thread(target=load)
    t.start()
    try:
        engine.poll("load to start", lambda: len(log) >= 10, timeout=10)
        new = backends.start("user-service", stub_name="user-service-v2")
        # As on ECS (minimum healthy 100 %): the new task is in service
        # discovery, and in nginx, before the old one goes.
        engine.poll("nginx to know both addresses",
                    lambda: sorted(health_addresses(c, var)) == sorted([old.addr, new.addr]),
                    timeout=recheck + 20)
        engine.poll("the new backend to take requests",
                    lambda: any(s == "user-service-v2" for _, _, s, _ in log[-20:]), timeout=10)
        with gate:
            t_gone = time.monotonic()
            engine.podman("network", "disconnect", backends.network.name, old.name)
        engine.podman("rm", "-f", "-t", "0", old.name)
        # A recheck, the config test and the reload; podman's DNS update and
        # a loaded machine's room.
        engine.poll("nginx to follow the redeploy",
                    lambda: health_addresses(c, var) == [new.addr], timeout=recheck + 10)
        followed = time.monotonic() - t_gone
        n = len(log)
        engine.poll("more load after the reload", lambda: len(log) >= n + 20, timeout=30)
    finally:
        stop.set()
        t.join(30)
    failed = [e for e in log if e[1] != 200]
    assert not failed, failed[:10]
    after = [e for e in log if e[0] > t_gone + followed]
    assert after and all(s == "user-service-v2" for _, _, s, _ in after)
    slowest = max(d for t0, _, _, d in log if t0 > t_gone - 2)
    engine.record("redeploy", {"recheck_seconds": recheck, "followed_seconds": round(followed, 2),
                               "requests": len(log), "slowest_after_disconnect_seconds": round(slowest, 2)})
    assert c.status() == "running"


# --------------------------------------------------------------------------
# The task definition's constraints, and reloads
# --------------------------------------------------------------------------


def taskdef_tmpfs_args():
    with open(TASKDEF) as f:
        td = json.load(f)
    (cd,) = [x for x in td["containerDefinitions"] if x["name"] == "frontend"]
    assert cd["readonlyRootFilesystem"] is True
    args = ["--read-only", "--read-only-tmpfs=false"]
    for m in cd["mountPoints"]:
        args += ["--tmpfs", m["containerPath"]]
    return args


def test_read_only_root_with_the_task_definitions_volumes(images, backends, containers):
    c = start_frontend(containers, backends, images["production"], "ro", args=taskdef_tmpfs_args())
    assert get(c, "/").status == 200
    assert get(c, ROUTES["user-service"] + "x").json()["service"] == "user-service"
    c.kill("HUP")
    # The init signals nginx only after the config test passed.
    engine.poll("nginx to reload", lambda: "(SIGHUP) received from 1, reconfiguring" in c.logs(),
                timeout=20)
    health = get(c, "/health").json()
    assert health["status"] == "pass", health
    assert get(c, "/").status == 200


def test_sighup_applies_a_changed_template_and_rejects_a_broken_one(images, backends, containers):
    tdir = tempfile.mkdtemp(prefix="pit-templates-")
    try:
        os.chmod(tdir, 0o755)
        tpl = os.path.join(tdir, "default.conf.template")
        shutil.copy(TEMPLATE, tpl)
        c = start_frontend(containers, backends, images["production"], "hup",
                           args=["-v", "%s:/etc/nginx/templates:ro" % tdir])
        assert get(c, "/hup-probe").status == 200  # SPA fallback so far
        with open(TEMPLATE) as f:
            text = f.read()
        probe = "    location = /hup-probe { default_type text/plain; return 200 \"v2\\n\"; }\n"
        changed = text.replace("    location / {", probe + "\n    location / {", 1)
        assert changed != text
        with open(tpl + ".tmp", "w") as f:
            f.write(changed)
        os.replace(tpl + ".tmp", tpl)
        c.kill("HUP")
        engine.poll("the changed template to be served",
                    lambda: get(c, "/hup-probe").body == b"v2\n", timeout=20)
        # Until the old workers have gone, one may still take a connection
        # and answer from the old config (nginx's reload, not the init's).
        engine.poll("the old workers to exit",
                    lambda: "is shutting down" not in engine.podman("top", c.name, "args").stdout,
                    timeout=30)
        assert get(c, "/hup-probe").body == b"v2\n"
        with open(tpl + ".tmp", "w") as f:
            f.write(changed.replace("location = /hup-probe {", "location = /hup-probe { no_such_directive on;"))
        os.replace(tpl + ".tmp", tpl)
        c.kill("HUP")
        engine.poll("the broken reload to be reported",
                    lambda: get(c, "/health").json()["status"] == "warn", timeout=20)
        health = get(c, "/health").json()
        assert health["checks"]["config:reload"][0]["status"] != "pass", health
        assert get(c, "/hup-probe").body == b"v2\n"
        assert get(c, ROUTES["chat-service"] + "x").json()["service"] == "chat-service"
        assert c.status() == "running"
    finally:
        shutil.rmtree(tdir, ignore_errors=True)


# --------------------------------------------------------------------------
# The development target
# --------------------------------------------------------------------------


def test_development_target_serves_vite_and_stops_quickly(images, backends, containers):
    t0 = time.monotonic()
    c = Container.run(name("dev"), images["development"], network=backends.network, publish=5173,
                      env={"VITE_USER_SERVICE_URL": "/dev-user-api"})
    containers.append(c)
    port = c.port()

    def vite_answers():
        try:
            return request("127.0.0.1", port, "GET", "/", timeout=2).status == 200
        except OSError:
            return False

    engine.poll("the Vite dev server to answer", vite_answers, timeout=60, interval=0.2)
    c.wait_healthy(timeout=30)
    engine.record("dev_start_to_healthy_seconds", round(time.monotonic() - t0, 2))
    r = request("127.0.0.1", port, "GET", "/src/main.js")
    assert r.status == 200 and b"/dev-user-api" in r.body, r.body[:500]
    procs = engine.processes_under(c.host_pid())
    assert procs[c.host_pid()][1] == "peerprep-init", procs
    assert not [p for p, (state, _) in procs.items() if state == "Z"], procs
    took = c.stop(timeout=10)
    logs = c.logs()
    assert c.exit_code() != 137, logs
    # From the init's SIGTERM to the container's end, by the host's clock as
    # the init and podman saw it: `podman stop` adds its own start and
    # clean-up, seconds on a loaded machine. A stop that waits out the 5 s
    # stop_timeout (or leftovers' 2 s grace) takes longer.
    ran = epoch(c.inspect("{{.State.FinishedAt}}")) - log_epoch(logs, "graceful stop requested")
    assert 0 <= ran < 2.0, (ran, logs)
    assert took < 8.0, took  # podman's own kill comes at 10 s
    engine.record("dev_stop_seconds", round(took, 2))


# --------------------------------------------------------------------------
# The deploy files, read by the tools that consume them
# --------------------------------------------------------------------------


def test_ecs_task_definition_validates_against_the_ecs_api_model():
    import botocore.session
    from botocore.validate import ParamValidator
    with open(TASKDEF) as f:
        td = json.load(f)
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(td, shape)
    assert not report.has_errors(), report.generate_report()


COMPOSE_NETWORK = "peerprep_shared_network"
COMPOSE_IMAGE = "localhost/peerprep-frontend:production"


@pytest.mark.timeout(180)
def test_compose_file_brings_up_the_production_target(images, backends):
    """deploy/docker-compose.yml under podman-compose, production target,
    with the image under the name the file gives it and the six backends
    on the external network it names."""
    made_net = engine.podman("network", "exists", COMPOSE_NETWORK, check=False).returncode != 0
    if made_net:
        engine.podman("network", "create", "--label", "%s=%s" % (engine.LABEL, engine.RUN), COMPOSE_NETWORK)
    before = engine.podman("image", "inspect", "--format", "{{.Id}}", COMPOSE_IMAGE, check=False)
    engine.podman("tag", images["production"], COMPOSE_IMAGE)
    for svc, c in backends.services.items():
        engine.podman("network", "connect", "--alias", svc, COMPOSE_NETWORK, c.name)
    port = engine.free_port()
    env = dict(engine.ENV, FRONTEND_BUILD_STAGE="production", PEERPREP_FRONTEND_DIR=engine.FIXTURE,
               FRONTEND_PORT="127.0.0.1:%d" % port, FRONTEND_INTERNAL_PORT="80")
    compose = ["podman-compose", "-p", "pit%s" % engine.RUN, "-f",
               os.path.join(engine.REPO, "deploy", "docker-compose.yml")]
    fe = Container("peerprep_frontend")
    # The file fixes the container's name: one left by a killed test run
    # (its project is "pit<pid>" and that pid is gone) is removed first.
    owner = fe.inspect('{{index .Config.Labels "com.docker.compose.project"}}') \
        if fe.status() != "gone" else ""
    if re.fullmatch(r"pit\d+", owner) and not os.path.exists("/proc/" + owner[3:]):
        fe.remove()
    try:
        p = subprocess.run(compose + ["up", "-d"], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        fe.wait_healthy(timeout=60)
        r = request("127.0.0.1", port, "GET", ROUTES["history-service"] + "h?q=1")
        assert r.json()["service"] == "history-service" and r.json()["query"] == "q=1"
        assert request("127.0.0.1", port, "GET", "/health").json()["status"] in ("pass", "warn")
    finally:
        sys.stderr.write(fe.logs()[-4000:])
        subprocess.run(compose + ["down", "-t", "40"], env=env, capture_output=True, timeout=120)
        fe.remove()
        for c in backends.services.values():
            engine.podman("network", "disconnect", "-f", COMPOSE_NETWORK, c.name, check=False)
        if made_net:
            engine.podman("network", "rm", "-f", COMPOSE_NETWORK, check=False)
        if before.returncode == 0:
            engine.podman("tag", before.stdout.strip(), COMPOSE_IMAGE, check=False)
        else:
            engine.podman("untag", images["production"], COMPOSE_IMAGE, check=False)
        vols = engine.podman("volume", "ls", "-q", "--filter",
                             "label=io.podman.compose.project=pit%s" % engine.RUN, check=False).stdout.split()
        if vols:
            engine.podman("volume", "rm", "-f", *vols, check=False)
