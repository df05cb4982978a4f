"""An address that swallows every packet, like a broker behind a dead link or a firewall
that drops: connect() gets no answer at all (no RST, no ICMP). A veth pair whose other
end is in a network namespace of its own, where forwarding is off, and a route to the
address through it. Needs root (CAP_NET_ADMIN)."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def blackholes_available() -> bool:
    """Whether this machine lets the test make network namespaces."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _ip(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True)


@contextmanager
def blackhole_address() -> Iterator[str]:
    """An IPv4 address (in 198.18.0.0/15, set aside for tests) that never answers."""
    # Names and subnets of their own: other test runs may hold blackholes at the same time.
    tag = f"{os.getpid() % 100_000}{random.randrange(100)}"
    namespace, host_side, far_side = f"ocpp-bh-{tag}", f"bh{tag}a", f"bh{tag}b"
    subnet, quarter = random.randrange(256), random.randrange(64)
    near, far = f"198.18.{subnet}.{4 * quarter + 1}", f"198.18.{subnet}.{4 * quarter + 2}"
    target = f"198.19.{subnet}.{quarter + 1}"
    steps = [
        ("netns", "add", namespace),
        ("link", "add", host_side, "type", "veth", "peer", "name", far_side),
        ("link", "set", far_side, "netns", namespace),
        ("addr", "add", f"{near}/30", "dev", host_side),
        ("link", "set", host_side, "up"),
        ("-n", namespace, "addr", "add", f"{far}/30", "dev", far_side),
        ("-n", namespace, "link", "set", far_side, "up"),
        ("route", "add", f"{target}/32", "via", far),
    ]
    try:
        for step in steps:
            result = _ip(*step)
            if result.returncode != 0:
                raise RuntimeError(f"ip {' '.join(step)}: {result.stderr.strip()}")
        yield target
    finally:
        _ip("route", "del", f"{target}/32")
        _ip("link", "del", host_side)  # its peer goes with it
        _ip("netns", "del", namespace)
