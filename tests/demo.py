#!/usr/bin/env python3
"""`make demo`: the image's main job, live on this machine.

    python3 tests/demo.py build/peerprep-init [--seconds N]

peerprep-init renders the real deploy template, waits for the six upstream
names to resolve, config-tests and starts Debian's nginx, serves /health,
and supervises, exactly as in the container. Differences, all printed:

* nginx listens on 127.0.0.1:8080, not :80: the demo renders a copy of
  deploy/nginx/default.conf.template whose one `listen 80;` line reads
  `listen 127.0.0.1:8080;` (the deploy file itself is untouched);
* the six *.peerprep-demo.internal names resolve through an /etc/hosts that
  is bind-mounted over the real one in a private mount namespace (only the
  init and nginx see it), and point at stub backends this script runs on
  127.0.0.11-16:8000;
* the placeholder site is bind-mounted at /usr/share/nginx/html in that same
  mount namespace.

Everything stays in the host's network namespace, on loopback addresses, so
you can curl it from another terminal. Ctrl-C stops it (the init turns
SIGINT into nginx's graceful QUIT); --seconds N stops it with SIGTERM after
N seconds, after checking every route once (for CI). The exit status is the
init's, or 1 if that check failed.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "it"))
sys.path.insert(0, HERE)

import pi  # noqa: E402
import testbed  # noqa: E402

ZONE = "peerprep-demo.internal"
LISTEN = ("127.0.0.1", 8080)
HEALTH = ("127.0.0.1", 8081)
TEMPLATE = os.path.join(REPO, "deploy", "nginx", "default.conf.template")
INI = os.path.join(REPO, "deploy", "peerprep-init.ini")
SITE = os.path.join(REPO, "deploy", "site")

# Mount the demo's /etc/hosts and site, then become the init: `exec` keeps
# the pid, so signals sent to this process reach the init itself.
MOUNT_AND_EXEC = ('hosts=$1 site=$2; shift 2; '
                  'mount --bind "$hosts" /etc/hosts && '
                  'mount --bind "$site" /usr/share/nginx/html && exec "$@"')


def say(msg=""):
    print(msg, flush=True)


def port_free(addr):
    with socket.socket() as s:
        # As nginx and libuv do: connections in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
            return True
        except OSError:
            return False


def get(url, timeout=3):
    """-> (status, body bytes); (0, error text) when there is no answer."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError) as e:
        return 0, str(e).encode()


