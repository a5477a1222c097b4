#!/usr/bin/env python3
"""A throw-away network for peerprep-init's process-level tests.

A bed is a tree of namespaces hanging off the caller, never the caller
itself: `unshare --net --mount --pid --fork --mount-proc` starts a small
Python "holder" (this file, sub-command `_holder`) as PID 1 of a fresh pid
namespace with its own loopback-only network and a private mount table. The
holder brings `lo` up, bind-mounts a generated /etc/resolv.conf
(nameserver 127.0.0.53) and /etc/hosts, starts an authoritative DNS server on
127.0.0.53 (dnsmasq, or a small Python responder when answers must be
delayed) and stub HTTP upstreams on 127.0.0.x:8000, prints READY and waits.

The test process talks to the bed two ways:

* commands run inside it through `nsenter -t HOLDER -n -m -p` (Bed.run);
  with new_pidns=True they also get a pid namespace of their own, so the
  init under test is PID 1 there;
* sockets are made inside the bed's network namespace by a short-lived
  thread that setns(2)s into it (Bed.socket), so HTTP, WebSocket and DNS
  clients run in the test process itself, with no helper process.

Teardown kills the holder; the kernel then kills every process of the bed's
pid namespace, nested ones included. The holder also exits when its stdin
(a pipe from the creating process) reaches EOF, so a bed never outlives the
process that made it, even one killed with SIGKILL.

By hand:  python3 tests/testbed.py shell      (a shell inside a fresh bed)
          python3 tests/testbed.py run -- CMD  (one command, then tear down)
"""

import argparse
import base64
import contextlib
import ctypes
import hashlib
import heapq
import http.client
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DNS_ADDR = "127.0.0.53"
NXDOMAIN_DNS_ADDR = "127.0.0.54"  # knows no name of the zone (nxdomain_dns=True)
STUB_PORT = 8000
DEFAULT_ZONE = "peerprep-prod.internal"
SERVICES = (
    "user-service",
    "question-service",
    "matching-service",
    "history-service",
    "collaboration-service",
    "chat-service",
)
WS_SERVICES = ("collaboration-service", "chat-service")
CLONE_NEWNET = 0x40000000
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def default_upstreams():
    """The six PeerPrep services on 127.0.0.11 .. 127.0.0.16."""
    return {name: "127.0.0.%d" % (11 + i) for i, name in enumerate(SERVICES)}


def host_var(service):
    """'user-service' -> 'NGINX_USER_SERVICE_HOST' (the template's variable)."""
    return "NGINX_%s_HOST" % service.upper().replace("-", "_")


def deadline_poll(what, fn, timeout=10.0, interval=0.02):
    """Call fn() until it returns something truthy; raise TimeoutError naming
    `what` after `timeout` seconds. The interval grows to at most 0.2 s.
    Other exceptions from fn count as "not yet", except AssertionError,
    which fn raises to give up at once (e.g. the process it waits for died)."""
    end = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            result = fn()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() >= end:
            raise TimeoutError("timed out after %.1fs waiting for %s%s" %
                               (timeout, what, " (last error: %r)" % last_exc if last_exc else ""))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


# --------------------------------------------------------------------------
# DNS wire format: just enough for A/AAAA over UDP.
# --------------------------------------------------------------------------

QTYPE = {"A": 1, "AAAA": 28}


