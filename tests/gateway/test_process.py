"""``python -m services.gateway`` as a process: bad settings exit 2, SIGTERM exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from masterx_runtime.testing.servers import free_port, wait_for_port


def gateway_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "MASTERX_"))}
    closed = f"127.0.0.1:{free_port()}"
    env.update({f"{n}_ADDR": closed for n in ("EMOTION", "REASONING", "ROUTER", "BENCHMARK")})
    env.update({"GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "MASTERX_LOG_FORMAT": "json"}, **extra)
    return env


def test_bad_settings_exit_2_naming_every_variable_but_no_secret() -> None:
    env = gateway_env(GATEWAY_PORT="eighty", GATEWAY_MAX_BODY_BYTES="0", GATEWAY_ADMIN_API_KEYS="")
    env["GATEWAY_LOG_MESSAGE_TEXT"] = "perhaps"
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    for name in ("GATEWAY_PORT", "GATEWAY_MAX_BODY_BYTES", "GATEWAY_LOG_MESSAGE_TEXT"):
        assert name in done.stderr


def test_serves_then_stops_on_sigterm() -> None:
    port = free_port()
    env = gateway_env(GATEWAY_PORT=str(port), GATEWAY_ADMIN_API_KEYS="super-secret-key-value")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        admin = httpx.post(f"http://127.0.0.1:{port}/api/v1/admin/run-benchmarks", headers={"X-API-Key": "wrong-key"})
        assert admin.status_code == 401
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    logs = proc.stdout.read().decode()
    assert "gateway ready" in logs
    assert "super-secret-key-value" not in logs and "wrong-key" not in logs
