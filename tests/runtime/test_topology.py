"""The one service table: apps, peer settings, the launcher and the gateway all read it."""

from __future__ import annotations

import pytest

from masterx_runtime import launcher, topology
from masterx_runtime.config import REGISTRY
from masterx_runtime.server import ServiceApp
from masterx_runtime.settings import PeerSettings
from services.benchmark.app import BenchmarkApp
from services.emotion.app import EmotionApp
from services.gateway.config import GatewaySettings
from services.gateway.peers import SERVICE_NAMES
from services.reasoning.app import ReasoningApp
from services.router.app import RouterApp

APPS: dict[str, type[ServiceApp]] = {
    "emotion": EmotionApp,
    "reasoning": ReasoningApp,
    "router": RouterApp,
    "benchmark": BenchmarkApp,
}


@pytest.mark.parametrize("row", topology.GRPC_SERVICES, ids=[s.name for s in topology.GRPC_SERVICES])
def test_every_app_listens_where_the_table_says(row: topology.ServiceSpec) -> None:
    app = APPS[row.name]
    assert app.name == row.name
    assert app.service_names == (row.grpc_service,)
    assert (app.default_grpc_port, app.default_metrics_port) == (row.port, row.metrics_port)


@pytest.mark.parametrize("row", topology.GRPC_SERVICES, ids=[s.name for s in topology.GRPC_SERVICES])
def test_peer_settings_read_the_address_variable_of_the_table(row: topology.ServiceSpec) -> None:
    assert REGISTRY[row.addr_env].default == row.default_addr
    assert PeerSettings().addr(row.name) == row.default_addr
    assert SERVICE_NAMES[row.name] == row.grpc_service


def test_launcher_and_gateway_use_the_same_table() -> None:
    assert launcher.SERVICES is topology.SERVICES
    assert topology.spec("gateway").port == GatewaySettings().port
    assert set(APPS) == {s.name for s in topology.GRPC_SERVICES}


def test_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: emotion, reasoning"):
        topology.spec("nope")
    with pytest.raises(KeyError):
        PeerSettings().addr("gateway")
