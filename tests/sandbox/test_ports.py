"""Ports for the sandbox's servers come from below the ephemeral range, where clients never land."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sandbox import azurite, ports
from sandbox.ports import can_bind, ephemeral_start, free_ports
from sandbox.server import free_port


def test_free_ports_are_consecutive_bindable_and_below_the_ephemeral_range() -> None:
    for _ in range(20):
        base = free_ports(3)
        assert base + 2 < ephemeral_start()
        assert all(can_bind(base + i) for i in range(3))
    assert free_port() < ephemeral_start()


def test_a_port_in_use_is_not_free() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        assert not can_bind(held.getsockname()[1])


@pytest.mark.azurite
def test_azurite_that_cannot_start_says_why() -> None:
    base = azurite.free_port_base()
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 1))
        held.listen()
        with pytest.raises(RuntimeError, match=rf"EADDRINUSE.*{base + 1}"):
            azurite.start(base)


def test_a_port_handed_out_is_not_handed_out_again_while_reserved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A port picked but not yet bound (its URL goes into settings first) is never given to another process."""
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path)  # this test's reservations only
    first = free_ports(2)
    # The same base, then one overlapping it from below (its own first port must not stay reserved), then any.
    candidates = iter([first, first - 1])
    choose = ports._random.randrange
    monkeypatch.setattr(ports._random, "randrange", lambda low, high: next(candidates, None) or choose(low, high))
    second = free_ports(2)
    assert {second, second + 1}.isdisjoint({first, first + 1})
    assert not (tmp_path / str(first - 1)).exists()
    assert all((tmp_path / str(p)).exists() for p in (first, first + 1, second, second + 1))


def test_an_old_reservation_is_forgotten(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path)
    port = free_ports(1)
    path = ports.RESERVATIONS / str(port)
    old = path.stat().st_mtime - ports.RESERVATION_SECONDS - 1
    os.utime(path, (old, old))
    monkeypatch.setattr(ports._random, "randrange", lambda low, high: port)
    assert free_ports(1) == port
