"""Shared helpers for the process-level tests: start the real binary (as PID 1
of a fresh pid namespace where it matters), real nginx, polling with
deadlines instead of sleeping."""
import os
import signal
import socket
import subprocess
import time
import http.client

BIN = os.environ.get("PI_BINARY") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "peerprep-init")
BIN = os.path.abspath(BIN)
NGINX = "/usr/sbin/nginx"


def log_time(text, needle):
    """The ts of the first log line (text format) holding needle, in
    seconds of the day by the init's own clock; fails when there is none."""
    for line in text.splitlines():
        if needle in line:
            hms = line.split("ts=", 1)[1].split()[0].split("T")[1].rstrip("Z")
            h, m, sec = hms.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
    raise AssertionError("no log line holding %r:\n%s" % (needle, text))


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, never one this
    process handed out before: the kernel may give the port it just gave
    again, and two free_port() calls of one test (nginx's and the health
    port, a probe target and the health listener) would then be the same
    port. (Another process can still take it before it is bound: a small
    window, left as it is.)"""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def base_env(tmp_path, **over):
    """An environment with nothing of the host's nginx: empty templates,
    no config test, no health endpoint, no upstream hosts."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PEERPREP_INIT_CONFIG": "",
        "PEERPREP_INIT_TEMPLATES_DIR": str(tmp_path / "templates"),
        "PEERPREP_INIT_TEMPLATES_OUTPUT_DIR": str(tmp_path / "conf.d"),
        "PEERPREP_INIT_TEMPLATES_STREAM_OUTPUT_DIR": str(tmp_path / "stream-conf.d"),
        "PEERPREP_INIT_NGINX_TEST": "",
        "PEERPREP_INIT_HEALTH_LISTEN": "",
        "PEERPREP_INIT_UPSTREAMS_HOSTS": "",
        "PEERPREP_INIT_LOG_LEVEL": "debug",
    }
    # `make check-asan` sends sanitizer reports to files it checks afterwards.
    env.update({k: v for k, v in os.environ.items()
                if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")})
    env.update({k: str(v) for k, v in over.items()})
    return env


def failing_nginx_env(tmp_path, go, test, **over):
    """base_env with an nginx.command that stands for an nginx failing at
    start: it exits 1 as soon as the file `go` exists (well inside its
    first second, so the init judges a failed start), nginx.test `test`."""
    cmd = "sh -c 'while [ ! -e %s ]; do sleep 0.005; done; exit 1'" % go
    return base_env(tmp_path, PEERPREP_INIT_NGINX_TEST=test, PEERPREP_INIT_NGINX_COMMAND=cmd,
                    **over)


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        return data[data.rindex(")") + 2]
    except (OSError, ValueError):
        return None


def proc_status(pid):
    """/proc/PID/status as a dict of its fields (values as the kernel
    writes them, e.g. "1234 kB", hex masks)."""
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (l.split(":", 1) for l in f if ":" in l)}


def vm_rss_kib(pid):
    """VmRSS of pid in KiB, or None (a kernel thread, a zombie)."""
    rss = proc_status(pid).get("VmRSS")
    return int(rss.split()[0]) if rss else None


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children_of(p):
            out.append(c)
            todo.append(c)
    return out


class Init:
    """The init under test. With pid1=True it runs as PID 1 of a fresh pid
    namespace (unshare --pid --fork --mount-proc); .pid is its host pid."""

    def __init__(self, args, env, log_path, pid1=True, cwd=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        cmd = [BIN] + list(args)
        if pid1:
            cmd = ["unshare", "--pid", "--fork", "--mount-proc"] + cmd
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, cwd=cwd)
        if pid1:
            # The init may be done before it is seen (a command that exits
            # at once); then there is nothing left to signal.
            self.pid = wait_for(
                lambda: (children_of(self.proc.pid) or [None])[0]
                or (self.proc.poll() is not None and -1), 10, what="the init to start")
        else:
            self.pid = self.proc.pid

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.flush()

    def text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, needle, timeout=10):
        return wait_for(lambda: needle in self.text(), timeout, what=repr(needle))

    def child_pids(self):
        return [p for p in children_of(self.pid)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            for p in [self.pid] + descendants(self.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# http-block lines of the nginx image's own nginx.conf that the deploy
# template relies on (the Content-Type of the SPA's pages and bundles).
IMAGE_HTTP = (
    "include /etc/nginx/mime.types;",
    "default_type application/octet-stream;",
    "sendfile on;",
)


def nginx_conf(prefix, conf_d, http=(), access_log="off"):
    """Text of a self-contained nginx.conf: pid and temp files under prefix,
    errors to stderr, one worker, an http block with the `http` lines that
    includes conf_d/*.conf."""
    extra = "".join(f"    {line}\n" for line in http)
    return f"""
pid {prefix}/nginx.pid;
error_log stderr notice;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
{extra}    access_log {access_log};
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {conf_d}/*.conf;
}}
"""


def nginx_prefix(tmp_path, port, conf_d=None, http=(), access_log="off"):
    """A self-contained nginx setup under tmp_path that includes the init's
    output folder; returns (command, test command) for the init's config.
    `http` and `access_log` go to nginx_conf()."""
    prefix = tmp_path / "nginx"
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    conf_d = conf_d or (tmp_path / "conf.d")
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, conf_d, http, access_log))
    base = f"{NGINX} -p {prefix} -c {conf}"
    return f"{base} -g 'daemon off;'", f"{base} -t -q"


def init_env(tmp_path, templates_dir, http=IMAGE_HTTP, access_log="off"):
    """The PEERPREP_INIT_* settings that run the init over templates_dir with
    a private nginx (nginx_prefix) under tmp_path, rendering into
    tmp_path/conf.d (created) and tmp_path/stream-conf.d."""
    out = tmp_path / "conf.d"
    out.mkdir(parents=True, exist_ok=True)
    command, test = nginx_prefix(tmp_path, None, out, http, access_log)
    return {
        "PEERPREP_INIT_TEMPLATES_DIR": str(templates_dir),
        "PEERPREP_INIT_TEMPLATES_OUTPUT_DIR": str(out),
        "PEERPREP_INIT_TEMPLATES_STREAM_OUTPUT_DIR": str(tmp_path / "stream-conf.d"),
        "PEERPREP_INIT_NGINX_COMMAND": command,
        "PEERPREP_INIT_NGINX_TEST": test,
    }


def http_get(port, path="/", host="127.0.0.1", timeout=5, headers=None):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def try_get(port, path="/", **kw):
    try:
        return http_get(port, path, **kw)
    except OSError:
        return None
