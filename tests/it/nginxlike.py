"""A stand-in for nginx's master as the reload confirmation sees it:
NGINXLIKE_WORKERS `sleep` workers; at SIGHUP a "parse" that resolves
NGINXLIKE_HOST first (as nginx does), waits NGINXLIKE_PARSE_S seconds or
until the file NGINXLIKE_GO exists, then takes the reload (new workers,
the old ones ended) or, from reload number NGINXLIKE_REJECT_FROM on,
rejects it (keeps its workers, as nginx does after an [emerg]). Each step
is a line in NGINXLIKE_LOG. SIGHUPs that come during a parse are one more
reload after it; QUIT and TERM end it with its workers."""
import os
import signal
import socket
import subprocess
import time

WORKERS = int(os.environ.get("NGINXLIKE_WORKERS", "1"))
PARSE = float(os.environ.get("NGINXLIKE_PARSE_S", "0"))
GO = os.environ.get("NGINXLIKE_GO", "")
REJECT_FROM = int(os.environ.get("NGINXLIKE_REJECT_FROM", "0"))
HOST = os.environ.get("NGINXLIKE_HOST", "")
LOG = os.environ["NGINXLIKE_LOG"]


def log(msg):
    with open(LOG, "a") as f:
        f.write(msg + "\n")


def spawn():
    return [subprocess.Popen(["sleep", "100000"]) for _ in range(WORKERS)]


def main():
    hups = [0]
    signal.signal(signal.SIGHUP, lambda s, f: hups.__setitem__(0, hups[0] + 1))
    workers = spawn()

    def end(s, f):
        for w in workers:
            w.kill()
        os._exit(0)

    signal.signal(signal.SIGQUIT, end)
    signal.signal(signal.SIGTERM, end)
    log("started")
    done = 0
    while True:
        while not hups[0]:  # polled: a pause() could miss one between check and call
            time.sleep(0.01)
        hups[0] = 0
        done += 1
        addrs = ""
        if HOST:
            try:
                addrs = ",".join(sorted({a[4][0] for a in socket.getaddrinfo(HOST, 80)}))
            except OSError as e:
                addrs = "error %s" % e
        log("reload %d: parse starts, resolved %s" % (done, addrs))
        time.sleep(PARSE)
        while GO and not os.path.exists(GO):
            time.sleep(0.01)
        if REJECT_FROM and done >= REJECT_FROM:
            log("reload %d: rejected" % done)
            continue
        new = spawn()
        for w in workers:
            w.kill()
            w.wait()
        workers = new
        log("reload %d: taken" % done)


main()
