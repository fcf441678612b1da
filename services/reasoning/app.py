"""Reasoning service application: registers the servicer and owns its lifecycle."""

from __future__ import annotations

import grpc

from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx_runtime.server import ServiceApp


class ReasoningServicer(reasoning_pb2_grpc.ReasoningServiceServicer):
    """Not built yet: every RPC answers UNIMPLEMENTED (see README, service status)."""


class ReasoningApp(ServiceApp):
    name = "reasoning"
    service_names = ("masterx.reasoning.v1.ReasoningService",)
    default_grpc_port = 50052
    default_metrics_port = 9102

    def register(self, server: grpc.aio.Server) -> None:
        reasoning_pb2_grpc.add_ReasoningServiceServicer_to_server(ReasoningServicer(), server)
