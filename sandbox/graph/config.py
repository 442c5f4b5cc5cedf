"""Configuration of the sandbox Graph: who may call it and how it signs and delivers notifications.

The stand-in stays decoupled from the sandbox Entra ID: it only needs the JWKS that signs access
tokens, the issuers to accept, and a signer for the ``validationTokens`` carried by rich notifications
(in the real cloud those are signed with the keys published at ``…/common/discovery/v2.0/keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.seed import DIRECTORY, Directory

Jwks = Mapping[str, Any]

DEFAULT_ISSUER_TEMPLATES = ("{entra_host}/{tid}/v2.0", "https://sts.windows.net/{tid}/")


@dataclass(frozen=True)
class GraphConfig:
    """Everything ``create_app`` needs.

    ``base_url``             public root of this stand-in, e.g. ``http://127.0.0.1:7401``; joinWebUrls live on it
                             and it is the default accepted ``aud`` (the connector asks for ``{base}/.default``).
    ``jwks``                 the access-token signing keys: a JWKS dict or a callable returning one (called again
                             when a token names an unknown ``kid``).
    ``sign_validation_token`` signs the claims of a notification ``validationTokens`` entry, returns the JWT.
    ``entra_host``           authority host substituted into ``issuer_templates`` (``{entra_host}``, ``{tid}``).
    ``audiences``            accepted ``aud`` values; empty means ``base_url`` (with and without a trailing slash).
    ``handshake_timeout``    seconds a notification endpoint has to answer the validation request (Graph: 10).
    ``delivery_timeout``     seconds a notification endpoint has to answer a delivery (Graph: 3).
    ``delivery_retry_delays`` pauses before each retry of a failed delivery (Graph retries for up to 4 h).
    ``notification_delay``   simulated Graph latency before a notification is sent (Graph: < 10 s on average).
    ``expose_delivery_log``  serve ``GET /_sandbox/deliveries`` with every attempt and its timing.
    ``http_notification_hosts`` hosts whose notification URLs may use plain http (real Graph requires https).
    """

    base_url: str
    jwks: Jwks | Callable[[], Jwks]
    sign_validation_token: Callable[[dict[str, Any]], str]
    entra_host: str = "https://login.microsoftonline.com"
    issuer_templates: tuple[str, ...] = DEFAULT_ISSUER_TEMPLATES
    audiences: tuple[str, ...] = ()
    directory: Directory = DIRECTORY
    handshake_timeout: float = 10.0
    delivery_timeout: float = 3.0
    delivery_retry_delays: tuple[float, ...] = (1.0, 5.0, 15.0)
    notification_delay: float = 0.0
    validation_token_lifetime: int = 3600
    expose_delivery_log: bool = False
    http_notification_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/")

    def accepted_audiences(self) -> tuple[str, ...]:
        return self.audiences or (self.root, self.root + "/")

    def accepted_issuers(self, tenant_id: str) -> tuple[str, ...]:
        host = self.entra_host.rstrip("/")
        return tuple(t.format(entra_host=host, tid=tenant_id) for t in self.issuer_templates)
