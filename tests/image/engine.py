"""podman, driven from the image tests: images, networks, containers, and
HTTP and WebSocket clients that talk to them from the host.

Everything a test run makes carries the label peerprep-init-test=<pid of
the pytest process>; `sweep()` removes what a run that no longer exists
left behind (a run killed with SIGKILL), never another live run's things.
"""

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.parse

import testbed

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
FIXTURE = os.path.join(TESTS, "image", "frontend")
METRICS = os.path.join(REPO, "build", "image-metrics.json")
LABEL = "peerprep-init-test"
RUN = str(os.getpid())
ENV = dict(os.environ, CONTAINERS_CONF=os.environ.get(
    "CONTAINERS_CONF", os.path.join(REPO, "mk", "containers.conf")))


class EngineError(RuntimeError):
    pass


def podman(*args, timeout=120, check=True, input=None):  # noqa: A002
    """Run `podman ARGS` -> CompletedProcess (text). Raises EngineError with
    the command and its stderr when check and it fails."""
    argv = ["podman"] + [str(a) for a in args]
    try:
        p = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise EngineError("%s: no answer within %d s" % (" ".join(argv), timeout)) from e
    if check and p.returncode != 0:
        raise EngineError("%s: exit %d\n%s" % (" ".join(argv), p.returncode, p.stderr[-3000:]))
    return p


def poll(what, fn, timeout, interval=0.1):
    """fn() until it returns a true value, at most `timeout` seconds."""
    return testbed.deadline_poll(what, fn, timeout=timeout, interval=interval)


def record(key, value):
    """Add one measurement to build/image-metrics.json (read by the report
    the README's numbers come from)."""
    os.makedirs(os.path.dirname(METRICS), exist_ok=True)
    data = {}
    with contextlib.suppress(OSError, ValueError):
        with open(METRICS) as f:
            data = json.load(f)
    data[key] = value
    tmp = METRICS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, METRICS)


def sweep():
    """Remove containers and networks left by test runs that have ended."""
    for kind in ("container", "network"):
        listing = ["ps", "-a"] if kind == "container" else ["network", "ls"]
        p = podman(*listing, "--filter", "label=" + LABEL, "--format",
                   "{{.Name}}" if kind == "network" else "{{.Names}}", check=False)
        for name in p.stdout.split():
            fmt = "{{index .Labels \"%s\"}}" % LABEL if kind == "network" else \
                "{{index .Config.Labels \"%s\"}}" % LABEL
            owner = podman(kind, "inspect", "--format", fmt, name, check=False).stdout.strip()
            if owner.isdigit() and owner != RUN and not os.path.exists("/proc/" + owner):
                if kind == "container":
                    podman("rm", "-f", "-t", "0", name, check=False)
                else:
                    podman("network", "rm", "-f", name, check=False)


