#!/usr/bin/env python3
"""A stub backend for the image tests, run inside a container on port 8000.

    python3 /tests/image/backend.py NAME [--websocket]

It is the process-level tests' stub (tests/testbed.py, mounted read-only at
/tests): every request is answered with a JSON echo naming NAME, and with
--websocket an upgrade gets 101 and an echo of every frame. /_stats gives
its counters; `sleep_ms=N` in a query delays the answer. SIGTERM ends it.
"""

import signal
import sys
import threading

sys.path.insert(0, "/tests")
import testbed  # noqa: E402


def main():
    name = sys.argv[1]
    ws = "--websocket" in sys.argv[2:]
    testbed.start_stubs({name: "0.0.0.0"}, (name,) if ws else ())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("backend %s ready on :%d" % (name, testbed.STUB_PORT), flush=True)
    while not done.wait(1.0):
        pass


if __name__ == "__main__":
    main()
