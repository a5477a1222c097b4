"""Exit paths (SPEC §5, §7) are as designed as start paths: nothing PID 1
waits on — a lookup in the resolver's threadpool, a pipe, a child — may
delay its exit; resource limits end in a message and exit 2, never a
crash."""
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import testbed
from pi import BIN, Init, base_env, free_port, proc_state, wait_for

SILENT = "silent.peerprep-prod.internal"


SILENT_DNS = """
import socket, sys, time
log = open(sys.argv[1], "a")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.54", 53))
print("listening", flush=True)
end = time.monotonic() + 300
while time.monotonic() < end:
    s.settimeout(1)
    try:
        q, _ = s.recvfrom(4096)  # and never answer
    except OSError:
        continue
    # Record the question's name, one line per query received: a lookup
    # of it is then in flight (for the resolver's 20 s timeout).
    labels, i = [], 12
    while i < len(q) and q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
        i += 1 + q[i]
    log.write(".".join(labels) + "\\n")
    log.flush()
"""


def silent_bed():
    """A bed whose resolver points at a nameserver that reads every query
    and never answers, with the resolver told to wait 20 s: each lookup
    is in flight that long. The nameserver appends the name of every
    question it receives to queries_log(bed)."""
    b = testbed.Bed().start()
    ns = b.run(["/usr/bin/python3", "-c", SILENT_DNS, queries_log(b)], stdout=subprocess.PIPE)
    assert ns.popen.stdout.readline() == b"listening\n"
    with open(os.path.join(b.dir, "resolv.conf"), "w") as f:  # in place: bind-mounted
        f.write("nameserver 127.0.0.54\noptions timeout:20 attempts:1\n")
    return b, ns


def queries_log(bed):
    return os.path.join(bed.dir, "silent-queries")


def silent_queries(bed):
    """How many questions for SILENT the silent nameserver has received."""
    try:
        with open(queries_log(bed)) as f:
            return f.read().split("\n").count(SILENT)
    except FileNotFoundError:
        return 0


