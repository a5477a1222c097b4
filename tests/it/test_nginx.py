"""The supervisor with the real nginx (SPEC §1 run, §3 all-or-nothing, §5
reload and graceful stop)."""
import http.server
import json
import signal
import socket
import socketserver
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pi import Init, base_env, wait_for, free_port, nginx_prefix, http_get, try_get, descendants

TEMPLATE = """server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "${{NGINX_GREETING}} {tag}\\n"; }}
    location /slow/ {{ proxy_pass http://127.0.0.1:{slow}/; }}
}}
"""


@pytest.fixture
def site(tmp_path):
    port, slow = free_port(), free_port()
    tdir = tmp_path / "templates"
    tdir.mkdir()
    cmd, test = nginx_prefix(tmp_path, port)
    env = base_env(tmp_path, PEERPREP_INIT_NGINX_COMMAND=cmd, PEERPREP_INIT_NGINX_TEST=test,
                   NGINX_GREETING="hello")

    def write(tag, extra=""):
        (tdir / "site.conf.template").write_text(
            TEMPLATE.format(port=port, slow=slow, tag=tag) + extra)

    write("v1")
    return dict(tmp=tmp_path, port=port, slow=slow, env=env, write=write,
                out=tmp_path / "conf.d" / "site.conf")


def body(port, path="/"):
    r = try_get(port, path)
    return r and r[0] == 200 and r[2].decode().strip()


def serves(init, port, want, n=10):
    """True when nginx has one master and one worker left and n answers in
    a row say want: during a reload nginx's old worker still answers until
    it has handled its QUIT."""
    return len(descendants(init.pid)) == 2 and all(body(port) == want for _ in range(n))


def start(site, **env):
    e = dict(site["env"], **env)
    init = Init([], e, site["tmp"] / "init.log")
    wait_for(lambda: body(site["port"]) == "hello v1", 30, what="nginx serving v1")
    return init


def test_start_reload_good_and_bad(site):
    init = start(site)
    try:
        # A good template applies.
        site["write"]("v2")
        init.signal(signal.SIGHUP)
        wait_for(lambda: serves(init, site["port"], "hello v2"), 10, what="v2 after SIGHUP")
        good = site["out"].read_text()

        # An unset variable: nothing changes, the log says where.
        site["write"]("v3 ${NGINX_MISSING}")
        init.signal(signal.SIGHUP)
        init.wait_log("NGINX_MISSING is not set")
        assert "site.conf.template:3:" in init.text()
        assert site["out"].read_text() == good
        assert serves(init, site["port"], "hello v2")

        # Renders, but nginx -t rejects it: the old file is put back.
        site["write"]("v4", extra="bogus_directive on;\n")
        init.signal(signal.SIGHUP)
        init.wait_log("config test failed")
        assert "bogus_directive" in init.text()
        wait_for(lambda: site["out"].read_text() == good, 5, what="old file restored")
        assert serves(init, site["port"], "hello v2")
        leftovers = [p.name for p in site["out"].parent.iterdir() if p.name.startswith(".")]
        assert leftovers == []

        # And a good one still applies afterwards.
        site["write"]("v5")
        init.signal(signal.SIGHUP)
        wait_for(lambda: serves(init, site["port"], "hello v5"), 10, what="v5")
        init.signal(signal.SIGTERM)
        assert init.wait(15) == 0
    finally:
        init.stop()


def test_a_reload_nginx_itself_rejects_is_not_counted_as_done(site):
    """The config test passes (here: `true`), nginx's own parse at SIGHUP
    fails (in production: a name that stopped resolving in between):
    nginx keeps its workers and its running config. The init sees no new
    worker, says so and /health warns (it logged `reloaded nginx` and
    passed, and addresses such a reload was for were never retried). A
    good reload is counted only once nginx runs new workers."""
    hport = free_port()
    init = start(site, PEERPREP_INIT_NGINX_TEST="true", PEERPREP_INIT_NGINX_TEST_TIMEOUT="2s",
                 PEERPREP_INIT_HEALTH_LISTEN="127.0.0.1:%d" % hport,
                 PEERPREP_INIT_HEALTH_PROBE="127.0.0.1:%d" % site["port"])

    def health():
        r = try_get(hport, "/health")
        return r and (r[0], json.loads(r[2]))

    try:
        wait_for(lambda: health() and health()[1]["status"] == "pass", 10, what="/health pass")
        old = set(descendants(init.pid))
        site["write"]("v2")
        init.signal(signal.SIGHUP)
        init.wait_log("reloaded nginx")
        # Counted once a worker of the new config runs.
        assert set(descendants(init.pid)) - old, "no new worker when 'reloaded nginx' was logged"
        wait_for(lambda: serves(init, site["port"], "hello v2"), 10, what="v2 after SIGHUP")
        assert health()[1]["status"] == "pass"

        site["write"]("v3", extra="bogus_directive on;\n")
        init.signal(signal.SIGHUP)
        init.wait_log("step=\"nginx's own reload\"")
        text = init.text()
        assert text.count("reloaded nginx") == 1, text
        status, doc = health()
        assert status == 200 and doc["status"] == "warn", doc
        assert "nginx did not take the reload" in json.dumps(doc), doc
        assert serves(init, site["port"], "hello v2")

        site["write"]("v4")
        init.signal(signal.SIGHUP)
        wait_for(lambda: init.text().count("reloaded nginx") == 2, 10, what="the good reload")
        wait_for(lambda: serves(init, site["port"], "hello v4"), 10, what="v4 after SIGHUP")
        assert health()[1]["status"] == "pass"
        init.signal(signal.SIGTERM)
        assert init.wait(15) == 0
    finally:
        init.stop()


