"""The PID-1 path under valgrind (issue 8, sanitizers): start, a child, a
/health answer, a SIGHUP reload with a changed template, SIGTERM — with no
memory error and no definite leak.

valgrind cannot run the ASan build, and the release build is static musl, so
the test builds its own plain glibc binary (the Makefile's sanitizer flags
without -fsanitize, -O1 -g) into a temporary folder, from the same sources and
the same pinned libuv/inih the ASan build links. It takes about 15 s."""
import json
import os
import shlex
import shutil
import signal
import subprocess

import pytest

from pi import base_env, children_of, free_port, try_get, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIGCHILD = os.path.join(os.path.dirname(__file__), "sigchild.py")


def make_vars():
    """COMMON flags, sources and libraries as the Makefile defines them,
    read through make itself so this test never drifts from it."""
    probe = ("_pi_vars:\n\t@:\n"
             "$(info CFLAGS=$(COMMON) $(ASAN_INC))\n"
             "$(info SRC=$(SRC))\n"
             "$(info LIBS=$(ASAN_LIBS))\n")
    r = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-",
                        "_pi_vars"], input=probe, cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        if k in ("CFLAGS", "SRC", "LIBS"):
            out[k] = shlex.split(v)
    return out


@pytest.fixture(scope="module")
def vg_binary(tmp_path_factory):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root (pid namespace)")
    v = make_vars()
    libs = [os.path.join(REPO, x) if x.startswith("build/") else x for x in v["LIBS"]]
    if not os.path.exists(libs[0]):
        pytest.skip("no glibc libuv at %s (run make deps)" % libs[0])
    exe = tmp_path_factory.mktemp("vg") / "peerprep-init"
    cmd = (["gcc"] + v["CFLAGS"] + ["-O1", "-g", "-o", str(exe)] + v["SRC"] + libs)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, "build failed:\n" + " ".join(cmd) + "\n" + r.stderr
    return str(exe)


def upstream_checked(port):
    """The "time" of the upstream:NGINX_LOCAL_HOST check in /health: when
    its last lookup ended. None while /health does not answer 200."""
    r = try_get(port, "/health")
    if not r or r[0] != 200:
        return None
    entries = json.loads(r[2])["checks"].get("upstream:NGINX_LOCAL_HOST") or [{}]
    return entries[0].get("time")


def test_pid1_path_has_no_memory_errors_or_leaks(vg_binary, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    tpl = templates / "site.conf.template"
    # A host name, not an IP literal, and one host known only from a
    # template's default: the names /health shows after a reload must not
    # be the freed strings of the render the reload replaced.
    tpl.write_text("# ${NGINX_GREETING} ${NGINX_LOCAL_HOST} ${NGINX_DEF_HOST:-localhost}\n"
                   "resolver ${NGINX_LOCAL_RESOLVERS};\n")
    out = tmp_path / "conf.d" / "site.conf"
    rec = tmp_path / "sig"
    vlog = tmp_path / "valgrind.log"
    hport = free_port()
    env = base_env(tmp_path, NGINX_GREETING="one", PEERPREP_INIT_NGINX_TEST="true",
                   PEERPREP_INIT_HEALTH_LISTEN="127.0.0.1:%d" % hport,
                   PEERPREP_INIT_HEALTH_PROBE="", PEERPREP_INIT_UPSTREAMS_HOSTS="NGINX_*_HOST",
                   NGINX_LOCAL_HOST="localhost", PEERPREP_INIT_UPSTREAMS_RECHECK="1s")
    argv = ["unshare", "--pid", "--fork", "--mount-proc",
            "valgrind", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
            "--trace-children=no", "--child-silent-after-fork=yes",
            "--log-file=%s" % vlog,
            vg_binary, "--", "/usr/bin/python3", SIGCHILD, str(rec)]
    log_path = tmp_path / "init.log"
    with open(log_path, "wb") as log:
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    text = lambda: log_path.read_text(errors="replace")
    try:
        pid = wait_for(lambda: (children_of(p.pid) or [None])[0], 10, what="PID 1")
        wait_for(lambda: rec.exists() and "ready" in rec.read_text(), 30,
                 what="the child under the valgrinded init")
        assert "one" in out.read_text()
        r = wait_for(lambda: try_get(hport, "/health"), 10, what="/health")
        assert r[0] == 200, r
        assert try_get(hport, "/health/live")[0] == 200
        assert try_get(hport, "/nope")[0] == 404
        # One upstream recheck under valgrind before the reload: the check's
        # "time" (whole seconds, set when a lookup ends) moves on with it.
        first = wait_for(lambda: upstream_checked(hport), 10, what="the upstream check's time")
        wait_for(lambda: upstream_checked(hport) not in (None, first), 15,
                 what="an upstream recheck (its time past %s)" % first)
        tpl.write_text("# ${NGINX_GREETING} two ${NGINX_LOCAL_HOST} ${NGINX_DEF_HOST:-localhost}\n")
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reloaded nginx" in text(), 15, what="the reload")
        assert "two" in out.read_text()
        r = try_get(hport, "/health")
        assert r[0] == 200, r
        body = r[2].decode()
        assert '"upstream:NGINX_LOCAL_HOST"' in body and '"componentId":"localhost"' in body, body
        assert '"upstream:NGINX_DEF_HOST"' in body, body
        # The init sends SIGHUP before it logs the reload; the child records
        # it when its handler runs, which may be later.
        wait_for(lambda: "SIGHUP" in rec.read_text(), 10, what="the child's record of SIGHUP")
        assert rec.read_text().split("\n")[1:] == ["SIGHUP", ""], rec.read_text()
        os.kill(pid, signal.SIGTERM)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            for k in children_of(p.pid):
                os.kill(k, signal.SIGKILL)
            p.wait(10)
    report = vlog.read_text(errors="replace") if vlog.exists() else "(no valgrind log)"
    assert rc == 0, "exit %d\n--- valgrind\n%s\n--- init\n%s" % (rc, report, text())
    # The summary proves valgrind ran the init to its end.
    assert "ERROR SUMMARY: 0 errors" in report, report
    assert "definitely lost: 0 bytes" in report or "All heap blocks were freed" in report, report
