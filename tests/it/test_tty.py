"""The terminal (SPEC §5): when the init has a controlling terminal whose
foreground it holds (docker run -it, a shell), the child's process group
gets the foreground, as tini gives it: the child can read the terminal,
and Ctrl-C reaches the child, not the init. Real pseudo-terminals."""
import fcntl
import os
import pty
import signal
import subprocess
import termios

import pytest

from pi import BIN, base_env, children_of, descendants, wait_for


class OnTerminal:
    """The init as session leader of a new pseudo-terminal (stdin, stdout and
    stderr the terminal), as docker run -it starts it; with pid1 it is
    PID 1 of a pid namespace (unshare then leads the session)."""

    def __init__(self, args, env, pid1=False):
        self.master, slave = pty.openpty()

        def session():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        cmd = [BIN] + list(args)
        if pid1:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc"] + cmd
        self.proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=session)
        os.close(slave)
        self.output = b""
        self.init = self.proc.pid
        if pid1:
            self.init = wait_for(lambda: (children_of(self.proc.pid) or [None])[0], 10,
                                 what="the init")

    def child(self):
        return (children_of(self.init) or [None])[0]

    def foreground(self):
        try:
            return os.tcgetpgrp(self.master)
        except OSError:
            return None

    def drain(self):
        """Reads what the terminal shows so far (it must not fill up)."""
        os.set_blocking(self.master, False)
        try:
            while True:
                chunk = os.read(self.master, 4096)
                if not chunk:
                    break
                self.output += chunk
        except OSError:
            pass
        return self.output

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)


def generic_env(tmp_path):
    return base_env(tmp_path, PEERPREP_INIT_NGINX_STOP_SIGNAL="TERM")


@pytest.mark.parametrize("pid1", [False, True], ids=["session-leader", "pid1"])
def test_child_reads_the_terminal(tmp_path, pid1):
    # Without the foreground, head is stopped by SIGTTIN and the init waits
    # for ever.
    got = tmp_path / "got"
    t = OnTerminal(["--", "sh", "-c", "head -1 > %s" % got], generic_env(tmp_path), pid1)
    try:
        child = wait_for(t.child, 10, what="the child")
        wait_for(lambda: t.foreground() == child, 10, what="the child in the foreground")
        os.write(t.master, b"hello\n")
        assert t.proc.wait(10) == 0, t.drain()
        assert got.read_text() == "hello\n"
    finally:
        t.close()


def test_ctrl_c_reaches_the_child(tmp_path):
    t = OnTerminal(["--", "sleep", "100"], generic_env(tmp_path))
    try:
        child = wait_for(t.child, 10, what="the child")
        wait_for(lambda: t.foreground() == child, 10, what="the child in the foreground")
        os.write(t.master, b"\x03")
        assert t.proc.wait(10) == 128 + signal.SIGINT, t.drain()
        out = t.drain().decode(errors="replace")
        assert "graceful stop requested" not in out, out  # the init got no SIGINT
    finally:
        t.close()


def test_foreground_comes_back_when_the_child_exits(tmp_path):
    # The child leaves a process behind that ignores SIGTERM, so the init
    # lingers in its grace period after the child exits: by then the
    # terminal's foreground must be the init's again.
    script = "trap '' TERM; (trap '' TERM; exec sleep 30) & exit 3"
    env = base_env(tmp_path, PEERPREP_INIT_NGINX_STOP_SIGNAL="TERM")
    t = OnTerminal(["--", "sh", "-c", script], env)
    try:
        wait_for(lambda: "the child exited" in t.drain().decode(errors="replace"), 10,
                 what="the child's exit")
        assert t.foreground() == t.init
        assert t.proc.wait(10) == 3
    finally:
        t.close()


def test_no_terminal_no_foreground_change(tmp_path):
    # stdin not a terminal: nothing to hand over, the child still runs.
    p = subprocess.run([BIN, "--", "sh", "-c", "exit 4"], env=generic_env(tmp_path),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert p.returncode == 4, p.stderr


def test_script_reproduction(tmp_path):
    # `(sleep 1; echo hello) | script -qec "peerprep-init -c generic.ini --
    # head -1" /dev/null` printed nothing and hung with head stopped (T).
    (tmp_path / "templates").mkdir()
    ini = tmp_path / "generic.ini"
    ini.write_text("[templates]\ndir = %s\n[upstreams]\nhosts =\n[nginx]\ntest =\n"
                   "stop_signal = TERM\n[health]\nlisten =\n" % (tmp_path / "templates"))
    env = {"PATH": os.environ["PATH"], "PEERPREP_INIT_CONFIG": ""}
    p = subprocess.Popen(["script", "-qec", "%s -c %s -- head -1" % (BIN, ini), "/dev/null"],
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(b"hello\n", timeout=10)
        assert p.returncode == 0, out
        assert out.count(b"hello") == 2, out  # the terminal's echo, then head's line
    finally:
        if p.poll() is None:
            for pid in descendants(p.pid) + [p.pid]:
                os.kill(pid, signal.SIGKILL)
            p.wait()
