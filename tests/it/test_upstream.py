"""Upstream hosts (SPEC §4) and the check command, in a test bed: a real
dnsmasq authoritative for the zone, stub upstreams on 127.0.0.x:8000, the
init as PID 1 of a pid namespace inside the bed."""
import json
import signal
import subprocess
import threading
import time

import pytest

import testbed
from pi import BIN, nginx_prefix, wait_for

ZONE = testbed.DEFAULT_ZONE
TEMPLATE = """server {
    listen 127.0.0.1:80;
    location /api/ { proxy_pass http://${NGINX_API_HOST}:8000/; }
}
"""


class InBed:
    """The init running inside a bed, its log in a file."""

    def __init__(self, bed, tmp_path, args=(), **env):
        self.log_path = tmp_path / "init.log"
        self.log = open(self.log_path, "wb")
        self.proc = bed.run([BIN, *args], env=env, new_pidns=True, stdout=self.log,
                            stderr=self.log, stdin=subprocess.DEVNULL)

    def text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle, timeout=10):
        return wait_for(lambda: needle in self.text(), timeout, what=repr(needle))

    def wait(self, timeout=15):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def setup(bed, tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "api.conf.template").write_text(TEMPLATE)
    cmd, test = nginx_prefix(tmp_path, 80)
    env = {
        "PEERPREP_INIT_CONFIG": "",
        "PEERPREP_INIT_TEMPLATES_DIR": str(tmp_path / "templates"),
        "PEERPREP_INIT_TEMPLATES_OUTPUT_DIR": str(tmp_path / "conf.d"),
        "PEERPREP_INIT_NGINX_COMMAND": cmd,
        "PEERPREP_INIT_NGINX_TEST": test,
        "PEERPREP_INIT_HEALTH_PROBE": "127.0.0.1:80",
        "PEERPREP_INIT_LOG_LEVEL": "debug",
        "NGINX_API_HOST": "api." + ZONE,
    }
    started = []

    def start(args=(), **over):
        init = InBed(bed, tmp_path, args, **dict(env, **over))
        started.append(init)
        return init

    yield start
    for init in started:
        init.stop()


def service_of(bed):
    r = bed.http_get("http://127.0.0.1:80/api/who?x=1", timeout=5)
    assert r.status == 200, (r.status, r.body)
    return r.json()["service"]


def test_host_appearing_late_starts_nginx(bed, setup):
    init = setup()
    init.wait_log("upstream host does not resolve")
    assert "msg=started" not in init.text()
    t0 = time.monotonic()
    time.sleep(0.5)  # the host is absent for a while: the init keeps waiting
    bed.set_host("api." + ZONE, "127.0.0.11")
    bed.wait_port("127.0.0.1", 80, timeout=10)
    assert time.monotonic() - t0 < 7
    assert service_of(bed) == "user-service"
    log = init.text()
    assert log.count("upstream host does not resolve") == 1, "a failure is logged once"
    assert log.count("upstream host resolves") == 1
    assert "var=NGINX_API_HOST" in log and "host=api." + ZONE in log


def test_host_that_never_appears_exits_4(bed, setup):
    init = setup(PEERPREP_INIT_UPSTREAMS_WAIT="1500ms", NGINX_OTHER_HOST="other." + ZONE)
    bed.set_host("other." + ZONE, "127.0.0.12")
    t0 = time.monotonic()
    assert init.wait(10) == 4
    assert 1.4 < time.monotonic() - t0 < 5
    log = init.text()
    assert "did not resolve in time" in log
    assert "NGINX_API_HOST=api." + ZONE in log
    assert "NGINX_OTHER_HOST=" not in log.split("did not resolve in time")[1]
    assert "msg=started" not in log
    assert not bed.port_open("127.0.0.1", 80)


def test_address_change_is_followed_without_failed_requests(bed, setup):
    bed.set_host("api." + ZONE, "127.0.0.11")
    init = setup(PEERPREP_INIT_UPSTREAMS_RECHECK="500ms")
    bed.wait_port("127.0.0.1", 80)
    assert service_of(bed) == "user-service"

    results, stop = [], threading.Event()

    def load():
        # bounded: at most 2000 requests or until told to stop
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                results.append(service_of(bed))
            except Exception as e:  # noqa: BLE001 - every failure counts
                results.append(e)
            time.sleep(0.005)

    t = threading.Thread(target=load)
    t.start()
    try:
        time.sleep(0.3)
        changed = time.monotonic()
        bed.set_host("api." + ZONE, "127.0.0.12")
        wait_for(lambda: results and results[-1] == "question-service", 3,
                 what="nginx to follow the new address")
        followed = time.monotonic() - changed
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(10)
    failures = [r for r in results if isinstance(r, Exception)]
    assert failures == []
    assert followed < 0.5 + 1.0 + 0.5, followed  # recheck + 1 s (+ polling slack)
    log = init.text()
    assert "upstream addresses changed" in log and "old=127.0.0.11 new=127.0.0.12" in log
    assert "reloaded nginx" in log


def health(bed):
    r = bed.http_get("http://127.0.0.1:8081/health", timeout=5)
    return r.status, r.json()


