"""The sandbox Entra ID and Graph wired to each other as the real cloud is: Graph trusts Entra's keys.

The connector asks for ``{GRAPH_BASE_URL}/.default``; in the sandbox that base is a loopback URL,
so the sandbox Entra registers Graph under that identifier too (with the connector's application
permissions), and the sandbox Graph accepts Entra's signing keys and issuers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from sandbox.entra import RunningEntra, connector_app, start_entra
from sandbox.entra.config import CONNECTOR_APPLICATION_PERMISSIONS, GRAPH, GRAPH_RESOURCE, Resource
from sandbox.graph import GraphConfig, GraphSandbox
from sandbox.server import ServerThread, free_port
from sandbox.tls import TlsFiles


@dataclass
class EntraAndGraph:
    entra: RunningEntra
    graph: GraphSandbox
    graph_url: str

    @property
    def authority_host(self) -> str:
        return self.entra.issuer_host


@contextlib.contextmanager
def entra_and_graph(tls: TlsFiles, *, redirect_uris: tuple[str, ...] = ()) -> Iterator[EntraAndGraph]:
    graph_port = free_port()
    graph_url = f"http://127.0.0.1:{graph_port}"
    app = connector_app()
    permissions = {**CONNECTOR_APPLICATION_PERMISSIONS, graph_url: CONNECTOR_APPLICATION_PERMISSIONS[GRAPH_RESOURCE]}
    app = dataclasses.replace(app, application_permissions=permissions, redirect_uris=app.redirect_uris + redirect_uris)
    loopback_graph = Resource(graph_url, GRAPH.app_id, "Microsoft Graph (sandbox)", access_token_version=1)
    with start_entra(tls, apps=(app,), resources=(GRAPH, loopback_graph)) as entra:
        config = GraphConfig(
            base_url=graph_url,
            jwks=entra.issuer.jwks,
            sign_validation_token=entra.issuer.sign,
            entra_host=entra.issuer_host,
        )
        graph = GraphSandbox(config)
        try:
            with ServerThread(graph.app, port=graph_port):
                yield EntraAndGraph(entra, graph, graph_url)
        finally:
            graph.close()