def dns_query_packet(qid, name, qtype):
    labels = name.rstrip(".").encode("ascii").split(b".")
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def _dns_skip_name(buf, off):
    while True:
        n = buf[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def _dns_read_qname(buf, off):
    labels = []
    while buf[off]:
        n = buf[off]
        labels.append(buf[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels), off + 1


def dns_parse_response(buf):
    """-> (qid, rcode, authoritative, [address strings])"""
    qid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", buf[:12])
    off = 12
    for _ in range(qd):
        off = _dns_skip_name(buf, off) + 4
    addrs = []
    for _ in range(an):
        off = _dns_skip_name(buf, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
        off += 10
        rdata = buf[off:off + rdlen]
        off += rdlen
        if rtype == 1:
            addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return qid, flags & 0xF, bool(flags & 0x0400), addrs


def read_hosts_file(path):
    """An /etc/hosts-format file -> {name(lower): [addresses]}."""
    table = {}
    with open(path) as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            for name in fields[1:]:
                table.setdefault(name.lower().rstrip("."), []).append(fields[0])
    return table


class DelayedDNS:
    """An authoritative UDP DNS responder for A and AAAA, answering from a
    hosts file after a fixed delay (dnsmasq cannot delay). Known names get
    their addresses (NOERROR with no answer for a family they lack);
    unknown names get NXDOMAIN, so musl's parallel A+AAAA lookups never see
    REFUSED. Each query is delayed on its own: concurrent queries are not
    serialised."""

    def __init__(self, addr, hosts_file, delay_ms):
        self.hosts_file = hosts_file
        # While the file drop-aaaa exists beside the hosts file, AAAA
        # questions go unanswered, or get the error code it holds (2
        # SERVFAIL, 5 REFUSED) with no records; a line is added to
        # dropped-aaaa for each: a nameserver that loses one family's
        # answers.
        self.drop_flag = os.path.join(os.path.dirname(hosts_file), "drop-aaaa")
        self.dropped = os.path.join(os.path.dirname(hosts_file), "dropped-aaaa")
        # While the file cut-answers exists (holding N), answers to plain
        # questions hold N of the name's records, picked at random and
        # flagged as truncated, and questions with EDNS0 go unanswered: a
        # nameserver whose whole set cannot be had.
        self.cut_flag = os.path.join(os.path.dirname(hosts_file), "cut-answers")
        self.delay = delay_ms / 1000.0
        self.table = read_hosts_file(hosts_file)
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 53))
        self.thread = threading.Thread(target=self._loop, name="dns", daemon=True)

    def start(self):
        self.thread.start()

    def reload(self):
        table = read_hosts_file(self.hosts_file)
        with self.lock:
            self.table = table

    def answer(self, query):
        qid, flags, qd = struct.unpack("!HHH", query[:6])
        if flags & 0x8000 or qd != 1:
            return None
        name, off = _dns_read_qname(query, 12)
        qtype, _ = struct.unpack("!HH", query[off:off + 4])
        question = query[12:off + 4]
        if qtype == 28 and os.path.exists(self.drop_flag):
            with open(self.dropped, "a") as f:
                f.write("%.3f %s\n" % (time.monotonic(), name))
            try:
                with open(self.drop_flag) as f:
                    code = f.read().strip()
            except FileNotFoundError:
                code = ""
            if not code:
                return None
            rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | int(code)
            return struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + question
        with self.lock:
            addrs = self.table.get(name.lower().rstrip("."))
        answers = []
        if addrs is not None:
            for a in addrs:
                ip = ipaddress.ip_address(a)
                if (qtype == 1 and ip.version == 4) or (qtype == 28 and ip.version == 6):
                    answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(ip.packed)) + ip.packed)
        rcode = 0 if addrs is not None else 3
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode  # QR AA RD(copied) RA
        try:
            with open(self.cut_flag) as f:
                cut = int(f.read())
        except (FileNotFoundError, ValueError):
            cut = None
        if cut is not None:
            if struct.unpack("!H", query[10:12])[0]:  # an OPT record: EDNS0
                return None
            if len(answers) > cut:
                answers = random.sample(answers, cut)
                rflags |= 0x0200  # TC
                with open(self.cut_flag + "-given", "a") as f:
                    f.write(name + "\n")
        head = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0)
        return head + question + b"".join(answers)

    def _loop(self):
        pending = []  # heap of (due, seq, packet, addr)
        seq = 0
        while True:
            timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                data, peer = self.sock.recvfrom(4096)
                try:
                    reply = self.answer(data)
                except (struct.error, IndexError, UnicodeDecodeError):
                    reply = None
                if reply is not None:
                    seq += 1
                    heapq.heappush(pending, (time.monotonic() + self.delay, seq, reply, peer))
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _, _, reply, peer = heapq.heappop(pending)
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, peer)


# --------------------------------------------------------------------------
# WebSocket framing (RFC 6455), shared by the stub server and the client.
# --------------------------------------------------------------------------

WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 1, 2, 8, 9, 10


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_encode(opcode, payload, mask):
    head = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def ws_decode(read):
    """Read one frame with read(n) (which must return exactly n bytes or
    raise EOFError) -> (opcode, payload). Fragmented messages are not
    needed by these tests and are rejected."""
    b0, b1 = read(2)
    if not b0 & 0x80:
        raise ValueError("fragmented WebSocket frames are not supported")
    opcode, n = b0 & 0x0F, b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read(8))[0]
    if n > 1 << 20:
        raise ValueError("WebSocket frame too large: %d" % n)
    key = read(4) if b1 & 0x80 else None
    payload = read(n) if n else b""
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload


# --------------------------------------------------------------------------
# Stub upstream: JSON echo of what it received, plus a WebSocket echo.
# --------------------------------------------------------------------------


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, name, addr, port, websocket):
        self.name = name
        self.websocket = websocket
        self.lock = threading.Lock()
        self.inflight = 0
        self.total = 0
        super().__init__((addr, port), StubHandler)


class StubHandler(BaseHTTPRequestHandler):
    """GET/POST/... PATH?QUERY -> 200 application/json
    {"service", "method", "path", "query", "host", "headers", "body"}.

    Special paths: /_stats (this stub's counters), and any path with
    `sleep_ms=N` in its query answers after N ms (capped at 30 s), for
    in-flight-request tests. A WebSocket upgrade on a WebSocket service gets
    101 with X-Stub-Service / X-Stub-Path headers and then echoes every text
    or binary frame; others get a plain JSON answer."""

    protocol_version = "HTTP/1.1"
    server_version = "peerprep-stub"

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass

    def _handle(self):
        srv = self.server
        if srv.websocket and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_stats":
            with srv.lock:
                self._send_json(200, {"service": srv.name, "inflight": srv.inflight, "total": srv.total})
            return
        with srv.lock:
            srv.inflight += 1
            srv.total += 1
        try:
            params = urllib.parse.parse_qs(url.query)
            if "sleep_ms" in params:
                time.sleep(min(int(params["sleep_ms"][0]), 30000) / 1000.0)
            self._send_json(200, {
                "service": srv.name,
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "host": self.headers.get("Host"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            })
        finally:
            with srv.lock:
                srv.inflight -= 1

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(key))
        self.send_header("X-Stub-Service", self.server.name)
        self.send_header("X-Stub-Path", self.path)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

        def read(n):
            data = self.rfile.read(n)
            if len(data) != n:
                raise EOFError
            return data

        try:
            while True:
                opcode, payload = ws_decode(read)
                if opcode in (WS_TEXT, WS_BINARY):
                    self.wfile.write(ws_encode(opcode, payload, mask=False))
                elif opcode == WS_PING:
                    self.wfile.write(ws_encode(WS_PONG, payload, mask=False))
                elif opcode == WS_CLOSE:
                    self.wfile.write(ws_encode(WS_CLOSE, payload[:2], mask=False))
                    break
                self.wfile.flush()
        except (EOFError, OSError, ValueError):
            pass


def start_stubs(upstreams, ws_services, port=STUB_PORT):
    """Bind every stub before returning (so a caller may report ready at
    once) and serve each from its own daemon thread."""
    servers = []
    for name, addr in upstreams.items():
        srv = StubServer(name, addr, port, name in ws_services)
        threading.Thread(target=srv.serve_forever, name="stub-" + name, daemon=True).start()
        servers.append(srv)
    return servers


# --------------------------------------------------------------------------
# The holder: PID 1 of a bed.
# --------------------------------------------------------------------------


def _log(msg):
    sys.stderr.write("testbed-holder: %s\n" % msg)
    sys.stderr.flush()


