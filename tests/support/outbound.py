"""The outbound rules tests use: the product's own checked clients, allowing the stand-ins on 127.0.0.1."""

from __future__ import annotations

import httpx

from shared.http.outbound import OutboundPolicy, SafeHttp

LOCAL_POLICY = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1", "localhost"}), timeout_seconds=10.0)


def local_http(*, system: str = "Microsoft Entra ID", transport: httpx.BaseTransport | None = None) -> SafeHttp:
    """A ``SafeHttp`` that may reach the local stand-ins (or answers from ``transport``, e.g. a MockTransport)."""
    return SafeHttp(LOCAL_POLICY, system=system, transport=transport)
