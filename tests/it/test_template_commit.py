"""The template commit at a reload (SPEC §3 all-or-nothing): an output whose
template was removed goes in the same commit and comes back when the config
test fails; files the init did not render are never touched; a FIFO at an
output path is refused without stalling PID 1. Each test runs the init as
PID 1 of a fresh pid namespace against real nginx and polls with deadlines."""
import os
import signal
import time

import pytest

from pi import free_port, try_get, wait_for
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
