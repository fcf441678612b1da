"""Router service application: registers the servicer and owns its lifecycle."""

from __future__ import annotations

import grpc

from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.server import ServiceApp


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Not built yet: every RPC answers UNIMPLEMENTED (see README, service status)."""


class RouterApp(ServiceApp):
    name = "router"
    service_names = ("masterx.router.v1.RouterService",)
    default_grpc_port = 50053
    default_metrics_port = 9103

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(), server)
