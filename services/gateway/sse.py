"""Server-Sent Events framing."""

from __future__ import annotations

import json
from typing import Any

#: Headers that keep proxies from buffering an event stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str, data: Any) -> bytes:
    """One named event with a JSON payload."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def data_only(data: Any) -> bytes:
    """An unnamed ``data:`` line (the OpenAI streaming format); strings are sent as they are."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()
