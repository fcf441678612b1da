"""FastAPI dependencies: the app's settings and peer stubs live on ``app.state``.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
a thread hand-off per request for a dictionary lookup.
"""

from __future__ import annotations

from fastapi import Request

from services.gateway.config import GatewaySettings
from services.gateway.peers import Peers


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def get_peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers
