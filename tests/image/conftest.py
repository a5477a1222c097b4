"""Fixtures for the image tests: the images (built once per session from
the root Dockerfile on stand-in bases, see mk/images.sh), and a podman
network with six stub backends named like the compose services.

Needs root and podman (`make deps` installs it); run with
`make check-image`, or one file with
`/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/image/test_x.py`.
"""

import os
import shutil
import sys
import time

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import testbed  # noqa: E402
import engine  # noqa: E402
# The per-test deadline (PI_TEST_TIMEOUT, @pytest.mark.timeout) and the
# report hook are the process-level suite's own.
from it.conftest import _deadline, pytest_configure, pytest_runtest_makereport  # noqa: E402,F401

PROD = "localhost/peerprep-frontend:test"
PLACEHOLDER = "localhost/peerprep-frontend:test-placeholder"
DEV = "localhost/peerprep-frontend:test-dev"


def _need_engine():
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (rootful podman)")
    if not shutil.which("podman") or not shutil.which("mmdebstrap"):
        pytest.fail("podman and mmdebstrap are missing: run `make deps`")


@pytest.fixture(scope="session")
def images():
    """{"production", "placeholder", "development"} -> image tag. Each build
    time and size goes to build/image-metrics.json."""
    _need_engine()
    engine.sweep()
    t0 = time.monotonic()
    engine.standins()
    engine.record("standins_seconds", round(time.monotonic() - t0, 1))
    out = {}
    for key, tag, target, frontend in (
            ("production", PROD, "production", engine.FIXTURE),
            ("placeholder", PLACEHOLDER, "production", None),
            ("development", DEV, "development", engine.FIXTURE)):
        took = engine.build(tag, target, frontend)
        engine.record("build_seconds_" + key, round(took, 1))
        engine.record("image_bytes_" + key, engine.image_size(tag))
        out[key] = tag
    return out


class Backends:
    """Six stub backends on one network, each reachable as its service name
    (a network alias, as compose's service names and ECS's Cloud Map
    names); collaboration and chat echo WebSockets."""

    def __init__(self, network):
        self.network = network
        self.containers = {}

    def start(self, service, alias=None, stub_name=None):
        """Start one backend container -> Container; returns once it answers."""
        name = "%s-%s-%d" % (self.network.name, service, len(self.containers))
        cmd = ["python3", "/tests/image/backend.py", stub_name or service]
        if service in testbed.WS_SERVICES:
            cmd.append("--websocket")
        c = engine.Container.run(
            name, engine.standin("python"), "--network-alias", alias or service,
            "-v", "%s:/tests:ro" % TESTS, network=self.network, cmd=cmd)
        self.containers[name] = c
        ip = c.ip(self.network)
        engine.poll("backend %s to answer" % name,
                    lambda: _answers(ip), timeout=30)
        c.addr = ip
        return c

    def stats(self, c):
        return engine.request(c.addr, testbed.STUB_PORT, "GET", "/_stats").json()

    def stop_all(self):
        for c in self.containers.values():
            c.remove()


def _answers(ip):
    try:
        return engine.request(ip, testbed.STUB_PORT, "GET", "/_stats", timeout=1).status == 200
    except OSError:
        return False


def _backends(tag):
    net = engine.Network("pit%s-%s" % (engine.RUN, tag))
    b = Backends(net)
    try:
        b.services = {svc: b.start(svc) for svc in testbed.SERVICES}
        yield b
    finally:
        b.stop_all()
        net.remove()


@pytest.fixture(scope="session")
def backends(images):
    """The shared network and backends; tests must leave them as they were."""
    _need_engine()
    yield from _backends("net")


@pytest.fixture
def own_backends(images):
    """A network and backends of this test's own, for a test that replaces
    one of them."""
    _need_engine()
    yield from _backends("own")


@pytest.fixture
def containers():
    """Containers a test starts (append them); removed at teardown, pass or
    fail, with their logs printed on failure."""
    started = []
    yield started
    for c in started:
        sys.stderr.write("\n--- logs of %s ---\n%s" % (c.name, c.logs()[-6000:]))
        c.remove()
