"""`masterx up` under SIGKILL / SIGTERM of its children: restarted with backoff, used again quickly.

Targets (issue 14): chats served again within 2 s of a restarted router being SERVING; a benchmark
outage leaves chat and the gateway's readiness untouched; a killed store is restarted too; only
SIGTERM / Ctrl-C of ``masterx up`` itself stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from masterx_runtime.testing.fake_llm import FakeLLMServer
from tests.faults.harness import providers, system_env, wait_serving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


class Up:
    """``masterx up --any-ports`` as a child process with its output collected."""

    def __init__(self, state: Path, env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL")} | env
        self.state = state
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "masterx"), "up", "--any-ports", "--state-dir", str(state)],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text, re.M):
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in masterx up output:\n{self.text[-4000:]}")

    def ports(self) -> dict[str, int]:
        return {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\w+)\s+(?:grpc |http://)?[\w.:/]*?:(\d+)", self.text, re.M)
        }

    def pid(self, name: str) -> int:
        return int(json.loads((self.state / "pids.json").read_text())[name])

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.pid(name), sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode


def _chat(client: httpx.Client) -> int:
    try:
        return client.post("/api/v1/chat", json={"message": "What is 2 + 2?"}, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def test_masterx_up_restarts_killed_children(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    up = Up(tmp_path / "state", system_env(providers(fake_llm)))
    try:
        up.wait_for(r"^Press Ctrl-C", 200)
        ports = up.ports()
        gw = httpx.Client(base_url=f"http://127.0.0.1:{ports['gateway']}")
        assert _chat(gw) == 200
        assert gw.get("/readyz").status_code == 200

        # SIGKILL the router: restarted; chats served again within 2 s of it being SERVING.
        old = up.pid("router")
        up.signal("router", signal.SIGKILL)
        up.wait_for(r"^router restarted", 30)
        assert up.pid("router") != old
        to_serving = asyncio.run(wait_serving(f"127.0.0.1:{ports['router']}", "masterx.router.v1.RouterService", 60))
        serving_at = time.monotonic()
        codes = []
        while (code := _chat(gw)) != 200 and time.monotonic() - serving_at < 10:
            codes.append(code)
            time.sleep(0.05)
        chat_again_s = time.monotonic() - serving_at
        print(
            f"\n=== fault report: router SIGKILL under masterx up\n  restart to SERVING {to_serving:.2f}s; "
            f"first chat ok {chat_again_s:.2f}s after SERVING; failed tries meanwhile {codes}"
        )
        assert code == 200 and chat_again_s <= 2.0

        # SIGTERM the benchmark: chat and the gateway's readiness are untouched while it is away.
        up.signal("benchmark", signal.SIGTERM)
        ready_codes, chat_codes, degraded = set(), set(), set()
        until = time.monotonic() + 4
        while time.monotonic() < until:
            r = gw.get("/readyz")
            ready_codes.add(r.status_code)
            degraded.update(r.json().get("degraded", []))
            chat_codes.add(_chat(gw))
        up.wait_for(r"^benchmark restarted", 30)
        print(
            f"  benchmark SIGTERM: /readyz codes {sorted(ready_codes)} degraded seen {sorted(degraded)}; "
            f"chat codes {sorted(chat_codes)}"
        )
        assert ready_codes == {200} and chat_codes == {200}
        assert "benchmark" in degraded

        # SIGKILL every other child, stores included: each is restarted, and chat works again after.
        for name in ("mongodb", "redis", "emotion", "reasoning", "gateway"):
            up.signal(name, signal.SIGKILL)
            up.wait_for(rf"^{name} restarted", 60)
        deadline = time.monotonic() + 20
        while _chat(gw) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _chat(gw) == 200
        print("  restarts: " + "; ".join(line.split(" (")[0].strip() for line in up.lines if " restarted " in line))
        gw.close()
    finally:
        code = up.stop()
    assert code == 0, up.text[-3000:]
    assert "stopped; nothing left running." in up.text


def test_services_wait_for_mongodb_at_start_instead_of_exiting(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    """Router and benchmark started before MongoDB: NOT_SERVING with the reason, SERVING once it is up,
    then a clean SIGTERM exit (no "Event loop is closed")."""
    from masterx_runtime.testing import servers

    redis = servers.start_redis()
    mongo_port = servers.reserved_port()  # started last: a port the kernel does not hand out meanwhile
    env = {
        **os.environ,
        **system_env(providers(fake_llm)),
        "REDIS_URL": redis.url,
        "MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}",
        "MASTERX_DATA_DIR": str(tmp_path / "data"),
    }
    procs: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
    mongo = None
    try:
        ports = iter(servers.free_ports(4))
        for name in ("router", "benchmark"):
            port, metrics = next(ports), next(ports)
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env={**env, "MASTERX_GRPC_PORT": str(port), "MASTERX_METRICS_PORT": str(metrics)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs[name] = (proc, port, metrics)
        reasons = {}
        for name, (proc, _, metrics) in procs.items():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
                try:
                    body = httpx.get(f"http://127.0.0.1:{metrics}/health", timeout=1).json()
                except (httpx.HTTPError, ValueError):
                    body = {}
                if "waiting for mongodb" in body.get("reason", ""):
                    reasons[name] = body["reason"]
                    break
                time.sleep(0.2)
        time.sleep(2)  # a few failed attempts later they are still up and waiting
        assert all(p.poll() is None for p, _, _ in procs.values())
        mongo = servers.start_mongo(mongo_port)
        waited = {name: asyncio.run(wait_serving(f"127.0.0.1:{port}", "", 30)) for name, (_, port, _) in procs.items()}
        print(f"\n=== fault report: services started before MongoDB\n  reasons {reasons}\n  SERVING after {waited}")
        assert reasons == {n: f"{n} is starting: waiting for mongodb" for n in procs}
        for name, (proc, _, _) in procs.items():
            os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(30) == 0
            log_text = (tmp_path / f"{name}.log").read_text()
            assert "Event loop is closed" not in log_text and "Traceback" not in log_text, log_text[-3000:]
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if mongo is not None:
            mongo.stop()
        redis.stop()
