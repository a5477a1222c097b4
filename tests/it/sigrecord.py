"""A stand-in child that records every catchable signal it receives, one
number a line, in the file given as argv[1], and exits 0 on SIGTERM. It
writes "ready" once its handlers are in place."""
import signal
import sys
import time

out = sys.argv[1]


def record(sig, frame):
    with open(out, "a") as f:
        f.write("%d\n" % sig)
    if sig == signal.SIGTERM:
        sys.exit(0)


for s in signal.valid_signals():
    if s in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    try:
        signal.signal(s, record)
    except (OSError, ValueError):
        pass  # the C library keeps a few for itself
with open(out, "a") as f:
    f.write("ready\n")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
