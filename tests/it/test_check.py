"""`check` (SPEC §1) ends its config test like a reload does: killed with
its process group after nginx.test_timeout, or when the check itself is
asked to stop (as PID 1, where an unhandled SIGTERM would be dropped), and
either way the output files are put back as they were."""

import os
import signal
import subprocess
import time

from pi import BIN, Init, base_env, wait_for


def check_env(tmp_path, test, **over):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.conf.template").write_text("# new\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("# before\n")
    return base_env(tmp_path, PEERPREP_INIT_NGINX_TEST=test, **over)


def gone(pid):
    """Whether pid has exited (a zombie waiting for its new parent counts)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_check_kills_a_config_test_at_its_timeout_and_restores(tmp_path):
    pidfile = tmp_path / "sleep.pid"
    env = check_env(tmp_path, "sh -c 'sleep 60 & echo $! > %s; wait'" % pidfile,
                    PEERPREP_INIT_NGINX_TEST_TIMEOUT="1s")
    t0 = time.monotonic()
    p = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 5, p.stdout + p.stderr
    assert time.monotonic() - t0 < 20
    assert "config test: FAIL did not finish within 1000 ms; killed" in p.stdout, p.stdout
    assert (tmp_path / "conf.d" / "a.conf").read_text() == "# before\n"
    assert [f.name for f in (tmp_path / "conf.d").iterdir()] == ["a.conf"]
    # The test's own child went with its process group.
    wait_for(lambda: gone(int(pidfile.read_text())), 5, what="the test's child killed")


def test_check_as_pid1_stops_on_sigterm_and_restores(tmp_path):
    marker = tmp_path / "testing"
    env = check_env(tmp_path, "sh -c 'touch %s; exec sleep 60'" % marker)
    init = Init(["check"], env, tmp_path / "init.log", pid1=True)
    try:
        wait_for(marker.exists, 10, what="the config test to run")
        init.signal(signal.SIGTERM)
        assert init.wait(10) == 128 + signal.SIGTERM, init.text()
        assert "config test: FAIL stopped by SIGTERM; killed" in init.text()
        assert (tmp_path / "conf.d" / "a.conf").read_text() == "# before\n"
    finally:
        init.stop()


def test_check_with_no_time_limit_waits_for_a_slow_test(tmp_path):
    # nginx.test_timeout = 0 is no limit: the test ends in its own verdict,
    # and a success keeps the new files and leaves nothing else behind.
    env = check_env(tmp_path, "sh -c 'sleep 0.5; exit 0'", PEERPREP_INIT_NGINX_TEST_TIMEOUT="0")
    p = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "config test: ok" in p.stdout
    assert (tmp_path / "conf.d" / "a.conf").read_text() == "# new\n"
    assert os.listdir(tmp_path / "conf.d") == ["a.conf"]


def test_check_names_the_output_it_cannot_restore_and_where_the_old_one_is(tmp_path):
    # The config test puts a folder where the output was: the rollback's
    # rename fails, and the only copy of the previous file is the kept link.
    out = tmp_path / "conf.d" / "a.conf"
    env = check_env(tmp_path, "sh -c 'rm %s; mkdir %s; exit 1'" % (out, out))
    p = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 5, p.stdout + p.stderr
    fails = [l for l in p.stdout.splitlines() if l.startswith("template FAIL")]
    assert len(fails) == 1, p.stdout
    assert ("cannot restore %s: Is a directory; the previous file is kept beside it as .a.conf.keep-"
            % out) in fails[0]
    keep = out.parent / fails[0].split("the previous file is kept beside it as ", 1)[1]
    with open(keep) as f:
        assert f.read() == "# before\n"


def ignoring(*sigs):
    return lambda: [signal.signal(s, signal.SIG_IGN) for s in sigs]


def test_check_under_a_launcher_that_ignores_sigchld_still_sees_its_test_end(tmp_path):
    # With SIGCHLD ignored the kernel reaps children itself and sends no
    # SIGCHLD: a wait for one would last the whole timeout (here: none).
    env = check_env(tmp_path, "true", PEERPREP_INIT_NGINX_TEST_TIMEOUT="0")
    p = subprocess.run([BIN, "check"], env=env, capture_output=True, text=True, timeout=30,
                       preexec_fn=ignoring(signal.SIGCHLD))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "config test: ok" in p.stdout


def test_check_keeps_ignoring_what_its_launcher_ignored(tmp_path):
    # Under nohup a hang-up must not stop the check: its verdict stands.
    # The test ends only once the hang-up has been sent (the file go): a
    # check that took it would have it pending before the test could end,
    # whatever the machine's load (a fixed `sleep 1` in the test could end
    # first, and the check then pass without having seen the signal).
    marker, go = tmp_path / "testing", tmp_path / "go"
    env = check_env(tmp_path, "sh -c 'touch %s; while [ ! -e %s ]; do sleep 0.01; done; exit 0'"
                    % (marker, go))
    p = subprocess.Popen([BIN, "check"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, preexec_fn=ignoring(signal.SIGHUP))
    try:
        wait_for(marker.exists, 10, what="the config test to run")
        p.send_signal(signal.SIGHUP)
        go.touch()
        out = p.communicate(timeout=30)[0]
        assert p.returncode == 0, out
        assert "config test: ok" in out
        assert (tmp_path / "conf.d" / "a.conf").read_text() == "# new\n"
    finally:
        go.touch()  # the test's loop ends even when the check was killed
        if p.poll() is None:
            p.kill()
            p.wait()
