"""The template commit at a reload (SPEC §3 all-or-nothing): an output whose
template was removed goes in the same commit and comes back when the config
test fails; files the init did not render are never touched; a FIFO at an
output path is refused without stalling PID 1. Each test runs the init as
PID 1 of a fresh pid namespace against real nginx and polls with deadlines."""
import os
import signal
import subprocess
import time

import pytest

from pi import BIN, Init, base_env, free_port, try_get, vm_rss_kib, wait_for
from test_faults import SITE, Site, body, count, health, stop

@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


EXTRA = """server {
    listen 127.0.0.1:%d;
    location / { return 200 "extra\\n"; }
}
"""


def outcome(init, before):
    """Waits for one more reload outcome than `before`; returns its kind."""
    def n():
        return count(init, 'msg="reloaded nginx"') + count(init, "reload rejected")
    wait_for(lambda: n() > before, 15, what="the reload's outcome")
    return "ok" if count(init, 'msg="reloaded nginx"') else "rejected"


def test_removed_template_output_goes_at_reload(site):
    extra_port = free_port()
    extra_tpl = site.templates / "extra.conf.template"
    extra_tpl.write_text(EXTRA % extra_port)
    notes = site.conf_d / "notes.txt"
    notes.write_text("an operator's file\n")
    with site.start() as init:
        extra_out = site.conf_d / "extra.conf"
        wait_for(lambda: body(extra_port) == "extra", 10, what="the extra server")
        os.unlink(extra_tpl)
        init.signal(signal.SIGHUP)
        assert outcome(init, 0) == "ok", init.text()
        assert not extra_out.exists(), "the removed template's output stayed live"
        assert notes.read_text() == "an operator's file\n"
        wait_for(lambda: try_get(extra_port) is None, 10, what="the extra server gone")
        assert body(site.port) == "v1"
        assert not [f for f in os.listdir(site.conf_d) if f.startswith(".")], "hidden file left"
        assert stop(init) == 0


def test_removed_template_output_comes_back_when_the_test_fails(site):
    extra_port = free_port()
    extra_tpl = site.templates / "extra.conf.template"
    extra_tpl.write_text(EXTRA % extra_port)
    with site.start() as init:
        extra_out = site.conf_d / "extra.conf"
        before = extra_out.read_text()
        ino = os.stat(extra_out).st_ino
        os.unlink(extra_tpl)
        # The same reload breaks the config: nginx -t fails, all is undone.
        site.template.write_text((SITE % site.port).replace("return 200", "bogus_directive;"
                                                            " return 200"))
        init.signal(signal.SIGHUP)
        assert outcome(init, 0) == "rejected", init.text()
        assert extra_out.read_text() == before, "the removed output was not put back"
        assert os.stat(extra_out).st_ino == ino, "not the very same file"
        assert "bogus_directive" not in site.output.read_text()
        assert body(extra_port) == "extra" and body(site.port) == "v1"
        assert not [f for f in os.listdir(site.conf_d) if f.startswith(".")], "hidden file left"
        assert stop(init) == 0


def test_fifo_at_an_output_path_is_refused_without_stalling(site):
    with site.start() as init:
        (site.templates / "pipe.conf.template").write_text("# nothing\n")
        fifo = site.conf_d / "pipe.conf"
        os.mkfifo(fifo)
        t0 = time.monotonic()
        init.signal(signal.SIGHUP)
        assert outcome(init, 0) == "rejected", init.text()
        log = init.text()
        assert str(fifo) in log and "not a regular file" in log, log
        # PID 1 answered: the loop was never blocked on the FIFO.
        code, doc = wait_for(lambda: health(site.health_port), 5, what="/health")
        assert code == 200 and doc["status"] == "warn", doc
        assert time.monotonic() - t0 < 10
        assert body(site.port) == "v1"
        assert os.path.exists(fifo) and not os.path.isfile(fifo)
        assert stop(init) == 0


