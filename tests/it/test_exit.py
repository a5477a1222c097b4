"""Exit paths (SPEC §5, §7) are as designed as start paths: nothing PID 1
waits on — a lookup in the resolver's threadpool, a pipe, a child — may
delay its exit; resource limits end in a message and exit 2, never a
crash."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import testbed
from pi import BIN, Init, base_env, free_port, wait_for

SILENT = "silent.peerprep-prod.internal"


SILENT_DNS = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.54", 53))
print("listening", flush=True)
end = time.monotonic() + 300
while time.monotonic() < end:
    s.settimeout(1)
    try:
        s.recvfrom(4096)  # and never answer
    except OSError:
        pass
"""


def silent_bed():
    """A bed whose resolver points at a nameserver that reads every query
    and never answers, with the resolver told to wait 20 s: each lookup
    is in flight that long."""
    b = testbed.Bed().start()
    ns = b.run(["/usr/bin/python3", "-c", SILENT_DNS], stdout=subprocess.PIPE)
    assert ns.popen.stdout.readline() == b"listening\n"
    with open(os.path.join(b.dir, "resolv.conf"), "w") as f:  # in place: bind-mounted
        f.write("nameserver 127.0.0.54\noptions timeout:20 attempts:1\n")
    return b, ns


def in_bed(bed, tmp_path, args, **env):
    log_path = tmp_path / "init.log"
    log = open(log_path, "wb")
    e = base_env(tmp_path, **env)
    p = bed.run([BIN] + args, env=e, new_pidns=True, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
    log.close()
    return p, lambda: log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def silent(request):
    if os.geteuid() != 0:
        pytest.skip("test beds need root")
    b, ns = silent_bed()
    yield b
    ns.kill()
    b.stop()


def exit_while_waiting(silent, tmp_path, wait, sig=None):
    """Starts the init waiting for the silent host; sends sig once the wait
    has begun (a lookup is then in flight for 20 s). Returns (exit code,
    seconds from the signal, or from the start of the wait, to the exit,
    log)."""
    p, read = in_bed(silent, tmp_path, ["--", "true"], PEERPREP_INIT_UPSTREAMS_HOSTS="NGINX_*_HOST",
                     NGINX_X_HOST=SILENT, PEERPREP_INIT_UPSTREAMS_WAIT=wait)
    try:
        wait_for(lambda: "waiting for upstream hosts" in read(), 10, what="the wait")
        t0 = time.monotonic()
        if sig:
            p.send_signal(sig)
        rc = p.wait(30)
        return rc, time.monotonic() - t0, read()
    finally:
        p.kill()


def test_term_with_a_lookup_in_flight_exits_at_once(silent, tmp_path):
    rc, elapsed, log = exit_while_waiting(silent, tmp_path, "60s", signal.SIGTERM)
    print("SIGTERM with a lookup in flight: exit in %.0f ms" % (elapsed * 1000))
    assert rc == 0, log
    assert elapsed < 0.5, "%.2f s" % elapsed


def test_exit_4_comes_when_the_wait_ends(silent, tmp_path):
    rc, elapsed, log = exit_while_waiting(silent, tmp_path, "1s")
    print("upstreams.wait=1s, silent DNS: exit 4 after %.0f ms" % (elapsed * 1000))
    assert rc == 4, log
    assert elapsed < 1.0 + 0.3, "%.2f s" % elapsed


def test_child_exit_with_a_recheck_in_flight_exits_at_once(silent, tmp_path):
    # The host resolves from /etc/hosts at start; then it is taken out, so
    # the next recheck (every 100 ms) asks the silent DNS and hangs there.
    hosts = os.path.join(silent.dir, "etc-hosts")
    with open(hosts) as f:
        original = f.read()
    with open(hosts, "a") as f:
        f.write("127.0.0.9 %s\n" % SILENT)
    flag = tmp_path / "go"
    script = "while [ ! -e %s ]; do sleep 0.02; done; exit 3" % flag
    p, read = in_bed(silent, tmp_path, ["--", "sh", "-c", script],
                     PEERPREP_INIT_UPSTREAMS_HOSTS="NGINX_*_HOST", NGINX_X_HOST=SILENT,
                     PEERPREP_INIT_UPSTREAMS_RECHECK="100ms")
    try:
        wait_for(lambda: "msg=started" in read(), 10, what="the child")
        with open(hosts, "w") as f:  # in place: the file is bind-mounted
            f.write(original)
        time.sleep(0.5)  # five recheck periods: one lookup is in flight for 20 s
        t0 = time.monotonic()
        flag.touch()
        rc = p.wait(30)
        elapsed = time.monotonic() - t0
        print("child exit with a recheck in flight: exit in %.0f ms" % (elapsed * 1000))
        assert rc == 3, read()
        assert elapsed < 0.5, "%.2f s" % elapsed
    finally:
        p.kill()


@pytest.mark.parametrize("args", [["--", "true"], ["check"], ["render"]],
                         ids=["run", "check", "render"])
@pytest.mark.parametrize("nofile", range(4, 13))  # 3: the ASan build cannot load
def test_few_descriptors_is_a_message_and_exit_2_never_a_crash(tmp_path, nofile, args):
    env = base_env(tmp_path, PEERPREP_INIT_HEALTH_LISTEN="127.0.0.1:%d" % free_port(),
                   PEERPREP_INIT_HEALTH_PROBE="")
    (tmp_path / "templates").mkdir()
    # A template, so that the render itself needs descriptors (the folder,
    # the template, the temp file): running out there is exit 2 as well.
    (tmp_path / "templates" / "a.conf.template").write_text("x\n")
    p = subprocess.run(["prlimit", "--nofile=%d:%d" % (nofile, nofile), BIN] + args,
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    err = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode in (0, 2), (p.returncode, err)
    if p.returncode == 2:
        assert "level=error" in err or "FAIL" in err, err
        assert "too many open files" in err.lower() or "No file descriptors available" in err, err
    assert "AddressSanitizer" not in err and "Assertion" not in err, err


def test_closed_standard_descriptors_get_dev_null(tmp_path):
    # With 0-2 closed, the loop's descriptors would take those numbers and
    # the child's output (and our logs) would land in them.
    out = tmp_path / "fds"
    script = ("import os; open(%r, 'w').write(' '.join(os.readlink('/proc/self/fd/%%d' %% i)"
              " for i in range(3)))" % str(out))
    p = subprocess.Popen([BIN, "--", "/usr/bin/python3", "-c", script], env=base_env(tmp_path),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)])
    assert p.wait(10) == 0
    assert out.read_text().split() == ["/dev/null"] * 3