def _dns_answers(name, timeout=0.3, addr=DNS_ADDR):
    """True once the bed's DNS server at addr gives an authoritative answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(dns_query_packet(1, name, 1), (addr, 53))
        _, rcode, _, _ = dns_parse_response(s.recv(4096))
        return rcode in (0, 3)


def holder_main(cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    bed_dir = cfg["dir"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for src, dst in (("resolv.conf", "/etc/resolv.conf"), ("etc-hosts", "/etc/hosts")):
        subprocess.run(["mount", "--bind", os.path.join(bed_dir, src), dst], check=True)

    # Every signal the holder cares about is taken synchronously with
    # sigtimedwait. They are blocked before any thread exists so that every
    # thread inherits the mask, and blocked signals are never dropped even
    # though a pid namespace's init ignores default-disposition signals.
    waited = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)

    dnsmasq = None
    responder = None
    if cfg["dns_delay_ms"] > 0:
        responder = DelayedDNS(DNS_ADDR, cfg["hosts_file"], cfg["dns_delay_ms"])
        responder.start()
    else:
        argv = ["dnsmasq", "--no-daemon", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--addn-hosts=" + cfg["hosts_file"], "--listen-address=" + DNS_ADDR,
                "--bind-interfaces", "--pid-file=", "--user=root", "--group=root",
                "--log-facility=" + os.path.join(bed_dir, "dnsmasq.log")]
        argv += ["--local=/%s/" % d for d in cfg["local_domains"]]
        if cfg.get("log_queries"):
            argv.append("--log-queries")
        # stdout is the READY pipe, which nobody reads after READY.
        dnsmasq = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=sys.stderr,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, []))

    nx_dnsmasq = None
    if cfg.get("nxdomain_dns"):
        # Authoritative for the same zone with no records: a fast NXDOMAIN
        # for every name, as the host's resolver gives for podman's names.
        nx_dnsmasq = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--keep-in-foreground", "--no-resolv", "--no-hosts",
             "--listen-address=" + NXDOMAIN_DNS_ADDR, "--bind-interfaces", "--pid-file=",
             "--user=root", "--group=root",
             "--log-facility=" + os.path.join(bed_dir, "dnsmasq-nx.log")]
            + ["--local=/%s/" % d for d in cfg["local_domains"]],
            stdin=subprocess.DEVNULL, stdout=sys.stderr,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, []))

    probe = cfg["probe_name"]
    try:
        deadline_poll("the bed's DNS server to answer for " + probe, lambda: _dns_answers(probe), 10)
        if nx_dnsmasq is not None:
            deadline_poll("the NXDOMAIN DNS server to answer",
                          lambda: _dns_answers(probe, addr=NXDOMAIN_DNS_ADDR), 10)
    except TimeoutError as exc:
        print("ERROR " + str(exc), flush=True)
        return 1

    try:
        start_stubs(cfg["upstreams"], set(cfg["ws_services"]))
    except OSError as exc:
        print("ERROR starting stub upstreams: %s" % exc, flush=True)
        return 1

    def watch_stdin():
        # EOF means the process that made this bed is gone: tear down, and
        # remove the folder it can no longer remove itself.
        while os.read(0, 4096):
            pass
        if not cfg["keep_dir"]:
            shutil.rmtree(bed_dir, ignore_errors=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    print("READY", flush=True)

    while True:
        info = signal.sigtimedwait(waited, 1.0)
        while True:  # reap everything: orphans of the whole bed come here
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if dnsmasq is not None and pid == dnsmasq.pid:
                _log("dnsmasq exited with status %d" % status)
                dnsmasq.returncode = status
            if nx_dnsmasq is not None and pid == nx_dnsmasq.pid:
                _log("the NXDOMAIN dnsmasq exited with status %d" % status)
                nx_dnsmasq.returncode = status
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_signo == signal.SIGHUP:
            if dnsmasq is not None and dnsmasq.returncode is None:
                os.kill(dnsmasq.pid, signal.SIGHUP)
            if responder is not None:
                responder.reload()
            continue
        break  # SIGTERM / SIGINT: returning ends the namespace and all in it
    return 0


# --------------------------------------------------------------------------
# The caller's side.
# --------------------------------------------------------------------------


def _ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def children_of(pid):
    """Global pids whose parent is `pid` (no /proc/PID/task/*/children here)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _ppid(int(entry)) == pid:
                    kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(kids)


_libc = ctypes.CDLL(None, use_errno=True)


class BedProcess:
    """A command running inside a bed. `popen` is the nsenter process in the
    caller's namespace; `pid` is the command itself (global pid), which is
    what signals must go to: nsenter and unshare do not forward them.
    wait()/returncode report the command's status (nsenter and unshare pass
    it through; death by signal N shows as -N)."""

    def __init__(self, popen, depth, argv):
        self.popen = popen
        self.argv = argv
        self.pid = None
        pid = popen.pid
        end = time.monotonic() + 10
        for _ in range(depth):
            while True:
                kids = children_of(pid)
                if kids:
                    pid = kids[0]
                    break
                if popen.poll() is not None or time.monotonic() > end:
                    return  # exited (or never started): pid stays None
                time.sleep(0.002)
        self.pid = pid

    stdin = property(lambda self: self.popen.stdin)
    stdout = property(lambda self: self.popen.stdout)
    stderr = property(lambda self: self.popen.stderr)
    returncode = property(lambda self: self.popen.returncode)

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def communicate(self, input=None, timeout=None):  # noqa: A002
        return self.popen.communicate(input, timeout)

    def send_signal(self, sig):
        if self.pid is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        # nsenter is left alive on purpose: it reaps the command at once. A
        # killed nsenter would orphan its child to the caller's PID 1, and
        # the bed's pid namespace cannot finish dying until that is reaped.
        if self.pid is None:
            self.popen.kill()
        else:
            self.send_signal(signal.SIGKILL)


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name, default=None):
        """First value of a header, case-insensitively."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.reason, self.body[:200])


class WebSocket:
    """A minimal client connection (masking, text/binary/ping/close)."""

    def __init__(self, sock, response_headers, leftover):
        self.sock = sock
        self.headers = response_headers
        self._buf = leftover

    def _read(self, n):
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("WebSocket peer closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send(self, data):
        if isinstance(data, str):
            self.sock.sendall(ws_encode(WS_TEXT, data.encode(), mask=True))
        else:
            self.sock.sendall(ws_encode(WS_BINARY, bytes(data), mask=True))

    def ping(self, data=b""):
        self.sock.sendall(ws_encode(WS_PING, data, mask=True))

    def recv(self):
        """-> (opcode, payload bytes)"""
        return ws_decode(self._read)

    def close(self):
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.sock.sendall(ws_encode(WS_CLOSE, struct.pack("!H", 1000), mask=True))
            opcode, _ = self.recv()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Bed:
    """One bed. Use as a context manager or call start()/stop().

    upstreams   {service: address}; each gets a stub on address:8000 and the
                DNS name "<service>.<zone>" (default: the six services on
                127.0.0.11-16 under peerprep-prod.internal)
    zone        DNS zone of the upstream names; the bed's DNS is
                authoritative for `local_domains` (default: the zone's
                top-level label, e.g. "internal")
    dns_delay_ms  >0 replaces dnsmasq with a Python responder that answers
                every query after this many ms
    extra_hosts {name: address or [addresses]} added to the DNS zone
    nxdomain_dns  also run a second DNS server on 127.0.0.54, authoritative
                for the same domains with no records (a fast NXDOMAIN for
                every name), listed second in resolv.conf: two nameservers of
                which only one knows the names, as podman's networks give
                (musl asks both at once; glibc, as nginx here, the first)
    """

    def __init__(self, upstreams=None, zone=DEFAULT_ZONE, dns_delay_ms=0, extra_hosts=None,
                 ws_services=WS_SERVICES, local_domains=None, keep_dir=None, log_queries=False,
                 nxdomain_dns=False, resolv_options=None):
        self.nxdomain_dns = nxdomain_dns
        self.resolv_options = resolv_options
        self.upstreams = dict(default_upstreams() if upstreams is None else upstreams)
        self.zone = zone
        self.dns_delay_ms = dns_delay_ms
        self.ws_services = tuple(ws_services)
        self.local_domains = list(local_domains or [zone.rsplit(".", 1)[-1]])
        self.keep_dir = os.environ.get("PEERPREP_BED_KEEP") == "1" if keep_dir is None else keep_dir
        self.log_queries = log_queries
        self.hosts = {"%s.%s" % (svc, zone): [ip] for svc, ip in self.upstreams.items()}
        for name, ips in (extra_hosts or {}).items():
            self.hosts[name] = [ips] if isinstance(ips, str) else list(ips)
        self.dir = None
        self.holder_pid = None
        self._unshare = None
        self._procs = []
        self._netns_fd = None
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------

    def start(self, timeout=15):
        self.dir = tempfile.mkdtemp(prefix="peerprep-bed-")
        # World-readable: nginx workers run as nobody and dnsmasq reads files.
        os.chmod(self.dir, 0o755)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout):
        self.hosts_file = os.path.join(self.dir, "zone.hosts")
        self._write_hosts()
        with open(os.path.join(self.dir, "resolv.conf"), "w") as f:
            f.write("nameserver %s\n" % DNS_ADDR)
            if self.nxdomain_dns:
                f.write("nameserver %s\n" % NXDOMAIN_DNS_ADDR)
            if self.resolv_options:
                f.write("options %s\n" % self.resolv_options)
        with open(os.path.join(self.dir, "etc-hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        cfg = {
            "dir": self.dir,
            "hosts_file": self.hosts_file,
            "upstreams": self.upstreams,
            "ws_services": list(self.ws_services),
            "dns_delay_ms": self.dns_delay_ms,
            "local_domains": self.local_domains,
            "log_queries": self.log_queries,
            "nxdomain_dns": self.nxdomain_dns,
            "keep_dir": self.keep_dir,
            "probe_name": "probe." + self.local_domains[0],
        }
        cfg_path = os.path.join(self.dir, "bed.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self._log = open(os.path.join(self.dir, "holder.log"), "wb")
        self._unshare = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", "--kill-child",
             sys.executable, os.path.abspath(__file__), "_holder", cfg_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        end = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            ready, _, _ = select.select([self._unshare.stdout], [], [], max(0, left))
            if not ready:
                raise TimeoutError("bed did not become ready in %ss; log:\n%s" % (timeout, self.logs()))
            chunk = os.read(self._unshare.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError("bed holder exited before it was ready; log:\n%s" % self.logs())
            line += chunk
        if line.strip() != b"READY":
            raise RuntimeError("bed holder failed: %s\nlog:\n%s" % (line.decode().strip(), self.logs()))
        kids = children_of(self._unshare.pid)
        if not kids:
            raise RuntimeError("bed holder vanished; log:\n%s" % self.logs())
        self.holder_pid = kids[0]
        self._netns_fd = os.open("/proc/%d/ns/net" % self.holder_pid, os.O_RDONLY)

    def stop(self):
        """Kill everything in the bed and remove its folder. Idempotent and
        safe to call from a failed start()."""
        if self._unshare is not None:
            if self.holder_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.holder_pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self._unshare.stdin.close()
            try:
                self._unshare.wait(10)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait()
            self._unshare.stdout.close()
            self._unshare = None
        for p in self._procs:
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        self._procs = []
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        if self.dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def logs(self):
        """The holder's and dnsmasq's logs, for failure messages."""
        out = []
        for name in ("holder.log", "dnsmasq.log"):
            path = os.path.join(self.dir or "", name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    out.append("--- %s\n%s" % (name, f.read()[-4000:]))
        return "\n".join(out)

    # -- running commands -----------------------------------------------------

    def nsenter_argv(self, cwd=None):
        return ["nsenter", "-t", str(self.holder_pid), "-n", "-m", "-p",
                "--wd=" + (cwd or os.getcwd())]

    def run(self, argv, env=None, new_pidns=False, cwd=None, **popen_kw):
        """Start argv inside the bed -> BedProcess (a Popen-like object).

        env: variables added to (or, with value None, removed from) the
        caller's environment, from which PEERPREP_INIT_* and NGINX_* are
        first removed so the host's settings never leak into a test.
        new_pidns: run argv as PID 1 of a pid namespace (and mount namespace
        with its own /proc) of its own, nested in the bed's.
        Other keyword arguments go to subprocess.Popen."""
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PEERPREP_INIT_", "NGINX_"))}
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        cmd = self.nsenter_argv(cwd)
        depth = 1
        if new_pidns:
            cmd += ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            depth = 2
        cmd += ["--"] + list(argv)
        popen = subprocess.Popen(cmd, env=full_env, **popen_kw)
        proc = BedProcess(popen, depth, list(argv))
        with self._lock:
            self._procs.append(proc)
        return proc

    def check_output(self, argv, timeout=10, env=None):
        """Run argv inside the bed to completion -> CompletedProcess (text)."""
        p = self.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise TimeoutError("%s did not finish in %ss: %s" % (argv, timeout, err))
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def bind_mount(self, src, dst):
        """Bind src over dst in the bed's mount namespace (before starting
        the processes that should see it: a nested namespace copies the
        mount table when it is made)."""
        r = self.check_output(["mount", "--bind", os.path.abspath(src), dst])
        if r.returncode != 0:
            raise RuntimeError("mount --bind %s %s failed: %s" % (src, dst, r.stderr))

    # -- DNS ----------------------------------------------------------------

    def _write_hosts(self):
        tmp = self.hosts_file + ".tmp"
        with open(tmp, "w") as f:
            for name, ips in sorted(self.hosts.items()):
                for ip in ips:
                    f.write("%s %s\n" % (ip, name))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.hosts_file)

    def _reload_dns(self, name, expect, wait):
        os.kill(self.holder_pid, signal.SIGHUP)
        if wait:
            want = sorted(expect)
            deadline_poll("%s to resolve to %s" % (name, want or "nothing"),
                          lambda: sorted(self.resolve(name, "A") + self.resolve(name, "AAAA")) == want,
                          timeout=10)

    def set_host(self, name, ips, wait=True):
        """Point DNS name at one address or a list; with wait, return once the
        bed's DNS server answers with exactly those addresses."""
        ips = [ips] if isinstance(ips, str) else list(ips)
        self.hosts[name] = ips
        self._write_hosts()
        self._reload_dns(name, ips, wait)

    def _flag(self, name, value):
        """Write the bed responder's flag file name holding value, whole
        (renamed into place), or remove it when value is None."""
        flag = os.path.join(self.dir, name)
        if value is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flag)
            return
        with open(flag + ".tmp", "w") as f:
            f.write(str(value))
        os.rename(flag + ".tmp", flag)

    def _lines(self, name):
        """The lines the bed responder has logged to the file name."""
        try:
            with open(os.path.join(self.dir, name)) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def drop_aaaa(self, on, rcode=None):
        """With dns_delay_ms > 0 (the bed's own responder): leave every AAAA
        question unanswered while on, or answer it with the error rcode
        (2 SERVFAIL, 5 REFUSED) and no records."""
        self._flag("drop-aaaa", ("" if rcode is None else rcode) if on else None)

    def dropped_aaaa(self):
        """How many AAAA questions went unanswered so far."""
        return len(self._lines("dropped-aaaa"))

    def cut_answers(self, n):
        """With dns_delay_ms > 0: answer plain questions with n records at
        random, flagged as truncated, and drop EDNS0 questions (None: whole
        answers again)."""
        self._flag("cut-answers", n)

    def cut_given(self):
        """How many cut answers were given so far."""
        return len(self._lines("cut-answers-given"))

    def dropped_aaaa_span(self):
        """Seconds from the first AAAA question dropped to the last."""
        times = [float(line.split()[0]) for line in self._lines("dropped-aaaa")]
        return times[-1] - times[0] if times else 0.0

    def remove_host(self, name, wait=True):
        """Make name stop resolving (NXDOMAIN)."""
        self.hosts.pop(name, None)
        self._write_hosts()
        self._reload_dns(name, [], wait)

    def resolve(self, name, qtype="A", timeout=1.0):
        """Ask the bed's DNS server directly -> list of addresses ([] for
        NXDOMAIN or no data). Raises on REFUSED/SERVFAIL or no answer."""
        with self.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            qid = int.from_bytes(os.urandom(2), "big")
            s.sendto(dns_query_packet(qid, name, QTYPE[qtype]), (DNS_ADDR, 53))
            while True:
                rid, rcode, _, addrs = dns_parse_response(s.recv(4096))
                if rid == qid:
                    break
        if rcode not in (0, 3):
            raise RuntimeError("DNS rcode %d for %s %s" % (rcode, qtype, name))
        return addrs

    def getent(self, name):
        """glibc's answer (`getent ahosts`) inside the bed -> sorted addresses."""
        r = self.check_output(["getent", "ahosts", name])
        return sorted({line.split()[0] for line in r.stdout.splitlines() if line.strip()})

    # -- network ------------------------------------------------------------

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):  # noqa: A002
        """A socket living in the bed's network namespace. setns(2) changes
        only the calling thread's namespace, so a throw-away thread makes
        the socket and the caller uses it from anywhere."""
        result = {}

        def make():
            try:
                if _libc.setns(self._netns_fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, "setns: " + os.strerror(err))
                result["sock"] = socket.socket(family, type)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                result["exc"] = exc

        t = threading.Thread(target=make, name="bed-netns")
        t.start()
        t.join()
        if "exc" in result:
            raise result["exc"]
        return result["sock"]

    def connect(self, host, port, timeout=5.0):
        s = self.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except BaseException:
            s.close()
            raise
        return s

    def port_open(self, host, port):
        try:
            self.connect(host, port, timeout=0.5).close()
            return True
        except OSError:
            return False

    def wait_port(self, host, port, timeout=10):
        deadline_poll("%s:%d to accept connections" % (host, port),
                      lambda: self.port_open(host, port), timeout)

    def _addr(self, url):
        u = urllib.parse.urlsplit(url)
        host = u.hostname
        try:
            ipaddress.ip_address(host)
        except ValueError:
            addrs = self.resolve(host, "A")
            if not addrs:
                raise OSError("%s does not resolve in the bed" % host)
            host = addrs[0]
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        return u, host, u.port or 80, path

    def http(self, method, url, body=None, headers=None, timeout=10.0):
        """One HTTP/1.1 request made inside the bed -> Response. The Host
        header is the URL's host unless headers overrides it."""
        u, ip, port, path = self._addr(url)
        sock = self.connect(ip, port, timeout)
        conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
        conn.sock = sock
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.reason, r.getheaders(), r.read())
        finally:
            conn.close()

    def http_get(self, url, headers=None, timeout=10.0):
        return self.http("GET", url, headers=headers, timeout=timeout)

    def websocket(self, url, headers=None, timeout=10.0):
        """Open a WebSocket (ws:// or http:// URL) inside the bed -> WebSocket.
        Raises RuntimeError if the answer is not a valid 101."""
        u, ip, port, path = self._addr(url)
        sock = self.connect(ip, port, timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: %s" % u.netloc, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk or len(buf) > 65536:
                sock.close()
                raise RuntimeError("no WebSocket handshake answer; got %r" % buf[:500])
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status_line.split()[1] != "101" or hdrs.get("sec-websocket-accept") != ws_accept(key):
            sock.close()
            raise RuntimeError("WebSocket handshake failed: %s %r" % (status_line, hdrs))
        return WebSocket(sock, hdrs, rest)

    def stub_stats(self, service):
        """A stub's counters: {"inflight": n, "total": n} (asked directly)."""
        return self.http_get("http://%s:%d/_stats" % (self.upstreams[service], STUB_PORT)).json()

    def env(self):
        """NGINX_<SERVICE>_HOST for each upstream -> its DNS name."""
        return {host_var(svc): "%s.%s" % (svc, self.zone) for svc in self.upstreams}


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _cli(argv):
    ap = argparse.ArgumentParser(prog="testbed.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{shell,run}")
    for name, helptext in (("shell", "open a shell inside a fresh bed"),
                           ("run", "run one command inside a fresh bed")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--dns-delay-ms", type=int, default=0)
        p.add_argument("--zone", default=DEFAULT_ZONE)
        p.add_argument("--keep", action="store_true", help="keep the bed's folder (logs)")
        if name == "run":
            p.add_argument("command", nargs=argparse.REMAINDER)
    h = sub.add_parser("_holder", help=argparse.SUPPRESS)
    h.add_argument("config")
    args = ap.parse_args(argv)

    if args.cmd == "_holder":
        return holder_main(args.config)
    if os.geteuid() != 0:
        ap.error("a bed needs root (namespaces, mounts)")
    command = getattr(args, "command", None)
    if command and command[0] == "--":
        command = command[1:]
    with Bed(zone=args.zone, dns_delay_ms=args.dns_delay_ms, keep_dir=args.keep) as bed:
        info = ["bed folder %s, holder pid %d" % (bed.dir, bed.holder_pid),
                "DNS %s (hosts file %s; edit it, then kill -HUP %d)" % (DNS_ADDR, bed.hosts_file, bed.holder_pid)]
        info += ["  %-40s -> %s (stub on :%d)" % (n, ",".join(ips), STUB_PORT) for n, ips in sorted(bed.hosts.items())]
        env = dict(bed.env(), PEERPREP_BED=bed.dir)
        if args.cmd == "shell":
            sys.stderr.write("\n".join(info) + "\nNGINX_*_HOST are exported. Leave with exit.\n")
            p = bed.run([os.environ.get("SHELL", "/bin/bash")], env=env)
        else:
            if not command:
                ap.error("run needs a command")
            p = bed.run(command, env=env)
        try:
            while True:
                try:
                    return p.wait()
                except KeyboardInterrupt:
                    p.send_signal(signal.SIGINT)
        finally:
            if args.keep:
                sys.stderr.write("kept %s\n" % bed.dir)


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
