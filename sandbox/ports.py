"""Free TCP ports on 127.0.0.1 for the sandbox's servers, chosen outside the ephemeral range.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same range every
outgoing connection takes its local port from. Between finding such a port free and a server
binding it, a client connection (to Azurite, say, hundreds per second in the tests) can take it,
and the server then fails with EADDRINUSE. Ports below the ephemeral range are never handed to
clients, so a port found free there stays free unless another of our own processes picks it too:
we pick at random from a wide window so that is rare, and callers that start servers retry.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

WINDOW = 12000  # ports below the ephemeral range to choose from
LOWEST = 10100  # above Azurite's (10000-10002) and the demo's fixed ports' usual neighbours
_LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 on Linux by default)."""
    try:
        return int(_LINUX_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive free ports below the ephemeral range (best effort)."""
    high = ephemeral_start() - count
    low = max(LOWEST, high - WINDOW)
    if high <= low:  # an unusual kernel setting leaves no room below the range: ask the kernel
        return _kernel_port(count)
    for _ in range(200):
        base = _random.randrange(low, high)
        if all(can_bind(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


def _kernel_port(count: int) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if all(can_bind(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")
