"""pytest plugin for `make check-peers` (loaded with -p peers_plugin).

Leaves out the tests expected.py names, runs the tests it names in
ONE_SIGNAL_AT_A_TIME once per signal, holds the documented differences to
their reasons, cleans up after every test, and prints one summary line per
peer, which it also writes to $PEERS_RESULT for mk/peers.sh.

Environment: PEERS_PEER (tini or dumb-init), PEERS_AGAINST (peerprep-init,
or control for the real peer), PEERS_RESULT (file for the counts).
"""
import ctypes
import os
import signal

import psutil
import pytest

import expected

PEER = os.environ.get("PEERS_PEER", "")
AGAINST = os.environ.get("PEERS_AGAINST", "")
PR_SET_CHILD_SUBREAPER = 36


def _key(item):
    """FILE::NAME[PARAMS], FILE::NAME and FILE, the ways expected.py names a
    test; a test run once per signal is FILE::NAME[SIGNAME] instead of
    FILE::NAME, which would name every signal's variant at once."""
    name = item.path.name
    params = getattr(getattr(item, "callspec", None), "params", {})
    func = name + "::" + item.originalname
    if "peers_signal" in params:
        func += "[%s]" % signal.Signals(params["peers_signal"]).name
    return name + "::" + item.name, func, name


def _one_signal_at_a_time(path, name):
    return "%s::%s" % (path.name, name) in expected.ONE_SIGNAL_AT_A_TIME.get(PEER, [])


def _patterns(because):
    return (because,) if isinstance(because, str) else tuple(because)


def _left_out(item):
    full, func, file_ = _key(item)
    for test, why in expected.LEFT_OUT.get(PEER, []):
        if test in (full, func, file_):
            return test, why
    params = getattr(getattr(item, "callspec", None), "params", {})
    for param, value, why in expected.LEFT_OUT_VARIANTS.get(PEER, []):
        if param in params:
            got = params[param]
            if (value == "non-empty" and got) or got == value:
                return "%s=%s" % (param, value), why
    return None


def _difference(item):
    if AGAINST == "control":
        return None
    full, func, _ = _key(item)
    for test, because, why in expected.DIFFERENCES.get(PEER, []):
        if test in (full, func):
            return test, because, why
    return None


class _State:
    left_out = {}       # reason -> count
    differences = []    # (nodeid, reason) that failed as documented
    used = set()        # expected.py entries that matched a test
    counts = {"passed": 0, "failed": 0, "differences": 0, "left out": 0}


def pytest_configure(config):
    if PEER not in expected.LEFT_OUT or AGAINST not in ("peerprep-init", "control"):
        raise pytest.UsageError("peers_plugin: set PEERS_PEER (tini, dumb-init) and "
                                "PEERS_AGAINST (peerprep-init, control)")
    # Orphans of a test that failed half-way come back to pytest, so the
    # clean-up below finds them.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise pytest.UsageError("peers_plugin: cannot become a child subreaper")


# A test named in expected.ONE_SIGNAL_AT_A_TIME loops over its module's
# NORMAL_SIGNALS (dumb-init's testing.NORMAL_SIGNALS) with one init and
# stops at its first failed assertion, so a signal that differs would hide
# every signal after it. It runs instead once per signal, each with a fresh
# init: the peers_signal fixture leaves one signal in NORMAL_SIGNALS, and
# the test's own body (print_signals, the send, the assertion) does the rest.
def pytest_pycollect_makeitem(collector, name, obj):
    if callable(obj) and _one_signal_at_a_time(collector.path, name):
        pytest.mark.usefixtures("peers_signal")(obj)
        _State.used.add("%s::%s" % (collector.path.name, name))


def pytest_generate_tests(metafunc):
    if "peers_signal" in metafunc.fixturenames:
        sigs = sorted(metafunc.module.NORMAL_SIGNALS)
        metafunc.parametrize("peers_signal", sigs, indirect=True,
                             ids=[signal.Signals(s).name for s in sigs])


