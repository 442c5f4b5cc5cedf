"""Sandbox Microsoft Graph + Teams: onlineMeetings createOrGet/PATCH, meetingCallEvents subscriptions with
rich (encrypted) change notifications, and a Teams meeting page with a lobby.

    from sandbox.graph import GraphConfig, GraphSandbox, create_app
"""

from __future__ import annotations

from starlette.applications import Starlette

from sandbox.graph.config import GraphConfig
from sandbox.graph.notifications import GRAPH_NOTIFICATION_PUBLISHER
from sandbox.graph.sandbox import GraphSandbox

__all__ = ["GRAPH_NOTIFICATION_PUBLISHER", "GraphConfig", "GraphSandbox", "create_app"]


def create_app(config: GraphConfig) -> Starlette:
    """The Starlette app; its ``GraphSandbox`` (in-process API) is ``app.state.graph``."""
    return GraphSandbox(config).app
