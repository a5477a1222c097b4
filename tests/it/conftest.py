"""Shared fixtures for the process-level tests: `bed` (a fresh test bed per
test, see tests/testbed.py) and `pi_binary` (the init under test)."""

import os
import signal
import sys

import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import testbed  # noqa: E402


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("test beds need root (namespaces and mounts)")


def started_bed(request, **opts):
    """A fresh bed (testbed.Bed(**opts)) for a fixture to yield from.
    Everything in it is killed at teardown, pass or fail; on failure the
    holder's and dnsmasq's logs are printed."""
    _need_root()
    b = testbed.Bed(**opts).start()
    try:
        yield b
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            sys.stderr.write("\n" + b.logs() + "\n")
        b.stop()


@pytest.fixture
def bed(request):
    """A fresh bed with the six stub upstreams under peerprep-prod.internal."""
    yield from started_bed(request)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def pi_binary():
    """Path of the init under test: $PI_BINARY, else build/peerprep-init."""
    path = os.environ.get("PI_BINARY") or os.path.join(REPO, "build", "peerprep-init")
    if not os.access(path, os.X_OK):
        pytest.skip("no init binary at %s (run make, or set PI_BINARY)" % path)
    return os.path.abspath(path)


# Every test has a deadline, so a hang fails one test instead of CI's whole
# budget. $PI_TEST_TIMEOUT (seconds) overrides the default; a test can ask
# for more with @pytest.mark.timeout(N).
DEFAULT_TIMEOUT = float(os.environ.get("PI_TEST_TIMEOUT", "120"))


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): this test's deadline")


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    marker = request.node.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker else DEFAULT_TIMEOUT
    if os.environ.get("PI_BINARY", "").find("/asan/") >= 0:
        seconds *= 3

    def expired(signum, frame):
        raise TestTimeout("test exceeded its %.0f s deadline" % seconds)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
