"""`masterx up`: brings up every service healthy, prints where they are, leaves nothing on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from masterx_runtime.launcher import SERVICES


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_masterx_up_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URL")}
    env["BENCHMARK_SCHEDULE_HOURS"] = "0"
    env["BENCHMARK_CALIBRATION"] = "0"  # no calibration run of the local model during the test
    masterx = Path(sys.executable).parent / "masterx"
    proc = subprocess.Popen(
        [str(masterx), "up", "--state-dir", str(tmp_path / "state")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(out)
        assert "MasterX is up" in text, text
        ports = {
            m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(?:grpc |http://)?[\w.:/]*?:(\d+)", text, re.M)
        }
        for spec in SERVICES:
            assert spec.name in ports, text
            assert _listening(ports[spec.name])
        assert {"redis", "mongodb"} <= set(ports)
        grpcurl = Path(sys.executable).parent / "grpcurl"
        for spec in SERVICES:
            if spec.grpc_service:
                listed = subprocess.run(
                    [str(grpcurl), "-plaintext", f"127.0.0.1:{ports[spec.name]}", "list"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                ).stdout.split()
                assert spec.grpc_service in listed
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "nothing left running" in rest
        for name, port in ports.items():
            assert not _listening(port), f"{name} still listening on {port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_supervise_restarts_a_killed_store_with_backoff(tmp_path: Path) -> None:
    from masterx_runtime.launcher import RESTART_FIRST_S, LocalSystem

    env = {"REDIS_URL": "", "MONGO_URL": "mongodb://127.0.0.1:1"}  # only Redis is ours to supervise
    system = LocalSystem(state_dir=tmp_path / "state", fixed_ports=False, env=env, services=())
    system.start()
    try:
        port = system.ports["redis"]
        os.killpg(system.children["redis"].proc.pid, signal.SIGKILL)
        system.children["redis"].proc.wait(5)
        events = system.supervise()
        assert events and events[0].startswith("redis exited") and "restarting in 0.5s" in events[0]
        assert system.supervise() == []  # backoff not over yet
        time.sleep(RESTART_FIRST_S + 0.1)
        events = system.supervise()
        assert events and events[0].startswith("redis restarted (restart #1")
        assert _listening(port) and system.restarts == {"redis": 1}
        assert system.restart_delay("redis") == 2 * RESTART_FIRST_S  # the next restart waits longer
    finally:
        system.stop()
