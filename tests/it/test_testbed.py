"""The test bed itself: names resolve inside it for glibc and for musl (the
init is a static musl binary), DNS changes take effect, stubs answer, and
nothing it starts is visible from, or outlives it in, the caller's
namespaces."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import testbed

MUSL_PROG = r"""
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

/* getaddrinfo(name) the way the init does it: any family, stream sockets.
   Prints one address per line; exit 0, or 2 with the resolver's error. */
int main(int argc, char **argv)
{
	struct addrinfo hints, *res, *ai;
	char buf[64];
	int rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(argv[1], NULL, &hints, &res);
	if (rc != 0) {
		printf("error %d %s\n", rc, gai_strerror(rc));
		return 2;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		void *a = ai->ai_family == AF_INET
			? (void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
			: (void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		printf("%s\n", inet_ntop(ai->ai_family, a, buf, sizeof buf));
	}
	freeaddrinfo(res);
	return 0;
}
"""


@pytest.fixture(scope="module")
def musl_resolve(tmp_path_factory):
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    d = tmp_path_factory.mktemp("musl")
    src = d / "resolve.c"
    src.write_text(MUSL_PROG)
    exe = d / "resolve"
    subprocess.run(["musl-gcc", "-static", "-O1", "-o", str(exe), str(src)], check=True)
    os.chmod(d, 0o755)
    return str(exe)


def musl_lookup(bed, exe, name):
    r = bed.check_output([exe, name])
    return r.returncode, sorted(r.stdout.split()) if r.returncode == 0 else r.stdout.strip()


def test_names_resolve_for_glibc(bed):
    for svc, ip in testbed.default_upstreams().items():
        assert bed.getent("%s.peerprep-prod.internal" % svc) == [ip]
    # The bed's own resolv.conf and hosts are what processes inside see.
    assert bed.check_output(["cat", "/etc/resolv.conf"]).stdout.strip() == "nameserver 127.0.0.53"


def test_names_resolve_for_musl(bed, musl_resolve):
    for svc, ip in testbed.default_upstreams().items():
        rc, out = musl_lookup(bed, musl_resolve, "%s.peerprep-prod.internal" % svc)
        assert (rc, out) == (0, [ip]), out
    # An unknown name in the zone is a clean "not found", not a resolver failure.
    rc, out = musl_lookup(bed, musl_resolve, "nope.peerprep-prod.internal")
    assert rc == 2 and "error -2" in out, out  # EAI_NONAME


def test_dns_is_authoritative_for_the_zone(bed):
    """musl asks A and AAAA at once and gives up on REFUSED: a v4-only name
    must get NOERROR with no AAAA data, an unknown one NXDOMAIN."""
    def ask(name, qtype):
        with bed.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(testbed.dns_query_packet(7, name, testbed.QTYPE[qtype]), (testbed.DNS_ADDR, 53))
            _, rcode, _, addrs = testbed.dns_parse_response(s.recv(4096))
            return rcode, addrs

    assert ask("user-service.peerprep-prod.internal", "A") == (0, ["127.0.0.11"])
    assert ask("user-service.peerprep-prod.internal", "AAAA") == (0, [])
    assert ask("nope.peerprep-prod.internal", "AAAA")[0] == 3


def test_set_host_and_remove_host_take_effect(bed, musl_resolve):
    name = "user-service.peerprep-prod.internal"
    bed.set_host(name, "127.0.0.99")
    assert bed.getent(name) == ["127.0.0.99"]
    assert musl_lookup(bed, musl_resolve, name) == (0, ["127.0.0.99"])
    bed.set_host(name, ["127.0.0.21", "127.0.0.22"])
    assert bed.getent(name) == ["127.0.0.21", "127.0.0.22"]
    bed.set_host("new.peerprep-prod.internal", "127.0.0.30")
    assert bed.getent("new.peerprep-prod.internal") == ["127.0.0.30"]
    bed.remove_host(name)
    assert bed.check_output(["getent", "ahosts", name]).returncode == 2
    rc, _ = musl_lookup(bed, musl_resolve, name)
    assert rc == 2


def test_stubs_answer_with_what_they_received(bed):
    for svc, ip in testbed.default_upstreams().items():
        r = bed.http_get("http://%s:8000/some/path?a=1&b=two" % ip, headers={"Host": "example.test"})
        assert r.status == 200
        assert r.json()["service"] == svc
        assert r.json()["path"] == "/some/path"
        assert r.json()["query"] == "a=1&b=two"
        assert r.json()["host"] == "example.test"
    r = bed.http("POST", "http://127.0.0.12:8000/q", body=b'{"x":1}', headers={"Content-Type": "application/json"})
    assert (r.json()["method"], r.json()["body"]) == ("POST", '{"x":1}')


@pytest.mark.parametrize("svc,ip", [("chat-service", "127.0.0.16"), ("collaboration-service", "127.0.0.15")])
def test_websocket_stubs_echo(bed, svc, ip):
    with bed.websocket("ws://%s:8000/socket?room=7" % ip) as ws:
        assert ws.headers["x-stub-service"] == svc
        assert ws.headers["x-stub-path"] == "/socket?room=7"
        ws.send("hello")
        assert ws.recv() == (testbed.WS_TEXT, b"hello")
        big = os.urandom(70000)
        ws.send(big)
        assert ws.recv() == (testbed.WS_BINARY, big)
        ws.ping(b"p")
        assert ws.recv() == (testbed.WS_PONG, b"p")


def test_stub_slow_requests_are_counted_in_flight(bed):
    # 3 s in flight: time for the poll below to see it on a loaded machine.
    result = {}
    t = threading.Thread(target=lambda: result.update(r=bed.http_get("http://127.0.0.11:8000/x?sleep_ms=3000")))
    t.start()
    testbed.deadline_poll("the slow request to reach the stub",
                          lambda: bed.stub_stats("user-service")["inflight"] == 1, timeout=5)
    t.join(10)
    assert result["r"].status == 200
    assert bed.stub_stats("user-service")["inflight"] == 0


def test_nothing_listens_outside_the_bed(bed):
    inside = bed.check_output(["ss", "-Htlnu"]).stdout.split("\n")
    local = [line.split()[4] for line in inside if line.strip()]
    assert "127.0.0.53:53" in local and "127.0.0.11:8000" in local
    for addr in local:
        assert addr.rsplit(":", 1)[0].strip("[]").startswith(("127.", "::1")), addr
    # None of the bed's processes own a socket in the caller's namespace.
    outside = subprocess.run(["ss", "-Htlnup"], capture_output=True, text=True).stdout
    bed_pids = {bed.holder_pid} | set(testbed.children_of(bed.holder_pid))
    for pid in bed_pids:
        assert "pid=%d," % pid not in outside


def test_run_new_pidns_is_pid_1_and_gets_signals(bed):
    r = bed.run(["sh", "-c", "echo $$; exec sleep 30"], new_pidns=True, stdout=subprocess.PIPE, text=True)
    assert r.stdout.readline().strip() == "1"
    # PID 1 ignores default-disposition signals: sleep survives SIGTERM,
    # SIGKILL (from the parent namespace) ends it.
    r.send_signal(15)
    with pytest.raises(subprocess.TimeoutExpired):
        r.wait(0.3)
    r.kill()
    r.wait(5)


def test_dns_delay_answers_late_but_concurrently(musl_resolve):
    with testbed.Bed(dns_delay_ms=200) as bed:
        t0 = time.monotonic()
        assert bed.resolve("chat-service.peerprep-prod.internal") == ["127.0.0.16"]
        assert time.monotonic() - t0 >= 0.19
        # 16 questions at once: answered one after the other they would
        # take 3.2 s; at once, 0.2 s and a loaded machine's room. Each one
        # waits long enough for its answer (a timed-out question would end
        # its thread early and hide a serialised responder).
        answers = []
        t0 = time.monotonic()
        threads = [threading.Thread(target=lambda: answers.append(
            bed.resolve("user-service.peerprep-prod.internal", timeout=10))) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [["127.0.0.11"]] * 16, answers
        assert time.monotonic() - t0 < 2.0
        assert musl_lookup(bed, musl_resolve, "user-service.peerprep-prod.internal") == (0, ["127.0.0.11"])
        assert bed.getent("history-service.peerprep-prod.internal") == ["127.0.0.14"]
        bed.set_host("history-service.peerprep-prod.internal", "127.0.0.40")
        assert bed.getent("history-service.peerprep-prod.internal") == ["127.0.0.40"]
        assert bed.resolve("nope.peerprep-prod.internal") == []


def test_stop_leaves_nothing_behind():
    bed = testbed.Bed().start()
    sleeper = bed.run(["sleep", "300"])
    nested = bed.run(["sleep", "300"], new_pidns=True)
    pids = [bed.holder_pid, sleeper.pid, nested.pid] + testbed.children_of(bed.holder_pid)
    folder = bed.dir
    bed.stop()
    for pid in pids:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z", pid
    assert not os.path.exists(folder)
    assert sleeper.poll() is not None and nested.poll() is not None


def test_holder_exits_when_its_creator_dies():
    """A bed must not outlive its process, even one killed with SIGKILL."""
    code = ("import sys, time; sys.path.insert(0, %r); import testbed; "
            "b = testbed.Bed(keep_dir=False).start(); print(b.holder_pid, flush=True)"
            "; print(b.dir, flush=True); time.sleep(60)" % os.path.dirname(testbed.__file__))
    p = subprocess.Popen([testbed.sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        holder = int(p.stdout.readline())
        folder = p.stdout.readline().strip()
    finally:
        p.kill()
        p.wait()
    testbed.deadline_poll("the orphaned holder to exit", lambda: not os.path.exists("/proc/%d" % holder), 10)
    testbed.deadline_poll("the orphaned bed's folder to go", lambda: not os.path.exists(folder), 10)
