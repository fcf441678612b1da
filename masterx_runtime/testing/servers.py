"""Start real Redis / MongoDB-wire servers as child processes on free loopback ports.

Used by the pytest fixtures, the benchmarks and ``masterx up``. Each server is a separate
process in its own process group, so stopping it never leaves anything behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def reserved_port(low: int = 20000) -> int:
    """A free port below the kernel's ephemeral range, for a server started much later.

    A port from ``free_port`` can be handed out again in the meantime (to another ``bind(0)`` or
    as the local end of an outgoing connection, e.g. a client retrying that very port); one below
    ``ip_local_port_range`` is never picked by the kernel, only by another caller of this.
    """
    import random

    try:
        top = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        top = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, max(low + 1, top))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class ManagedProcess:
    """A child server process; ``stop()`` terminates its whole process group."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path | None = None
    _cleanup_dir: bool = field(default=False, repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self._cleanup_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def redis_binary() -> str | None:
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def mongo_binary() -> str | None:
    """The MongoDB-wire server: SecantusDB's launcher from this environment, else mongod."""
    local = Path(sys.executable).parent / "secantusd-py"
    if local.exists():
        return str(local)
    return shutil.which("secantusd-py") or shutil.which("mongod")


def start_redis(port: int | None = None, *, datadir: Path | None = None, log: Path | None = None) -> ManagedProcess:
    binary = redis_binary()
    if binary is None:
        raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
    port = port or free_port()
    workdir = datadir or Path(tempfile.mkdtemp(prefix="masterx-redis-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--protected-mode", "yes"]
    if datadir is None:
        args += ["--save", "", "--appendonly", "no"]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    managed = ManagedProcess("redis", f"redis://127.0.0.1:{port}/0", proc, workdir, datadir is None)
    try:
        wait_for_port("127.0.0.1", port, 10, proc)
    except Exception:
        managed.stop()
        raise
    return managed


def start_mongo(port: int | None = None, *, datadir: Path | None = None, log: Path | None = None) -> ManagedProcess:
    binary = mongo_binary()
    if binary is None:
        raise FileNotFoundError("no MongoDB-wire server found (pip install secantusdb)")
    port = port or free_port()
    if binary.endswith("mongod"):
        workdir = datadir or Path(tempfile.mkdtemp(prefix="masterx-mongo-"))
        workdir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(workdir)]
    else:
        workdir = datadir or Path(tempfile.mkdtemp(prefix="masterx-secantus-"))
        workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(workdir),
            "--log-level",
            "WARNING",
        ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    managed = ManagedProcess("mongodb", f"mongodb://127.0.0.1:{port}", proc, workdir, datadir is None)
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
    except Exception:
        managed.stop()
        raise
    return managed


@contextlib.contextmanager
def running(managed: ManagedProcess) -> Iterator[ManagedProcess]:
    try:
        yield managed
    finally:
        managed.stop()


def offline_router_env(redis_url: str, mongo_url: str, mongo_db: str, redis_prefix: str = "") -> dict[str, str]:
    """Environment for a RouterApp on these stores with no local model, no providers from API keys
    and no benchmark scores (callers add ROUTER_PROVIDERS_JSON); ``redis_prefix`` when given."""
    env = {"REDIS_URL": redis_url}
    if redis_prefix:
        env["REDIS_KEY_PREFIX"] = redis_prefix
    return {
        **env,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db,
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "ROUTER_SCORES_ENABLED": "0",
    }