# ---------------------------------------------------------------------------
# memory: rendering streams, the running init keeps no rendered text
# ---------------------------------------------------------------------------

# Memory figures are the release build's; the sanitizer build's shadow
# memory is megabytes by itself.
release_only = pytest.mark.skipif("/asan/" in os.environ.get("PI_BINARY", ""),
                                  reason="RSS limits apply to the release build")


def big_template(path, mib):
    """About mib MiB of nginx-looking lines, every one with host references."""
    line = ("location /svc-%07d/ { proxy_pass http://$NGINX_USER_HOST:3001; "
            "proxy_set_header X-Up ${NGINX_QUESTION_HOST}; set $a $host; }\n")
    n = mib * 2**20 // (len(line) + 2)
    with open(path, "w") as f:
        for i in range(n):
            f.write(line % i)


HOSTS = dict(NGINX_USER_HOST="user-service.peerprep-prod.internal",
             NGINX_QUESTION_HOST="question-service.peerprep-prod.internal",
             PEERPREP_INIT_UPSTREAMS_HOSTS="")


def peak_kib(argv, env):
    """Peak RSS of argv in KiB (from time(1), so not this Python's size)."""
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stderr.split()[-1])


@release_only
def test_render_memory_does_not_grow_with_the_template(tmp_path):
    """render keeps a few hundred KiB whatever the template's size, with the
    output absent, present and unchanged, present and changed, and with
    --stdout (the old render held the whole output, twice when it existed)."""
    (tmp_path / "templates").mkdir()
    big_template(tmp_path / "templates" / "big.conf.template", 24)
    env = base_env(tmp_path, **HOSTS)
    out = tmp_path / "conf.d" / "big.conf"
    fresh = peak_kib([BIN, "render"], env)
    assert out.stat().st_size > 24 * 2**20
    same = peak_kib([BIN, "render"], env)
    with open(out, "r+b") as f:
        f.seek(2**20)
        f.write(b"#")
    changed = peak_kib([BIN, "render"], env)
    stdout = peak_kib([BIN, "render", "--stdout"], env)
    assert max(fresh, same, changed, stdout) <= 4096, (fresh, same, changed, stdout)
    assert b"#" not in out.read_bytes()[2**20 - 1:2**20 + 1]


@release_only
def test_pid1_keeps_no_rendered_text(tmp_path):
    """After rendering a 24 MiB template the running init stays small: the
    set it keeps holds file names and hosts, not the rendered text."""
    (tmp_path / "templates").mkdir()
    big_template(tmp_path / "templates" / "big.conf.template", 24)
    env = base_env(tmp_path, PEERPREP_INIT_LOG_LEVEL="info", **HOSTS)
    init = Init(["--", "sleep", "60"], env, tmp_path / "log")
    try:
        init.wait_log("started", 30)
        rss = vm_rss_kib(init.pid)
        assert rss is not None and rss <= 1024, "PID 1 VmRSS %s KiB" % rss
    finally:
        init.stop()


def test_the_starts_kept_link_goes_once_the_child_has_run_1_s(tmp_path):
    # An output that existed before the start is kept (a hidden link) for a
    # failed start's rollback; once the child has run 1 s that can no
    # longer happen, and the link must not stay for the container's life.
    (tmp_path / "templates").mkdir()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "site.conf").write_text("# the image's\n")
    (tmp_path / "templates" / "site.conf.template").write_text("# ours\n")
    hidden = lambda: [n for n in os.listdir(tmp_path / "conf.d") if n.startswith(".")]
    init = Init(["--", "sleep", "60"], base_env(tmp_path), tmp_path / "init.log", pid1=False)
    try:
        init.wait_log("msg=started")
        wait_for(lambda: not hidden(), 5, what="the kept link removed")
        assert (tmp_path / "conf.d" / "site.conf").read_text() == "# ours\n"
    finally:
        init.stop()
