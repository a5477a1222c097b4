"""A stand-in child that records every signal it receives, one name a line,
in the file given as argv[1]. It exits 0 on SIGQUIT (as nginx's graceful
stop does) unless argv[2] is "stubborn", in which case it ignores QUIT and
TERM and must be killed."""
import os
import signal
import sys
import time

out = sys.argv[1]
stubborn = len(sys.argv) > 2 and sys.argv[2] == "stubborn"


def record(sig, frame):
    with open(out, "a") as f:
        f.write(signal.Signals(sig).name + "\n")
    if sig == signal.SIGQUIT and not stubborn:
        sys.exit(0)


for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
          signal.SIGTERM, signal.SIGINT):
    signal.signal(s, record)
with open(out, "a") as f:
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    f.write(f"ready pgid={os.getpgid(0) == os.getpid()} mask={len(mask)}\n")
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