@pytest.fixture
def peers_signal(request, monkeypatch):
    monkeypatch.setattr(request.module, "NORMAL_SIGNALS", frozenset([request.param]))
    return request.param


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        out = _left_out(item)
        if out:
            _State.used.add(out[0])
            _State.left_out[out[1]] = _State.left_out.get(out[1], 0) + 1
            drop.append(item)
            continue
        diff = _difference(item)
        if diff:
            _State.used.add(diff[0])
        keep.append(item)
    stale = [t for t, _ in expected.LEFT_OUT.get(PEER, [])] + \
            [t for t, _, _ in expected.DIFFERENCES.get(PEER, [])] + \
            expected.ONE_SIGNAL_AT_A_TIME.get(PEER, [])
    stale = [t for t in stale if t not in _State.used]
    if stale and AGAINST != "control":
        _State.counts["failed"] += len(stale)
        raise pytest.UsageError("peers_plugin: expected.py names tests that %s's suite "
                                "does not have: %s" % (PEER, ", ".join(stale)))
    _State.counts["left out"] = len(drop)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def _how_ended(pid):
    """How a child of pytest that has ended ended, without reaping it; None
    while it runs."""
    try:
        st = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return "gone"
    if st is None or st.si_pid == 0:
        return None
    if st.si_code == os.CLD_EXITED:
        return "exited with %d" % st.si_status
    return "killed by %s%s" % (signal.Signals(st.si_status).name,
                               " (core dumped)" if st.si_code == os.CLD_DUMPED else "")


def _processes_left():
    """One line per direct child of pytest (the init a test started, and
    whatever was reparented to pytest): what it is and whether it still
    runs. Taken before the clean-up, it tells an init that died from one
    that did not pass a signal on."""
    lines = []
    for p in psutil.Process().children():
        try:
            name = p.name()
        except psutil.Error:
            continue
        ended = _how_ended(p.pid)
        lines.append("%s: %s (pid %d)" % (name, ended or "running", p.pid))
    return "\n".join(lines) or "none"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        rep.sections.append(("peers: pytest's children after the failure",
                             _processes_left()))
    diff = _difference(item)
    if rep.when != "call" or not diff:
        return
    test, because, why = diff
    if rep.passed:
        rep.outcome = "failed"
        rep.longrepr = ("%s is listed as a documented difference (%s) but passed: "
                        "take it off tests/peers/expected.py" % (test, why))
    elif rep.failed:
        text = rep.longreprtext
        seen = "\n".join([text] + [content for _, content in rep.sections])
        missing = [p for p in _patterns(because) if p not in seen]
        if not missing:
            rep.outcome = "skipped"
            rep.wasxfail = why
            _State.differences.append((item.nodeid, why))
        else:
            rep.longrepr = ("%s\n\nfailed, but not for its documented difference "
                            "(the failure lacks %s)" % (text, ", ".join(map(repr, missing))))


@pytest.fixture(autouse=True)
def _peers_clean_up():
    """Kills whatever a test left running (a hung peer, a print_signals the
    test did not reach its own clean-up for) and reaps it."""
    yield
    me = psutil.Process()
    for _ in range(50):
        left = me.children(recursive=True)
        if not left:
            break
        for p in left:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=1)
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


def pytest_runtest_logreport(report):
    if report.when == "call":
        if report.passed:
            _State.counts["passed"] += 1
        elif report.failed:
            _State.counts["failed"] += 1
        elif hasattr(report, "wasxfail"):
            _State.counts["differences"] += 1
    elif report.failed:  # setup or teardown
        _State.counts["failed"] += 1


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    c = _State.counts
    tr.section("%s against %s" % (PEER, AGAINST))
    for nodeid, why in _State.differences:
        tr.write_line("expected difference: %s: %s" % (nodeid, why))
    for why, n in sorted(_State.left_out.items()):
        tr.write_line("left out (%d): %s" % (n, why))
    if PEER == "tini":
        tr.write_line("left out: the steps for tini's own flags and messages are not "
                      "replayed (tini_steps.py names them)")
    line = "%s against %s: %d passed, %d failed, %d expected differences, %d left out" % (
        PEER, AGAINST, c["passed"], c["failed"], c["differences"], c["left out"])
    tr.write_line(line)
    path = os.environ.get("PEERS_RESULT")
    if path:
        with open(path, "w") as f:
            f.write("%d %d %d %d\n%s\n" % (c["passed"], c["failed"], c["differences"],
                                           c["left out"], line))
