"""tini's general tests, one test per step of tini's own drivers.

tini's drivers (test/run_inner_tests.py, test/run_outer_tests.py and the
smoke tests in ci/run_build.sh) are single scripts whose first failed
assertion ends the whole run, so they cannot say which steps pass. This
file replays each general step as a test of its own: the same command, the
same test programs from tini's source package (PEERS_TINI_SRC), the same
expected result; each test names the driver lines it replays. `tini` is
whatever comes first in PATH: the real one for the control run, the
peerprep-init stand-in otherwise.

Not replayed, because they test tini's own flags or messages: the exit code
remapping (-e), reaping display (-w), process-group kill (-g,
TINI_KILL_PROCESS_GROUP), parent-death signal (-p), -s, -v, -l, -h,
--version, TINI_VERBOSITY, flag-named binaries, "-- --", tini's
"zombie reaping won't work" warning, valgrind and the package installs.

Two things differ from the drivers, neither in what is asserted: steps
that ran in a Docker container run as PID 1 of a fresh pid namespace
(unshare), with `docker kill` becoming a kill of that PID 1 and `docker
attach` the same terminal; and where run_outer_tests.py sleeps 2 s before
sending a signal, the step waits for the test program to be running, as
run_inner_tests.py does, so no step passes or fails by timing.
"""
import os
import re
import shutil
import signal
import subprocess
import time

import pexpect
import psutil
import pytest

SRC = os.environ.get("PEERS_TINI_SRC", "")
SIGCONF = os.environ.get("PEERS_SIGCONF", "")
# A path, as in tini's drivers: subreaper-proxy.py execs it without a PATH
# search.
TINI = shutil.which("tini") or "tini"
# What run_outer_tests.py's Command(...).run(timeout=10) allows a step.
STEP_TIMEOUT = 10
SIGNUM_TO_SIGNAME = dict(
    (v, k) for k, v in signal.__dict__.items() if re.match("^SIG[A-Z]+$", k)
)


def tini_file(*parts):
    return os.path.join(SRC, "test", *parts)


def busy_wait(condition_callable, timeout):
    """run_inner_tests.py's busy_wait, unchanged."""
    checks = 100
    increment = float(timeout) / checks

    for _ in range(checks):
        if condition_callable():
            return
        time.sleep(increment)

    assert False, "Condition was never met"


def container(cmd):
    """The command as PID 1 of a fresh pid namespace, in a session of its
    own, as `docker run` starts an entrypoint."""
    return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "setsid"] + cmd


def container_init(outer_pid):
    """Host pid of PID 1 inside the namespace started by `outer_pid`."""
    found = []

    def started():
        found[:] = [c.pid for c in psutil.Process(outer_pid).children()]
        return bool(found)

    busy_wait(started, STEP_TIMEOUT)
    return found[0]


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=STEP_TIMEOUT, **kw).returncode


# ---- ci/run_build.sh: smoke tests ------------------------------------------

def test_smoke_true():
    """run_build.sh:93-94: `"${tini}" true` succeeds."""
    assert run([TINI, "true"]) == 0


def test_smoke_false():
    """run_build.sh:96-99: `"${tini}" false` fails."""
    assert run([TINI, "false"]) != 0


def test_smoke_command_not_found():
    """run_build.sh:152-157: exits with 127 if the command does not exist."""
    rc = run([TINI, "foobar123"])
    assert rc == 127, "Exit code was: %s" % rc


def test_smoke_command_not_executable():
    """run_build.sh:159-164: exits with 126 if the command is not executable."""
    rc = run([TINI, "/etc"])
    assert rc == 126, "Exit code was: %s" % rc


def test_smoke_pipes():
    """run_build.sh:166-172: stdin and stdout are handed over to the child
    (`echo "exit 0" | "${tini}" sh`)."""
    rc = subprocess.run([TINI, "sh"], input=b"exit 0\n", timeout=STEP_TIMEOUT).returncode
    assert rc == 0, "Pipe test failed"


# ---- test/run_inner_tests.py -----------------------------------------------

# run_inner_tests.py:77-82 with FORCE_SUBREAPER=1: tini under a subreaper
# proxy, and tini as the subreaper itself.
TARGETS = {
    "proxy": (lambda: [tini_file("subreaper-proxy.py"), TINI], {}),
    "subreaper": (lambda: [TINI], {"TINI_SUBREAPER": ""}),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_inner_reaping(target):
    """run_inner_tests.py:84-105: every zombie reaped, exit 0."""
    cmd, env = TARGETS[target]
    p = subprocess.Popen(
        cmd() + [tini_file("reaping", "stage_1.py")],
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    out, err = p.communicate(timeout=STEP_TIMEOUT)
    # Subreaper support is always there (FORCE_SUBREAPER=1).
    assert "zombie reaping won't work" not in err, "Warning message was output!"
    ret = p.wait()
    assert (
        "Reaped zombie process with pid=" not in err
    ), "Warning message was output!"
    assert ret == 0, "Reaping test failed!\nOUT: %s\nERR: %s" % (out, err)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2],
                         ids=lambda s: s.name)
