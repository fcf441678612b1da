"""``python -m services.gateway``: serve the gateway with uvicorn until SIGTERM/SIGINT.

uvicorn's own proxy-header handling is off: it would trust X-Forwarded-For from 127.0.0.1 and
hand every local client a fresh rate-limit bucket per spoofed header. The gateway resolves
forwarded addresses itself, only from GATEWAY_TRUSTED_PROXIES (services/gateway/middleware.py).

On a signal uvicorn stops accepting connections, lets open requests (streams too) finish for
GATEWAY_SHUTDOWN_GRACE_SECONDS, then cancels what is left and runs the app's shutdown
(channels and Redis closed). A bad setting exits with code 2 and a readable message.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from masterx_runtime import gctuning, logs, tracing
from masterx_runtime.config import ConfigError, load
from masterx_runtime.settings import PeerSettings, ServerSettings
from masterx_runtime.stores.redis_store import RedisSettings
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.identity import settings_problems


class GatewayServer(uvicorn.Server):
    """uvicorn, but a signal-triggered graceful stop exits 0 (uvicorn re-raises the signal), and
    the garbage collector is set for a long-running process once the app has started
    (``MASTERX_GC_*``, :mod:`masterx_runtime.gctuning`)."""

    def __init__(self, config: uvicorn.Config, gc_threshold: int = 0, gc_freeze: bool = False) -> None:
        super().__init__(config)
        self.gc_threshold, self.gc_freeze = gc_threshold, gc_freeze

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            gctuning.apply(self.gc_threshold, self.gc_freeze)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn attaches an ANSI-coloured copy of some messages; keep it out of JSON logs."""
    record.__dict__.pop("color_message", None)
    return True


def uvicorn_config(app: object, cfg: GatewaySettings, **overrides: object) -> uvicorn.Config:
    """The uvicorn settings of the gateway (tests serve the app with the same ones)."""
    options: dict[str, object] = {
        "host": cfg.host,
        "port": cfg.port,
        "log_config": None,  # keep the runtime's JSON/text logging
        "access_log": False,  # the gateway logs its own access lines (with request ids)
        "timeout_graceful_shutdown": int(cfg.shutdown_grace_seconds) or None,
        "server_header": False,
        "lifespan": "on",
        # Never let uvicorn rewrite the client address from headers (see the module docstring).
        "proxy_headers": False,
        "forwarded_allow_ips": "",
        **overrides,
    }
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


def main() -> None:
    try:
        server_cfg = load(ServerSettings)
        cfg = load(GatewaySettings)
        peers = load(PeerSettings)
        redis_cfg = load(RedisSettings)
        if problems := settings_problems(cfg):
            raise ConfigError(problems)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(server_cfg.log_level, server_cfg.log_format, "gateway")
    try:
        tracing.setup("gateway")
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("uvicorn.error").addFilter(_drop_color_message)
    app = create_app(cfg, peers, redis_cfg)
    server = GatewayServer(uvicorn_config(app, cfg), server_cfg.gc_threshold, server_cfg.gc_freeze)
    try:
        server.run()
    except OSError as exc:
        print(f"gateway: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        tracing.shutdown()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