def wait_for_a_lookup(bed, before, what):
    """Waits until the silent nameserver has received a question for SILENT
    beyond the `before` it had: that lookup now hangs for 20 s."""
    wait_for(lambda: silent_queries(bed) > before, 10, what=what)


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
    has begun and its lookup has reached the silent nameserver (it is then
    in flight for 20 s). Returns (exit code, seconds from the signal, or
    from that moment, to the exit, seconds from the launch to the exit,
    log)."""
    before = silent_queries(silent)
    t_launch = time.monotonic()
    p, read = in_bed(silent, tmp_path, ["--", "true"], PEERPREP_INIT_UPSTREAMS_HOSTS="NGINX_*_HOST",
                     NGINX_X_HOST=SILENT, PEERPREP_INIT_UPSTREAMS_WAIT=wait)
    try:
        wait_for(lambda: "waiting for upstream hosts" in read(), 10, what="the wait")
        wait_for_a_lookup(silent, before, "the wait's lookup at the silent nameserver")
        t0 = time.monotonic()
        if sig:
            p.send_signal(sig)
        rc = p.wait(30)
        t1 = time.monotonic()
        return rc, t1 - t0, t1 - t_launch, read()
    finally:
        p.kill()


def test_term_with_a_lookup_in_flight_exits_at_once(silent, tmp_path):
    rc, elapsed, _, log = exit_while_waiting(silent, tmp_path, "60s", signal.SIGTERM)
    print("SIGTERM with a lookup in flight: exit in %.0f ms" % (elapsed * 1000))
    assert rc == 0, log
    # An init that joins the resolver's threadpool at exit (or lets the
    # lookup finish) takes the 20 s of the resolver's timeout; one that
    # ignores SIGTERM during the wait, the 60 s of the wait. 10 s leaves a
    # loaded VM and the ASan build's exit-time leak check room.
    assert elapsed < 10.0, "%.2f s" % elapsed


def test_exit_4_comes_when_the_wait_ends(silent, tmp_path):
    rc, elapsed, since_launch, log = exit_while_waiting(silent, tmp_path, "1s")
    print("upstreams.wait=1s, silent DNS: exit 4 after %.0f ms (%.0f ms from the launch)"
          % (elapsed * 1000, since_launch * 1000))
    assert rc == 4, log
    # Not before the wait is over: the wait began after the launch, so it
    # cannot have lasted its 1 s before 1 s after it (0.1 s for the
    # event loop's cached clock, which can start the timer a little early).
    assert since_launch >= 0.9, "%.2f s" % since_launch
    # An init that waits for the hung lookup before it gives up exits only
    # when the resolver's 20 s timeout ends it: 1 s of wait plus 9 s of room
    # for a loaded machine.
    assert elapsed < 1.0 + 9.0, "%.2f s" % elapsed


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
        # Counted while the name is still in /etc/hosts: no lookup of this
        # init's has reached the nameserver yet, so the next one is a recheck.
        before = silent_queries(silent)
        with open(hosts, "w") as f:  # in place: the file is bind-mounted
            f.write(original)
        wait_for_a_lookup(silent, before, "a recheck's lookup at the silent nameserver")
        t0 = time.monotonic()
        flag.touch()
        rc = p.wait(30)
        elapsed = time.monotonic() - t0
        print("child exit with a recheck in flight: exit in %.0f ms" % (elapsed * 1000))
        assert rc == 3, read()
        # An init that waits for the recheck's lookup (joins the resolver's
        # threadpool at exit) takes the resolver's 20 s timeout; 10 s is a
        # loaded machine's room.
        assert elapsed < 10.0, "%.2f s" % elapsed
        assert "the child exited unexpectedly" in read(), read()
    finally:
        p.kill()


PROBE_HEALTH = """
import http.client, json, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
end = time.monotonic() + 10
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        r = c.getresponse()
        got = "%d %s" % (r.status, json.loads(r.read())["status"])
        break
    except OSError:
        if time.monotonic() > end:
            got = "unreachable"
            break
        time.sleep(0.02)
with open(out, "w") as f:
    f.write(got)
"""


def _io_uring_ring():
    """1 when the kernel lets this process set up an io_uring (libuv's event
    loop then holds a ring: one descriptor more), else 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(425, ctypes.c_uint(4), params)  # io_uring_setup
    if fd < 0:
        return 0
    os.close(fd)
    return 1


# What each command does with RLIMIT_NOFILE = n, found by trying every n
# (the same with the release and the ASan build; 0-2 are taken): below
# `upto` the step `msg` runs out and says so (exit 2); from RUNS_FROM on
# the command does its whole job. With an io_uring ring: the render needs
# the folder, the template and the temp file (3-4 at once); the event
# loop its epoll, libuv's ring, two pipes and an eventfd (3-9); `run` then
# the signal reader (10), the health listener and libuv's reserve
# descriptor for EMFILE (11-12), and /health one more to accept a
# connection (13: without it libuv accepts and closes every connection, so
# the init refuses to start, as it does below 13). Without a ring, each
# step from the event loop on needs one descriptor less.
RING = _io_uring_ring()
RUNS_OUT_AT = [(5, "cannot read template"), (9 + RING, "cannot start the event loop"),
               (10 + RING, "cannot read signals"), (13 + RING, "cannot serve health")]
RUNS_FROM = {"run": 13 + RING, "check": 9 + RING, "render": 5}