def prepare(tmp, upstreams):
    with open(TEMPLATE) as f:
        text = f.read()
    if text.count("    listen 80;\n") != 1:
        sys.exit("demo: deploy template no longer has exactly one 'listen 80;' line")
    os.makedirs(os.path.join(tmp, "templates"))
    with open(os.path.join(tmp, "templates", "default.conf.template"), "w") as f:
        # Only the demo's address: no IPv6 listen on the host's port 80.
        text = text.replace("    listen ${NGINX_LISTEN_IPV6}:80;\n", "")
        f.write(text.replace("    listen 80;\n", "    listen %s:%d;\n" % LISTEN))
    hosts = os.path.join(tmp, "hosts")
    with open("/etc/hosts") as src, open(hosts, "w") as dst:
        dst.write(src.read().rstrip("\n") + "\n# peerprep-init demo\n")
        for svc, ip in upstreams.items():
            dst.write("%s\t%s.%s\n" % (ip, svc, ZONE))
    os.chmod(hosts, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEERPREP_INIT_", "NGINX_"))}
    env.update({testbed.host_var(svc): "%s.%s" % (svc, ZONE) for svc in upstreams})
    # nginx under tmp/nginx, rendering into tmp/conf.d, access log on stdout.
    env.update(pi.init_env(Path(tmp), os.path.join(tmp, "templates"), access_log="/dev/stdout"))
    env.update({
        "PEERPREP_INIT_HEALTH_LISTEN": "%s:%d" % HEALTH,
        "PEERPREP_INIT_HEALTH_PROBE": "%s:%d" % LISTEN,
    })
    return hosts, env


def print_menu(binary, upstreams, init_pid):
    base = "http://%s:%d" % LISTEN
    say()
    say("peerprep-init demo is up: nginx on %s, health on http://%s:%d/health" % ((base,) + HEALTH))
    say("Try, from another terminal:")
    for svc in upstreams:
        say("  curl -s '%s/%s-api/some/path?q=1'" % (base, svc))
    say("  curl -si %s/some/deep/link        # SPA fallback: index.html, no-cache" % base)
    assets = sorted(os.listdir(os.path.join(SITE, "assets")))
    say("  curl -sI %s/assets/%s    # hashed asset: immutable" % (base, assets[0] if assets else ""))
    say("  curl -s %s/health                 # through nginx" % base)
    say("  PEERPREP_INIT_HEALTH_LISTEN=%s:%d %s health; echo $?" % (HEALTH + (binary,)))
    say("  kill -HUP %d    # the init: re-render, config test, reload nginx" % init_pid)
    say("Ctrl-C stops it gracefully.")
    say()


def smoke(binary, upstreams):
    """One pass over every route; prints and returns the failures."""
    base = "http://%s:%d" % LISTEN
    failures = []

    def check(name, ok, detail=""):
        say("  %s %s%s" % ("ok  " if ok else "FAIL", name, "" if ok else ": " + detail))
        if not ok:
            failures.append(name)

    say("smoke check:")
    for svc in upstreams:
        status, body = get("%s/%s-api/smoke/path?q=1" % (base, svc))
        ok = status == 200 and b'"service": "%s"' % svc.encode() in body and b'"path": "/smoke/path"' in body
        check("/%s-api/" % svc, ok, "%d %r" % (status, body[:200]))
    status, body = get(base + "/some/deep/link")
    check("SPA fallback", status == 200 and b"<!doctype html>" in body.lower(), "%d" % status)
    status, body = get(base + "/health")
    check("/health through nginx", status == 200, "%d %r" % (status, body[:200]))
    env = dict(os.environ, PEERPREP_INIT_HEALTH_LISTEN="%s:%d" % HEALTH)
    r = subprocess.run([binary, "health"], env=env, capture_output=True, text=True, timeout=10)
    check("peerprep-init health", r.returncode == 0, (r.stdout + r.stderr).strip())
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the peerprep-init binary")
    ap.add_argument("--seconds", type=float, default=0,
                    help="check every route, then stop after this many seconds (0: run until Ctrl-C)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if os.geteuid() != 0:
        sys.exit("demo: needs root (a private mount namespace for /etc/hosts)")
    for tool in (pi.NGINX, "unshare", "mount"):
        if not shutil.which(tool):
            sys.exit("demo: %s not found (make deps installs it)" % tool)
    if not os.access(binary, os.X_OK):
        sys.exit("demo: %s is not an executable (run make)" % binary)
    upstreams = testbed.default_upstreams()
    busy = ["%s:%d" % a for a in [LISTEN, HEALTH] + [(ip, testbed.STUB_PORT) for ip in upstreams.values()]
            if not port_free(a)]
    if busy:
        sys.exit("demo: already in use: %s (another demo running?)" % ", ".join(busy))

    tmp = tempfile.mkdtemp(prefix="peerprep-demo-")
    os.chmod(tmp, 0o755)  # nginx workers run as nobody
    init = None
    status = 1
    try:
        hosts, env = prepare(tmp, upstreams)
        servers = testbed.start_stubs(upstreams, set(testbed.WS_SERVICES))
        say("stub backends: " + ", ".join("%s=%s:%d" % (s, ip, testbed.STUB_PORT) for s, ip in upstreams.items()))
        say("names: *.%s via a private /etc/hosts; files in %s" % (ZONE, tmp))
        # Its own session, so the terminal's Ctrl-C reaches only this script,
        # which forwards it: one SIGINT, and the init never outlives us.
        init = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", MOUNT_AND_EXEC,
             "sh", hosts, SITE, binary, "-c", INI],
            env=env, start_new_session=True)
        signal.signal(signal.SIGHUP, lambda *_: init.send_signal(signal.SIGHUP))
        signal.signal(signal.SIGTERM, interrupt)  # stop the same way as Ctrl-C
        status = run(init, binary, upstreams, args.seconds)
        for s in servers:
            s.shutdown()
            s.server_close()
    finally:
        if init is not None and init.poll() is None:
            init.kill()
            init.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return status


def run(init, binary, upstreams, seconds):
    """Wait for readiness, show the menu, wait for the end -> exit status."""
    failures = []
    stop_at = None
    try:
        end = time.monotonic() + 75  # upstreams.wait is 60 s
        while get("http://%s:%d/health/live" % HEALTH, timeout=1)[0] != 200 or port_free(LISTEN):
            if init.poll() is not None:
                say("demo: the init exited with %d before it was ready" % init.returncode)
                return exit_status(init.returncode)
            if time.monotonic() > end:
                say("demo: not ready after 75 s; stopping")
                init.send_signal(signal.SIGTERM)
                break
            time.sleep(0.1)
        else:
            print_menu(binary, upstreams, init.pid)
            if seconds:
                failures = smoke(binary, upstreams)
                stop_at = time.monotonic() + seconds
        while init.poll() is None:
            if stop_at is not None and time.monotonic() >= stop_at:
                say("demo: %gs are up, sending SIGTERM" % seconds)
                init.send_signal(signal.SIGTERM)
                stop_at = None
            with_timeout(init, 0.2)
    except KeyboardInterrupt:
        say("\ndemo: stopping (Ctrl-C again to hurry)")
        init.send_signal(signal.SIGINT)
    while True:
        try:
            code = init.wait(45)  # the init's own escalation ends within 30 s
            break
        except KeyboardInterrupt:
            init.send_signal(signal.SIGINT)
        except subprocess.TimeoutExpired:
            say("demo: the init did not exit in 45 s; killing it")
            init.kill()
    say("demo: the init exited with status %d" % exit_status(code))
    if failures:
        say("demo: smoke check failed: %s" % ", ".join(failures))
        return 1
    return exit_status(code)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def with_timeout(proc, seconds):
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pass


def exit_status(returncode):
    return 128 - returncode if returncode < 0 else returncode


if __name__ == "__main__":
    sys.exit(main())