def test_leftovers_in_the_childs_group_are_stopped_at_once(tmp_path):
    """The child leaves a process group behind: a shell waiting for a
    sleep. The sleep is no child of the init, only a member of the child's
    group: it gets SIGTERM through the group at once, so the init does not
    wait out its grace period."""
    pids = tmp_path / "gg"
    script = ("sh -c 'sleep 300 & echo $! > %s; wait' & "
              "while [ ! -s %s ]; do sleep 0.01; done; exit 7") % (pids, pids)
    init = Init(["--", "sh", "-c", script], base_env(tmp_path), tmp_path / "init.log",
                pid1=False)
    try:
        t0 = time.monotonic()
        assert init.wait(10) == 7
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5, "waited %.2f s for leftovers" % elapsed
        assert "processes left" not in init.text()
    finally:
        init.stop()


@pytest.mark.parametrize("hosts", [False, True], ids=["started-first", "waiting"])
def test_health_port_taken_is_exit_2_and_the_child_does_not_outlive_it(tmp_path, hosts):
    """With no upstream host to wait for, the child starts before /health
    listens (it is on the way to nginx's first answer): a taken health port
    then stops that child (exit 2, nothing left behind). With hosts, the
    listener comes first and the child never starts."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    marker = tmp_path / "child-ran"
    env = base_env(tmp_path, PEERPREP_INIT_HEALTH_LISTEN="127.0.0.1:%d" % taken.getsockname()[1],
                   PEERPREP_INIT_HEALTH_PROBE="")
    if hosts:
        env.update(PEERPREP_INIT_UPSTREAMS_HOSTS="NGINX_*_HOST", NGINX_X_HOST="127.0.0.1")
    script = "touch %s; exec sleep 300" % marker
    init = Init(["--", "sh", "-c", script], env, tmp_path / "init.log", pid1=False)
    try:
        assert init.wait(10) == 2, init.text()
        assert "cannot serve health" in init.text(), init.text()
        # The init stopped the child itself: that is not the child failing.
        assert "exited unexpectedly" not in init.text(), init.text()
        if hosts:
            assert not marker.exists() and "msg=started" not in init.text(), init.text()
        # Not PID 1 here: the init itself must have stopped the child.
        left = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True)
        for pid in left.stdout.split():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    env_of = f.read()
            except OSError:
                continue  # gone meanwhile
            assert str(tmp_path).encode() not in env_of, "child %s outlived the init" % pid
    finally:
        init.stop()
        taken.close()


PIDS = "/sys/fs/cgroup/pids"


@pytest.mark.skipif(not os.path.isdir(PIDS), reason="no cgroup-v1 pids controller")
def test_a_fork_refused_by_a_process_limit_is_exit_2_not_126(tmp_path):
    # pids.max 1: the init is the group's one process, so the kernel
    # refuses its fork (EAGAIN). That is a limit (2), not a command that
    # cannot be executed (126).
    cg = tempfile.mkdtemp(prefix="pi-test-", dir=PIDS)
    try:
        with open(os.path.join(cg, "pids.max"), "w") as f:
            f.write("1")
        marker = tmp_path / "ran"
        env = base_env(tmp_path)
        # The ASan build's leak check needs a task of its own at exit, which
        # the same limit refuses; this test is about the exit code.
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        p = subprocess.run(["sh", "-c", 'echo $$ > %s/cgroup.procs && exec "$@"' % cg, "sh",
                            BIN, "--", "touch", str(marker)],
                           env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20)
        err = p.stderr.decode(errors="replace")
        assert p.returncode == 2, (p.returncode, err)
        assert "cannot start the command" in err and "temporarily unavailable" in err, err
        assert not marker.exists()
    finally:
        os.rmdir(cg)


@pytest.mark.parametrize("blank", [" ", " \t\n"], ids=["space", "blanks"])
def test_a_config_test_of_blanks_only_is_no_test(tmp_path, blank):
    # The config takes it as "skip the test"; run and check then agree.
    env = base_env(tmp_path, PEERPREP_INIT_NGINX_TEST=blank)
    run = subprocess.run([BIN, "--", "true"], env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=20)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    check = subprocess.run([BIN, "check"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20)
    assert check.returncode == 0, (check.stdout + check.stderr).decode(errors="replace")
