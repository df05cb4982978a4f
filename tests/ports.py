"""Ports for the servers tests start. Asking the kernel for port 0 and closing the probe
is racy: the kernel hands the same port to the next probe or to any outgoing connection
(both come from the ephemeral range), and with dozens of daemons started together one
of them then fails to bind. These ports come from below the ephemeral range, which no
outgoing connection takes, and none is handed out twice in a run."""

from __future__ import annotations

import itertools
import os
import socket
import threading

# Linux's ephemeral range starts at 32768 by default; registered services sit low.
FIRST, LAST = 20000, 32000
# Spread runs that share the machine (a second checkout's suite) over the range.
_start = FIRST + (os.getpid() * 97) % (LAST - FIRST)
_candidates = itertools.chain(range(_start, LAST), range(FIRST, _start))
_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now and no other test of this run got."""
    with _lock:
        for port in _candidates:
            if _bindable(port):
                return port
    raise RuntimeError(f"no free port left between {FIRST} and {LAST}")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
