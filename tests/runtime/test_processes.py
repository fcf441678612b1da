"""Every service as a real process: starts, reports health, lists itself, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx_runtime.launcher import SERVICES
from masterx_runtime.testing.servers import free_port

GRPC_SERVICES = [s for s in SERVICES if s.grpc_service]


def _health(port: int, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        try:
            resp = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


@pytest.mark.parametrize("spec", GRPC_SERVICES, ids=[s.name for s in GRPC_SERVICES])
def test_service_process_serves_health_and_reflection_and_stops_on_sigterm(
    spec: object, redis_url: str, mongo_url: str, mongo_db_name: str, tmp_path: object
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MASTERX_GRPC_PORT": str(port),
        "MASTERX_METRICS_PORT": "-1",
        "MASTERX_SHUTDOWN_GRACE_SECONDS": "2",
        "REDIS_URL": redis_url,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db_name,
        "BENCHMARK_SCHEDULE_HOURS": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{spec.name}"],  # type: ignore[attr-defined]
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while _health(port, spec.grpc_service) != "SERVING":  # type: ignore[attr-defined]
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "service never became SERVING"
            time.sleep(0.1)
        assert _health(port, "") == "SERVING"
        listed = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "grpcurl"), "-plaintext", f"127.0.0.1:{port}", "list"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert spec.grpc_service in listed.stdout.split()  # type: ignore[attr-defined]
        assert "grpc.health.v1.Health" in listed.stdout.split()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_config_exits_2_with_every_problem_listed() -> None:
    env = {**os.environ, "MASTERX_GRPC_PORT": "not-a-port", "MASTERX_LOG_LEVEL": "LOUD"}
    result = subprocess.run(
        [sys.executable, "-m", "services.router"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MASTERX_GRPC_PORT='not-a-port': expected an integer" in result.stderr
    assert "MASTERX_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR" in result.stderr
    assert "Traceback" not in result.stderr
