"""OpenAI-compatible chat completions (OpenAI, Groq, vLLM, Ollama, any base URL)."""

from __future__ import annotations

from typing import Any

from services.router.providers.base import ChatRequest, ServerError, Usage, estimate_input_tokens, estimate_tokens
from services.router.providers.http import HttpProvider, SseEvent, StreamParser


class OpenAIProvider(HttpProvider):
    """POST ``{base_url}/chat/completions`` with a Bearer key; streams with usage at the end."""

    def _url(self, stream: bool) -> str:
        return self.spec.base_url.rstrip("/") + "/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            str(self.spec.options.get("max_tokens_field", "max_tokens")): self.max_tokens_for(request),
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _parse_full(self, data: Any, request: ChatRequest) -> tuple[str, Usage, str, str]:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            tokens = Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
        else:
            tokens = Usage(estimate_input_tokens(request), estimate_tokens(text), estimated=True)
        return text, tokens, choice.get("finish_reason") or "stop", str(data.get("model") or "")

    def _stream_parser(self, request: ChatRequest) -> StreamParser:
        return _OpenAIStreamParser(self.name, request)


class _OpenAIStreamParser(StreamParser):
    def feed(self, event: SseEvent) -> list[Any]:
        if event.data.strip() == "[DONE]":
            self.finished = True
            return []
        data = self.load(event)
        if isinstance(data, dict) and "error" in data:
            err = data["error"]
            raise ServerError(self.provider, f"error event: {err.get('message', '') if isinstance(err, dict) else err}")
        self.model = data.get("model") or self.model
        usage = data.get("usage")
        if usage:
            self.input_tokens = int(usage.get("prompt_tokens", 0))
            self.output_tokens = int(usage.get("completion_tokens", 0))
        out: list[Any] = []
        for choice in data.get("choices") or ():
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            out += self.delta((choice.get("delta") or {}).get("content") or "")
        return out
