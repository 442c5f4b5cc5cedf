"""Ports for the sandbox's servers come from below the ephemeral range, where clients never land."""

from __future__ import annotations

import socket

import pytest

from sandbox import azurite
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
