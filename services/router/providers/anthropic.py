"""Anthropic Messages API (``POST {base_url}/v1/messages``) with its SSE event types."""

from __future__ import annotations

from typing import Any

from services.router.providers.base import (
    ChatRequest,
    Message,
    Usage,
    error_for_status,
    estimate_input_tokens,
    estimate_tokens,
)
from services.router.providers.http import HttpProvider, SseEvent, StreamParser

ANTHROPIC_VERSION = "2023-06-01"
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def alternate_roles(messages: list[Message]) -> list[dict[str, str]]:
    """Anthropic wants user/assistant turns alternating and starting with the user: merge runs."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + m.content
        else:
            out.append({"role": role, "content": m.content})
    if out and out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": "(conversation continues)"})
    return out


class AnthropicProvider(HttpProvider):
    def _url(self, stream: bool) -> str:
        return self.spec.base_url.rstrip("/") + "/v1/messages"

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": str(self.spec.options.get("anthropic_version", ANTHROPIC_VERSION))}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": self.max_tokens_for(request),
            "messages": alternate_roles(request.conversation),
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if stream:
            body["stream"] = True
        return body

    def _parse_full(self, data: Any, request: ChatRequest) -> tuple[str, Usage, str, str]:
        text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        usage = data.get("usage") or {}
        if "input_tokens" in usage and "output_tokens" in usage:
            tokens = Usage(int(usage["input_tokens"]), int(usage["output_tokens"]))
        else:
            tokens = Usage(estimate_input_tokens(request), estimate_tokens(text), estimated=True)
        finish = _STOP_REASONS.get(data.get("stop_reason") or "end_turn", str(data.get("stop_reason")))
        return text, tokens, finish, str(data.get("model") or "")

    def _stream_parser(self, request: ChatRequest) -> StreamParser:
        return _AnthropicStreamParser(self.name, request)


class _AnthropicStreamParser(StreamParser):
    def feed(self, event: SseEvent) -> list[Any]:
        data = self.load(event)
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            usage = message.get("usage") or {}
            if "input_tokens" in usage:
                self.input_tokens = int(usage["input_tokens"])
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self.delta(delta.get("text") or "")
        elif kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.finish_reason = _STOP_REASONS.get(reason, reason)
            usage = data.get("usage") or {}
            if "output_tokens" in usage:
                self.output_tokens = int(usage["output_tokens"])
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            err = data.get("error") or {}
            status = _ERROR_STATUS.get(err.get("type", ""), 500)
            raise error_for_status(self.provider, status, f"stream error: {err.get('message', '')}"[:300])
        return []
