"""Free TCP ports on 127.0.0.1 for the sandbox's servers, chosen outside the ephemeral range.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same range every
outgoing connection takes its local port from. Between finding such a port free and a server
binding it, a client connection (to Azurite, say, hundreds per second in the tests) can take it,
and the server then fails with EADDRINUSE. Ports below the ephemeral range are never handed to
clients, so a port found free there stays free unless another of our own processes picks it too.
Callers often pick a port seconds before they bind it (its URL goes into settings first), so every
port handed out is also reserved across processes (a file created with O_EXCL in a shared folder,
forgotten after ``RESERVATION_SECONDS``): parallel test workers never pick the same one.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

WINDOW = 12000  # ports below the ephemeral range to choose from
LOWEST = 10100  # above Azurite's (10000-10002) and the demo's fixed ports' usual neighbours
_LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()
RESERVATIONS = Path(tempfile.gettempdir()) / "teams-ehr-connector-ports"
RESERVATION_SECONDS = 600.0  # longer than any caller waits between picking a port and binding it


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
        if all(can_bind(base + i) for i in range(count)) and _reserve(base, count):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


def _kernel_port(count: int) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if all(can_bind(base + i) for i in range(count)) and _reserve(base, count):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def _reserve(base: int, count: int) -> bool:
    """Reserve ``count`` ports from ``base`` for this process, unless another process holds one of them."""
    RESERVATIONS.mkdir(exist_ok=True)
    taken: list[Path] = []
    for port in range(base, base + count):
        path = RESERVATIONS / str(port)
        if not _create(path):
            for own in taken:
                own.unlink(missing_ok=True)
            return False
        taken.append(path)
    return True


def _create(path: Path) -> bool:
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < RESERVATION_SECONDS:
                    return False
                path.unlink()  # an old reservation: its holder bound the port long ago, or never will
            except FileNotFoundError:
                pass
            continue
        os.close(descriptor)
        return True
    return False
