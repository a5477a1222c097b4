"""The child for the fork-window tests: inside the init's pid namespace
(the init is 1, this is 2), for argv[1] seconds it asks the init for
reloads (SIGHUP to 1) and sends signal argv[2] (a name: USR1, TSTP) to the
next pids the kernel will hand out, which are the config tests the reloads
fork. Nothing is ever sent to the init but SIGHUP, so any signal the init
forwards is a phantom: a signal that landed in a child between fork and
exec. Exits 0."""
import os
import signal
import sys
import time

SIG = signal.Signals["SIG" + sys.argv[2]]
signal.signal(SIG, signal.SIG_IGN)  # a phantom must not hit us
signal.signal(signal.SIGHUP, signal.SIG_IGN)  # each reload sends one
end = time.monotonic() + float(sys.argv[1])
sent = 0
while time.monotonic() < end:
    os.kill(1, signal.SIGHUP)
    with open("/proc/sys/kernel/ns_last_pid") as f:
        last = int(f.read())
    for pid in range(last, last + 3):
        if pid > 2:
            try:
                os.kill(pid, SIG)
                sent += 1
            except OSError:
                pass
print("sigstorm: %d signals delivered" % sent, file=sys.stderr)
