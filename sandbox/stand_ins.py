"""Wire the sandbox stand-ins together: Entra ID, Microsoft Graph/Teams and the EHR.

One function starts each, so the demo and the end-to-end tests build the same sandbox:

- Entra issues Graph app tokens whose ``aud`` is the sandbox Graph's base URL (the connector
  asks for ``{GRAPH_BASE_URL}/.default``, exactly as it asks for
  ``https://graph.microsoft.com/.default`` in Azure) and signs Graph's notification
  ``validationTokens`` with the keys it publishes at ``/common/discovery/v2.0/keys``.
- Graph checks those tokens against Entra's keys.
- The EHR registers the connector's provider, patient and writeback clients, whose key set
  is the connector's own ``/api/.well-known/jwks.json``.

Each returns the settings the connector needs to talk to it (only URLs and ids differ from Azure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.ehr.__main__ import demo_clients
from sandbox.ehr.app import EhrSandbox
from sandbox.ehr.config import EhrConfig
from sandbox.entra.config import (
    CONNECTOR_APP_ROLES,
    DEFAULT_CONNECTOR_LOGOUT_URIS,
    DEFAULT_CONNECTOR_REDIRECT_URIS,
    GRAPH,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    AppRegistration,
    Resource,
)
from sandbox.entra.run import RunningEntra, start_entra
from sandbox.entra.signing import TokenIssuer
from sandbox.graph import GraphConfig, GraphSandbox
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO, FABRIKAM
from sandbox.server import ServerThread, free_port
from sandbox.tls import ensure_tls, trust_env

GRAPH_APPLICATION_ROLES = ("OnlineMeetings.ReadWrite.All", "User.Read.All")


@dataclass
class RunningStandIns:
    """The three stand-ins and the connector settings that point at them."""

    entra: RunningEntra
    graph: GraphSandbox
    graph_server: ServerThread
    ehr: EhrSandbox
    ehr_server: ServerThread
    settings: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.ehr_server.stop()
        self.graph_server.stop()
        self.graph.close()
        self.entra.stop()


def connector_registration(graph_url: str, redirect_uris: tuple[str, ...]) -> AppRegistration:
    """The connector's Entra app, granted Graph's application permissions on the sandbox Graph too."""
    return AppRegistration(
        client_id=CONNECTOR_CLIENT_ID,
        display_name="Teams EHR Connector (sandbox)",
        home_tenant_id=CONTOSO.id,
        secrets=(CONNECTOR_CLIENT_SECRET,),
        redirect_uris=redirect_uris,
        multi_tenant=True,
        tenants=(CONTOSO.id, FABRIKAM.id),
        application_permissions={GRAPH_RESOURCE: GRAPH_APPLICATION_ROLES, graph_url: GRAPH_APPLICATION_ROLES},
        app_roles=CONNECTOR_APP_ROLES,
    )


def start_stand_ins(
    state_dir: Path,
    *,
    connector_url: str = "http://localhost:7071",
    entra_https_port: int = 0,
    entra_http_port: int = 0,
    graph_port: int = 0,
    ehr_port: int = 0,
    persist: bool = False,
    graph_options: dict[str, Any] | None = None,
    ehr_options: dict[str, Any] | None = None,
) -> RunningStandIns:
    """Start Entra, Graph and the EHR on 127.0.0.1 (free ports unless given) and return their settings."""
    tls = ensure_tls(state_dir / "tls")
    graph_port = graph_port or free_port()
    ehr_port = ehr_port or free_port()
    graph_url = f"http://127.0.0.1:{graph_port}"
    issuer = TokenIssuer.load_or_create(state_dir / "entra" / "token-signing.pem") if persist else None
    redirects = tuple(
        {*DEFAULT_CONNECTOR_REDIRECT_URIS, *DEFAULT_CONNECTOR_LOGOUT_URIS}
        | {f"{connector_url}/api/{path}/signin/callback" for path in ("portal", "launch")}
        | {f"{connector_url}/api/portal"}
    )
    entra = start_entra(
        tls,
        https_port=entra_https_port,
        http_port=entra_http_port,
        issuer=issuer,
        apps=(connector_registration(graph_url, redirects),),
        resources=(GRAPH, Resource(graph_url, GRAPH_APP_ID, "Microsoft Graph (sandbox)", access_token_version=1)),
    ).start()
    try:
        signer = entra.issuer
        graph = GraphSandbox(
            GraphConfig(
                base_url=graph_url,
                jwks=signer.jwks,
                sign_validation_token=signer.sign,
                entra_host=entra.issuer_host,
                **(graph_options or {}),
            )
        )
        graph_server = ServerThread(graph.app, port=graph_port).start()
        ehr = EhrSandbox(
            EhrConfig(
                base_url=f"http://127.0.0.1:{ehr_port}",
                clients=demo_clients(connector_url),
                state_file=(state_dir / "ehr.json") if persist else None,
                **(ehr_options or {}),
            )
        )
        ehr_server = ServerThread(ehr.app, port=ehr_port).start()
    except BaseException:
        entra.stop()
        raise
    settings = {
        "ENTRA_AUTHORITY_HOST": entra.issuer_host,
        "GRAPH_BASE_URL": graph_url,
        **trust_env(tls),
    }
    return RunningStandIns(entra, graph, graph_server, ehr, ehr_server, settings)
