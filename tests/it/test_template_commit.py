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


# ---------------------------------------------------------------------------
# a rejected reload after a successful one: the rollback goes back to what
# the successful reload committed, not to what the start rendered
# ---------------------------------------------------------------------------

THIRD = """server {
    listen 127.0.0.1:%d;
    location / { return 200 "third\\n"; }
}
"""

BROKEN_SITE = SITE.replace("return 200", "bogus_directive; return 200")
# Served after the fix: a body no earlier config gives, so seeing it proves
# nginx runs the config of the reload after the rejected one.
FIXED_SITE = SITE.replace("${NGINX_GREETING}", "${NGINX_GREETING}-fixed")


def outcomes(init):
    """Every reload outcome logged so far, in order: "ok" or "rejected"."""
    out = []
    for line in init.text().splitlines():
        if 'msg="reloaded nginx"' in line:
            out.append("ok")
        elif 'msg="reload rejected' in line:
            out.append("rejected")
    return out


def nth_outcome(init, n):
    """Waits for the n-th reload outcome and returns it; exactly n so far
    (each SIGHUP of these tests makes one reload, nothing else reloads)."""
    wait_for(lambda: len(outcomes(init)) >= n, 15, what="reload outcome %d" % n)
    got = outcomes(init)
    assert len(got) == n, (got, init.text())
    return got[-1]


def hidden(folder):
    return [f for f in os.listdir(folder) if f.startswith(".")]


def reload_status(port):
    """(overall status, config:reload status) from /health."""
    h = health(port)
    if not h or not h[1]:
        return None
    return h[1]["status"], h[1]["checks"]["config:reload"][0]["status"]


def rejected_by_the_test(init):
    """The last reject line: the config test failed on the bogus directive
    (not some other step, which would prove nothing about the rollback)."""
    line = [l for l in init.text().splitlines() if 'msg="reload rejected' in l][-1]
    assert 'step="config test failed"' in line and "bogus_directive" in line, line


def test_rejected_reload_after_one_that_removed_a_template(site):
    """Reload 1 removes extra's template (ok: extra.conf goes); reload 2
    adds third's and breaks site (rejected). The rollback must restore the
    state of reload 1, not of the start: extra.conf stays gone, third.conf
    is never left, site.conf is reload 1's file. Reload 3 fixes site."""
    extra_port, third_port = free_port(), free_port()
    extra_tpl = site.templates / "extra.conf.template"
    extra_tpl.write_text(EXTRA % extra_port)
    extra_out = site.conf_d / "extra.conf"
    third_out = site.conf_d / "third.conf"
    with site.start() as init:
        wait_for(lambda: body(extra_port) == "extra", 10, what="the extra server")

        # 1: ok, extra goes.
        os.unlink(extra_tpl)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 1) == "ok", init.text()
        assert not extra_out.exists(), "the removed template's output stayed"
        wait_for(lambda: try_get(extra_port) is None, 10, what="the extra server gone")
        assert body(site.port) == "v1"
        site_after_1 = site.output.read_text()
        site_ino = os.stat(site.output).st_ino
        assert sorted(os.listdir(site.conf_d)) == ["site.conf"]

        # 2: rejected by nginx -t; a new template and a broken one.
        (site.templates / "third.conf.template").write_text(THIRD % third_port)
        site.template.write_text(BROKEN_SITE % site.port)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 2) == "rejected", init.text()
        rejected_by_the_test(init)
        assert not extra_out.exists(), "the rollback brought back an output reload 1 removed"
        assert not third_out.exists(), "the rejected reload's new output stayed"
        assert site.output.read_text() == site_after_1, "site.conf is not reload 1's"
        assert os.stat(site.output).st_ino == site_ino, "site.conf is not the very same file"
        assert hidden(site.conf_d) == [], "hidden file left: %s" % hidden(site.conf_d)
        assert sorted(os.listdir(site.conf_d)) == ["site.conf"]
        assert try_get(extra_port) is None, "extra's port is open again"
        assert try_get(third_port) is None
        assert body(site.port) == "v1"
        assert wait_for(lambda: reload_status(site.health_port), 10,
                        what="/health") == ("warn", "warn")

        # 3: ok again, and everything the templates now say is live.
        site.template.write_text(FIXED_SITE % site.port)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 3) == "ok", init.text()
        assert sorted(os.listdir(site.conf_d)) == ["site.conf", "third.conf"], \
            os.listdir(site.conf_d)
        assert third_out.read_text() == THIRD % third_port
        assert site.output.read_text() == (FIXED_SITE % site.port).replace(
            "${NGINX_GREETING}", "v1")
        wait_for(lambda: body(site.port) == "v1-fixed", 10, what="nginx on the fixed site")
        wait_for(lambda: body(third_port) == "third", 10, what="the third server")
        assert try_get(extra_port) is None
        assert wait_for(lambda: reload_status(site.health_port), 10,
                        what="/health") == ("pass", "pass")
        assert stop(init) == 0


def test_rejected_reload_after_one_that_added_a_template(site):
    """The mirror: reload 1 adds extra's template (ok); reload 2 breaks
    site (rejected). extra.conf was committed by reload 1, so the rollback
    must leave it: the very same file, still served; reload 3 keeps it."""
    extra_port = free_port()
    extra_out = site.conf_d / "extra.conf"
    with site.start() as init:
        assert try_get(extra_port) is None

        # 1: ok, extra comes.
        (site.templates / "extra.conf.template").write_text(EXTRA % extra_port)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 1) == "ok", init.text()
        assert extra_out.read_text() == EXTRA % extra_port
        extra_ino = os.stat(extra_out).st_ino
        wait_for(lambda: body(extra_port) == "extra", 10, what="the extra server")
        site_after_1 = site.output.read_text()

        # 2: rejected by nginx -t.
        site.template.write_text(BROKEN_SITE % site.port)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 2) == "rejected", init.text()
        rejected_by_the_test(init)
        assert extra_out.exists(), "the rollback removed an output reload 1 committed"
        assert extra_out.read_text() == EXTRA % extra_port
        assert os.stat(extra_out).st_ino == extra_ino, "extra.conf is not the very same file"
        assert site.output.read_text() == site_after_1
        assert hidden(site.conf_d) == [], "hidden file left: %s" % hidden(site.conf_d)
        assert sorted(os.listdir(site.conf_d)) == ["extra.conf", "site.conf"]
        assert body(extra_port) == "extra" and body(site.port) == "v1"
        assert wait_for(lambda: reload_status(site.health_port), 10,
                        what="/health") == ("warn", "warn")

        # 3: ok; the new config (the fixed site answers) still has extra.
        site.template.write_text(FIXED_SITE % site.port)
        init.signal(signal.SIGHUP)
        assert nth_outcome(init, 3) == "ok", init.text()
        wait_for(lambda: body(site.port) == "v1-fixed", 10, what="nginx on the fixed site")
        assert body(extra_port) == "extra"
        assert extra_out.read_text() == EXTRA % extra_port
        assert sorted(os.listdir(site.conf_d)) == ["extra.conf", "site.conf"]
        assert wait_for(lambda: reload_status(site.health_port), 10,
                        what="/health") == ("pass", "pass")
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