@pytest.mark.parametrize("cmd", ["run", "check", "render"])
@pytest.mark.parametrize("nofile", range(4, 15))  # 3: the ASan build cannot load
def test_few_descriptors_is_a_message_and_exit_2_never_a_crash(request, tmp_path, nofile, cmd):
    port = free_port()
    probed = tmp_path / "health-seen-by-the-child"
    # For `run` the child asks /health itself (the listener comes up after
    # the child has started), so a normal run proves the listener served.
    args = {"run": ["--", "/usr/bin/python3", "-c", PROBE_HEALTH, str(port), str(probed)],
            "check": ["check"], "render": ["render"]}[cmd]
    env = base_env(tmp_path, PEERPREP_INIT_HEALTH_LISTEN="127.0.0.1:%d" % port,
                   PEERPREP_INIT_HEALTH_PROBE="")
    (tmp_path / "templates").mkdir()
    # A template, so that the render itself needs descriptors (the folder,
    # the template, the temp file): running out there is exit 2 as well.
    (tmp_path / "templates" / "a.conf.template").write_text("x ${NGINX_Y:-y}\n")
    p = subprocess.run(["prlimit", "--nofile=%d:%d" % (nofile, nofile), BIN] + args,
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    err = (p.stdout + p.stderr).decode(errors="replace")
    assert "AddressSanitizer" not in err and "Assertion" not in err, err
    out = tmp_path / "conf.d"
    # Whatever the outcome, no temp file (.a.conf.XXXXXX) or kept link is
    # left behind.
    assert not out.exists() or sorted(os.listdir(out)) in ([], ["a.conf"]), os.listdir(out)
    if nofile >= RUNS_FROM[cmd]:
        assert p.returncode == 0, (p.returncode, err)
        assert "too many open files" not in err.lower(), err
        assert (out / "a.conf").read_text() == "x y\n"
        if cmd == "check":
            assert "FAIL" not in err, err
        if cmd == "run":
            assert probed.read_text() == "200 pass", err
    else:
        assert p.returncode == 2, (p.returncode, err)
        assert "level=error" in err or "FAIL" in err, err
        assert "too many open files" in err.lower() or "No file descriptors available" in err, err
        step = next(msg for upto, msg in RUNS_OUT_AT if nofile < upto)
        assert step in err, (step, err)
        if step == "cannot read template":  # all or nothing: no output at all
            assert not (out / "a.conf").exists()


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


LEFTOVER = """
import os, signal, sys, time
pidfile, mark = sys.argv[1:]
def term(sig, frame):
    with open(mark, "w") as f:
        f.write(signal.Signals(sig).name)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)  # whole, and only once TERM is caught
time.sleep(300)
"""


def test_leftovers_in_the_childs_group_are_stopped_at_once(tmp_path):
    """The child leaves a process group behind: a shell waiting for a
    leftover process. The leftover is no child of the init, only a member
    of the child's group: it gets SIGTERM through the group at once, so
    the init does not wait out its grace period. The leftover records the
    signal it got: SIGTERM, not the SIGKILL after the grace period."""
    pidfile, mark = tmp_path / "leftover.pid", tmp_path / "leftover.signal"
    leftover = "/usr/bin/python3 -c '%s' %s %s" % (LEFTOVER, pidfile, mark)
    script = ("sh -c %s & while [ ! -s %s ]; do sleep 0.01; done; exit 7"
              % (shlex.quote(leftover + " & wait"), pidfile))
    init = Init(["--", "sh", "-c", script], base_env(tmp_path), tmp_path / "init.log",
                pid1=False)
    pid = None
    try:
        # Counted from the leftover's pid file, not from the launch: the
        # leftover's Python start-up (a second or more on a loaded machine)
        # comes before the child's exit and is no part of the init's wait.
        wait_for(pidfile.exists, 20, what="the leftover to run")
        t0 = time.monotonic()
        assert init.wait(10) == 7, init.text()
        elapsed = time.monotonic() - t0
        pid = int(pidfile.read_text())
        # An init that does not signal the group waits out its 2 s grace
        # period (then SIGKILL): 1.8 s leaves room and still tells them apart.
        assert elapsed < 1.8, "waited %.2f s for leftovers" % elapsed
        assert "processes left" not in init.text(), init.text()
        # The init may be gone before the leftover ran its handler.
        wait_for(mark.exists, 5, what="the leftover's record of its signal")
        assert mark.read_text() == "SIGTERM"
        wait_for(lambda: proc_state(pid) in (None, "Z"), 5, what="the leftover to end")
    finally:
        init.stop()
        if pid and proc_state(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)


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
