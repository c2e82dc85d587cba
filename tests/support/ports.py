"""Loopback ports for the servers the tests start (PostgreSQL, Redis, moto, Flower, alert receivers)."""

from __future__ import annotations

import random
import socket

#: How many ports below the kernel's ephemeral range are drawn from.
SPAN = 12_000


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now on 127.0.0.1, drawn below the kernel's ephemeral range. A port the kernel hands
    out (bind to port 0, close, give the number to a server) can meanwhile become any process's outgoing
    connection's local port, and the server then cannot bind it: on a busy machine, a test that fails
    at start-up for no reason of its own. The kernel never hands out ports below that range, so only
    another test drawing the same number at the same moment could take this one."""
    high = max(2048, _ephemeral_start())
    low = max(1024, high - SPAN)
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {low}-{high - 1}")