def standins(timeout=1800):
    """Make (or reuse) the stand-in images: the tests' backends run on the
    python one whatever bases the image is built on (STANDINS=0: the
    Dockerfile's pinned ones)."""
    p = subprocess.run(["sh", os.path.join(REPO, "mk", "images.sh"), "standins"], env=ENV,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise EngineError("mk/images.sh standins: exit %d\n%s" % (p.returncode, p.stderr[-4000:]))


def build(tag, target="production", frontend=None, timeout=1200):
    """Build the Dockerfile's target through mk/images.sh (stand-in bases)
    -> seconds taken."""
    argv = ["sh", os.path.join(REPO, "mk", "images.sh"), "build", tag, target]
    if frontend:
        argv.append(frontend)
    t0 = time.monotonic()
    p = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    if p.returncode != 0:
        raise EngineError("%s: exit %d\n%s\n%s" % (" ".join(argv), p.returncode,
                                                   p.stdout[-4000:], p.stderr[-4000:]))
    return took


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_size(tag):
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def standin(name):
    """The stand-in image made by mk/images.sh, e.g. standin("python")."""
    with open(os.path.join(REPO, "build", "standins.env")) as f:
        env = dict(line.strip().split("=", 1) for line in f if "=" in line)
    return env[name.upper() + "_IMAGE"]


class Network:
    """A podman bridge network with container-name DNS (aardvark-dns)."""

    def __init__(self, name):
        self.name = name
        podman("network", "create", "--label", "%s=%s" % (LABEL, RUN), name)
        info = json.loads(podman("network", "inspect", name).stdout)[0]
        self.gateway = info["subnets"][0]["gateway"]

    def remove(self):
        podman("network", "rm", "-f", self.name, check=False, timeout=60)


class Container:
    def __init__(self, name):
        self.name = name

    @classmethod
    def run(cls, name, image, *args, network=None, env=None, publish=None, cmd=()):
        """`podman run -d` -> Container. With a network, its gateway is the
        only nameserver (see README: podman otherwise adds the host's
        resolver next to aardvark-dns, and a fast NXDOMAIN from it may win
        over the container names)."""
        argv = ["run", "-d", "--name", name, "--label", "%s=%s" % (LABEL, RUN)]
        if network is not None:
            argv += ["--network", network.name, "--dns", network.gateway]
        for k, v in (env or {}).items():
            argv += ["-e", "%s=%s" % (k, v)]
        if publish:
            argv += ["-p", "127.0.0.1::%d" % publish]
        podman(*(argv + list(args) + [image] + list(cmd)))
        c = cls(name)
        c.publish = publish
        return c

    def inspect(self, fmt):
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def ip(self, network):
        return self.inspect('{{(index .NetworkSettings.Networks "%s").IPAddress}}' % network.name)

    def status(self):
        p = podman("inspect", "--format", "{{.State.Status}}", self.name, check=False)
        return p.stdout.strip() if p.returncode == 0 else "gone"

    def exit_code(self):
        return int(self.inspect("{{.State.ExitCode}}"))

    def wait_exit(self, timeout):
        poll(self.name + " to exit", lambda: self.status() in ("exited", "stopped", "gone"), timeout)
        return self.exit_code()

    def logs(self):
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def port(self):
        out = podman("port", self.name, str(self.publish)).stdout.split()[0]
        return int(out.rsplit(":", 1)[1])

    def healthcheck(self):
        """`podman healthcheck run` -> (exit code, output)."""
        p = podman("healthcheck", "run", self.name, check=False, timeout=30)
        return p.returncode, (p.stdout + p.stderr).strip()

    def wait_healthy(self, timeout):
        poll(self.name + " to be healthy", lambda: self.healthcheck()[0] == 0, timeout, 0.2)

    def kill(self, signal_name):
        podman("kill", "--signal", signal_name, self.name)

    def stop(self, timeout=40):
        """`podman stop -t TIMEOUT` -> seconds taken."""
        t0 = time.monotonic()
        podman("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - t0

    def host_pid(self):
        return int(self.inspect("{{.State.Pid}}"))

    def remove(self):
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)


def processes_under(pid):
    """{pid: (state, comm)} of `pid` and all its descendants (host /proc)."""
    children = {}
    info = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        info[int(entry)] = (fields[0], comm)
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in info:
            out[p] = info[p]
        todo.extend(children.get(p, []))
    return out


# --------------------------------------------------------------------------
# Clients (from the host, to a published port or a container address)
# --------------------------------------------------------------------------


class HostClient:
    """The test bed's HTTP and WebSocket clients (testbed.Bed.http,
    .websocket), on sockets made in the test's own network namespace: a
    URL's host must be an IP address (a published port on 127.0.0.1, or a
    container's address on a podman bridge, which the host routes to)."""

    http = testbed.Bed.http
    http_get = testbed.Bed.http_get
    websocket = testbed.Bed.websocket

    def _addr(self, url):
        u = urllib.parse.urlsplit(url)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        return u, u.hostname, u.port or 80, path

    def connect(self, ip, port, timeout):
        return socket.create_connection((ip, port), timeout=timeout)


CLIENT = HostClient()


def request(host, port, method, path, body=None, headers=None, timeout=10.0):
    """One HTTP/1.1 request -> testbed.Response."""
    return CLIENT.http(method, "http://%s:%d%s" % (host, port, path), body=body,
                       headers=headers, timeout=timeout)


def websocket(host, port, path, timeout=10.0):
    """Open a WebSocket -> testbed.WebSocket; RuntimeError unless a valid 101."""
    return CLIENT.websocket("http://%s:%d%s" % (host, port, path), timeout=timeout)
