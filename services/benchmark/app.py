"""Benchmark service application: registers the servicer and owns its lifecycle."""

from __future__ import annotations

import grpc

from masterx.benchmark.v1 import benchmark_pb2_grpc
from masterx_runtime.server import ServiceApp


class BenchmarkServicer(benchmark_pb2_grpc.BenchmarkServiceServicer):
    """Not built yet: every RPC answers UNIMPLEMENTED (see README, service status)."""


class BenchmarkApp(ServiceApp):
    name = "benchmark"
    service_names = ("masterx.benchmark.v1.BenchmarkService",)
    default_grpc_port = 50054
    default_metrics_port = 9104

    def register(self, server: grpc.aio.Server) -> None:
        benchmark_pb2_grpc.add_BenchmarkServiceServicer_to_server(BenchmarkServicer(), server)