def test_unsafe_value_refused_at_start(site):
    e = dict(site["env"], NGINX_GREETING="hi; return 500")
    init = Init([], e, site["tmp"] / "init.log")
    try:
        assert init.wait(10) == 3
        log = init.text()
        assert "NGINX_GREETING" in log and "hi; return" not in log
        assert not site["out"].exists()
        assert "started" not in log
    finally:
        init.stop()


def test_config_test_failure_at_start_restores_and_exits_5(site):
    # At start nginx's own start-up is the config test: the separate test
    # (here a wrapper that leaves a mark) does not run, and nginx exiting 1
    # with [emerg] before it served is reported as the test failing.
    site["out"].parent.mkdir()
    site["out"].write_text("# the previous file\n")
    site["write"]("v1", extra="bogus_directive on;\n")
    mark = site["tmp"] / "test-ran"
    env = dict(site["env"], PEERPREP_INIT_NGINX_TEST="sh -c 'touch %s; exec %s'" % (
        mark, site["env"]["PEERPREP_INIT_NGINX_TEST"]))
    init = Init([], env, site["tmp"] / "init.log")
    try:
        assert init.wait(10) == 5
        assert site["out"].read_text() == "# the previous file\n"
        log = init.text()
        assert "config test failed: nginx exited before it served" in log
        assert "bogus_directive" in log  # nginx's own message, on stderr
        assert not mark.exists(), "the separate config test ran at start"
    finally:
        init.stop()


def test_start_runs_no_separate_config_test_and_reload_does(site):
    mark = site["tmp"] / "test-ran"
    env = dict(site["env"], PEERPREP_INIT_NGINX_TEST="sh -c 'echo x >> %s; exec %s'" % (
        mark, site["env"]["PEERPREP_INIT_NGINX_TEST"]))
    init = Init([], env, site["tmp"] / "init.log")
    try:
        wait_for(lambda: body(site["port"]) == "hello v1", 30, what="nginx serving v1")
        assert not mark.exists(), "the separate config test ran at start"
        site["write"]("v2")
        init.signal(signal.SIGHUP)
        wait_for(lambda: serves(init, site["port"], "hello v2"), 10, what="v2 after SIGHUP")
        assert mark.read_text() == "x\n"
        init.signal(signal.SIGTERM)
        assert init.wait(15) == 0
    finally:
        init.stop()


def slow_handler():
    """A backend handler class whose requests are held until .release is
    set; .entered counts the requests that reached it."""
    class Slow(http.server.BaseHTTPRequestHandler):
        lock = threading.Lock()
        entered = 0
        release = threading.Event()

        def do_GET(self):
            with Slow.lock:
                Slow.entered += 1
            Slow.release.wait(30)
            data = b"slow ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    return Slow


class Backend(socketserver.ThreadingTCPServer):
    request_queue_size = 64  # 20 connections at once, none waiting for a SYN retry


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_graceful_stop_finishes_requests_in_flight(site):
    slow = slow_handler()
    srv = Backend(("127.0.0.1", site["slow"]), slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    init = start(site)
    try:
        with ThreadPoolExecutor(20) as pool:
            futs = [pool.submit(http_get, site["port"], "/slow/x", timeout=20) for _ in range(20)]
            # Every request is with nginx (and held by the backend) before
            # the stop begins.
            wait_for(lambda: slow.entered == 20, 10, what="20 requests in flight")
            init.signal(signal.SIGTERM)
            # nginx has taken its graceful stop: it no longer accepts.
            wait_for(lambda: not port_open(site["port"]), 10, what="nginx to stop accepting")
            assert not any(f.done() for f in futs), "a request ended before its answer"
            slow.release.set()
            results = [f.result() for f in futs]
        assert [r[0] for r in results] == [200] * 20
        assert all(r[2] == b"slow ok\n" for r in results)
        assert slow.entered == 20
        assert init.wait(10) == 0, init.text()
        assert 'msg="stopping the child" signal=QUIT' in init.text(), init.text()
        assert try_get(site["port"]) is None
    finally:
        slow.release.set()
        init.stop()
        srv.shutdown()