@pytest.mark.parametrize("target", list(TARGETS))
def test_inner_signal(target, signum):
    """run_inner_tests.py:130-152: a signal to the init reaches the child,
    which dies of it; the init exits 128 + signal."""
    cmd, env = TARGETS[target]
    p = subprocess.Popen(
        cmd() + [tini_file("signals", "test.py")],
        env=dict(os.environ, **env),
        universal_newlines=True,
    )
    busy_wait(
        lambda: len(psutil.Process(p.pid).children(recursive=True)) > 1, 10
    )
    p.send_signal(signum)
    ret = p.wait(timeout=STEP_TIMEOUT)
    assert (
        ret == 128 + signum
    ), "Signals test failed (ret was {0}, expected {1})".format(
        ret, 128 + signum
    )


def test_inner_sigconf():
    """run_inner_tests.py:198-243: the signals the init's parent ignored or
    blocked stay ignored or blocked in the child."""
    p = subprocess.Popen(
        [SIGCONF, TINI, "cat", "/proc/self/status"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    out, err = p.communicate(timeout=STEP_TIMEOUT)

    # tini parses the masks with the `bitmap` module (not in Debian); a
    # shift of the same hex number is the same set.
    props = dict(line.split(":", 1) for line in out.splitlines())
    props = dict((k.strip(), int(v.strip(), 16)) for k, v in props.items()
                 if k.strip() in ["SigBlk", "SigIgn", "SigCgt"])

    for signal_set_name, signals_to_test_for in [
        ("SigIgn", [signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT]),
        ("SigBlk", [signal.SIGTTIN, signal.SIGILL, signal.SIGTERM]),
    ]:
        for signum in signals_to_test_for:
            assert props[signal_set_name] >> (signum - 1) & 1, "{0} ({1}) is missing in {2}!".format(
                SIGNUM_TO_SIGNAME[signum], signum, signal_set_name
            )


# ---- test/run_outer_tests.py (in a container) ------------------------------

def test_outer_reaping():
    """run_outer_tests.py:145-146: the reaping test with the init as PID 1."""
    rc = run(container([TINI, tini_file("reaping", "stage_1.py")]))
    assert rc == 0, "Test failed with unexpected returncode (expected 0, got %s)" % rc


@pytest.mark.parametrize("sig,retcode", [("TERM", 143), ("USR1", 138), ("USR2", 140)],
                         ids=["SIGTERM", "SIGUSR1", "SIGUSR2"])
def test_outer_signal(sig, retcode):
    """run_outer_tests.py:148-155: `docker kill -s SIG` to PID 1; the child
    dies of it and the container exits 128 + signal."""
    p = subprocess.Popen(container([TINI, tini_file("signals", "test.py")]),
                         stdin=subprocess.DEVNULL)
    init = container_init(p.pid)
    # test.py runs `sleep 100` through os.system: its handlers are set once
    # the sleep is there.
    busy_wait(lambda: len(psutil.Process(init).children(recursive=True)) > 1, 10)
    os.kill(init, getattr(signal, "SIG" + sig))
    try:
        rc = p.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Exception("Test failed with timeout!")
    assert rc == retcode, \
        "Test failed with unexpected returncode (expected {0}, got {1})".format(retcode, rc)


def test_outer_command_not_found():
    """run_outer_tests.py:160: `zzzz` as the command exits 127."""
    rc = run(container([TINI, "zzzz"]))
    assert rc == 127, "Test failed with unexpected returncode (expected 127, got %s)" % rc


def tty_handling(container_command, exit_function, expect_exit_code):
    """run_outer_tests.py:83-116: the init on a terminal (`docker run --tty
    --interactive`) as the session's leader, an interactive shell as its
    command."""
    # One string, split by pexpect as in tini's driver.
    cmd = " ".join(container(["--ctty", TINI, "--"]) + [container_command])
    p = pexpect.spawn(cmd, timeout=2)
    try:
        try:
            p.expect_exact("#")
        except pexpect.TIMEOUT:
            raise Exception("Timeout waiting for shell to spawn")
        exit_function(p)
        deadline = time.monotonic() + 2
        while p.isalive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if p.isalive():
            raise Exception("Timeout waiting for container to exit!")
        p.close()
        rc = p.exitstatus if p.exitstatus is not None else 128 + p.signalstatus
        if rc != expect_exit_code:
            raise Exception("Return code is: {0} (expected {1})".format(rc, expect_exit_code))
    finally:
        p.close(force=True)


def test_outer_tty_exit():
    """run_outer_tests.py:168: `dash` on the terminal, `exit 0` typed."""
    def attach_and_type_exit_0(p):
        p.sendline('')
        p.sendline('exit 0')
    tty_handling("dash", attach_and_type_exit_0, 0)


def test_outer_tty_ctrl_c():
    """run_outer_tests.py:169: a dash loop on the terminal, Ctrl-C typed:
    the child dies of SIGINT, the init exits 130."""
    def attach_and_issue_ctrl_c(p):
        p.sendintr()
    tty_handling("dash -c 'while true; do echo \\#; sleep 0.1; done'",
                 attach_and_issue_ctrl_c, 128 + signal.SIGINT)