def test_dns_gone_keeps_nginx_serving_and_health_warns(bed, setup):
    bed.set_host("api." + ZONE, "127.0.0.11")
    init = setup(PEERPREP_INIT_UPSTREAMS_RECHECK="300ms")
    bed.wait_port("127.0.0.1", 80)
    wait_for(lambda: health(bed)[1]["status"] == "pass", 5, what="health pass")
    status, doc = health(bed)
    up = doc["checks"]["upstream:NGINX_API_HOST"][0]
    assert up["componentId"] == "api." + ZONE and up["observedValue"] == ["127.0.0.11"]

    bed.remove_host("api." + ZONE)
    wait_for(lambda: health(bed)[1]["status"] == "warn", 5, what="health warn")
    status, doc = health(bed)
    assert status == 200
    up = doc["checks"]["upstream:NGINX_API_HOST"][0]
    assert up["status"] == "warn"
    assert service_of(bed) == "user-service"  # nginx keeps its last addresses
    init.wait_log("stopped resolving")
    assert "reloaded nginx" not in init.text()

    bed.set_host("api." + ZONE, "127.0.0.11")
    wait_for(lambda: health(bed)[1]["status"] == "pass", 5, what="health pass again")
    init.proc.send_signal(signal.SIGTERM)
    assert init.wait(15) == 0


def check(bed, setup, **env):
    init = setup(["check"], **env)
    rc = init.wait(20)
    return rc, init.text()


def test_check_all_good(bed, setup):
    bed.set_host("api." + ZONE, ["127.0.0.11", "127.0.0.12"])
    rc, out = check(bed, setup)
    assert rc == 0, out
    assert "api.conf.template -> " in out and ": ok" in out
    assert "host NGINX_API_HOST api.%s: 127.0.0.11 127.0.0.12" % ZONE in out
    assert "config test: ok" in out


def test_check_unresolved_is_4(bed, setup):
    rc, out = check(bed, setup)
    assert rc == 4, out
    assert "host NGINX_API_HOST api.%s: FAIL name does not resolve" % ZONE in out


def test_check_config_test_failure_is_5_and_restores(bed, setup, tmp_path):
    bed.set_host("api." + ZONE, "127.0.0.11")
    out_dir = tmp_path / "conf.d"
    out_dir.mkdir()
    (out_dir / "api.conf").write_text("# before\n")
    (tmp_path / "templates" / "api.conf.template").write_text(TEMPLATE + "bogus on;\n")
    rc, out = check(bed, setup)
    assert rc == 5, out
    assert "config test: FAIL" in out
    assert (out_dir / "api.conf").read_text() == "# before\n"


def test_check_template_error_is_3(bed, setup):
    rc, out = check(bed, setup, NGINX_API_HOST="api_service")
    assert rc == 3, out
    assert "NGINX_API_HOST" in out and "api_service" not in out


def test_refusing_resolver_is_named(tmp_path):
    # dnsmasq authoritative only for another zone refuses ours.
    with testbed.Bed(local_domains=["elsewhere"]) as b:
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "api.conf.template").write_text(TEMPLATE)
        env = {"PEERPREP_INIT_CONFIG": "", "PEERPREP_INIT_NGINX_TEST": "",
               "PEERPREP_INIT_TEMPLATES_DIR": str(tmp_path / "templates"),
               "PEERPREP_INIT_TEMPLATES_OUTPUT_DIR": str(tmp_path / "conf.d"),
               "NGINX_API_HOST": "api." + ZONE}
        p = b.run([BIN, "check"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.communicate(timeout=20)[0].decode()
        assert p.returncode == 4, out
        assert "nameserver 127.0.0.53 answered REFUSED" in out


def test_health_and_upstream_logs_after_successful_reloads(bed, setup):
    """A successful re-render reload frees the previous render; the health
    answer and the upstream log lines must still name the variable and host
    (they once read the freed strings: a crash under ASan, garbage in the
    release build)."""
    bed.set_host("api." + ZONE, "127.0.0.11")
    init = setup(PEERPREP_INIT_UPSTREAMS_RECHECK="300ms")
    bed.wait_port("127.0.0.1", 80)
    wait_for(lambda: health(bed)[1]["status"] == "pass", 5, what="health pass")
    for i in range(3):
        init.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: init.text().count("reloaded nginx") >= i + 1, 10,
                 what="reload %d" % (i + 1))
        status, doc = health(bed)
        assert status == 200, doc
        up = doc["checks"]["upstream:NGINX_API_HOST"][0]
        assert up["componentId"] == "api." + ZONE, up
    # A change after the reloads is logged with the right names too.
    bed.set_host("api." + ZONE, "127.0.0.12")
    init.wait_log("upstream addresses changed")
    line = [l for l in init.text().splitlines() if "upstream addresses changed" in l][0]
    assert "var=NGINX_API_HOST" in line and "host=api." + ZONE in line, line
    wait_for(lambda: health(bed)[1]["checks"]["upstream:NGINX_API_HOST"][0]
             ["observedValue"] == ["127.0.0.12"], 5, what="new address on /health")
    init.proc.send_signal(signal.SIGTERM)
    assert init.wait(15) == 0
