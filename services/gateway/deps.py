"""FastAPI dependencies: the app's settings and peer stubs live on ``app.state``."""

from __future__ import annotations

from fastapi import Request

from services.gateway.config import GatewaySettings
from services.gateway.peers import Peers


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers
