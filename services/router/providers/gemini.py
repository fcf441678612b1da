"""Google Gemini ``generateContent`` / ``streamGenerateContent?alt=sse`` (key in a header, never the URL)."""

from __future__ import annotations

from typing import Any

from services.router.providers.base import ChatRequest, Usage, error_for_status, estimate_input_tokens, estimate_tokens
from services.router.providers.http import HttpProvider, SseEvent, StreamParser

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}


def _text(candidate: dict[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or []
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


class GeminiProvider(HttpProvider):
    def _url(self, stream: bool) -> str:
        base = self.spec.base_url.rstrip("/")
        if stream:
            return f"{base}/models/{self.spec.model}:streamGenerateContent?alt=sse"
        return f"{base}/models/{self.spec.model}:generateContent"

    def _auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key} if self._api_key else {}

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]}
            for m in request.conversation
        ]
        config: dict[str, Any] = {"maxOutputTokens": self.max_tokens_for(request)}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.stop:
            config["stopSequences"] = list(request.stop)
        body: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if request.system:
            body["systemInstruction"] = {"parts": [{"text": request.system}]}
        return body

    def _error_message(self, data: Any) -> str:
        if isinstance(data, list) and data:
            data = data[0]
        return super()._error_message(data)

    def _parse_full(self, data: Any, request: ChatRequest) -> tuple[str, Usage, str, str]:
        candidate = (data.get("candidates") or [{}])[0]
        text = _text(candidate)
        meta = data.get("usageMetadata") or {}
        if "promptTokenCount" in meta:
            tokens = Usage(int(meta["promptTokenCount"]), int(meta.get("candidatesTokenCount", 0)))
        else:
            tokens = Usage(estimate_input_tokens(request), estimate_tokens(text), estimated=True)
        finish = _FINISH.get(candidate.get("finishReason", "STOP"), str(candidate.get("finishReason", "")).lower())
        return text, tokens, finish, str(data.get("modelVersion") or "")

    def _stream_parser(self, request: ChatRequest) -> StreamParser:
        return _GeminiStreamParser(self.name, request)


class _GeminiStreamParser(StreamParser):
    """Gemini has no end event: a chunk carrying ``finishReason`` ends the answer."""

    def feed(self, event: SseEvent) -> list[Any]:
        data = self.load(event)
        if "error" in data:
            err = data["error"]
            raise error_for_status(self.provider, int(err.get("code", 500)), f"stream error: {err.get('message', '')}")
        self.model = data.get("modelVersion") or self.model
        meta = data.get("usageMetadata") or {}
        if "promptTokenCount" in meta:
            self.input_tokens = int(meta["promptTokenCount"])
            self.output_tokens = int(meta.get("candidatesTokenCount", 0))
        out: list[Any] = []
        for candidate in data.get("candidates") or ():
            out += self.delta(_text(candidate))
            reason = candidate.get("finishReason")
            if reason:
                self.finish_reason = _FINISH.get(reason, reason.lower())
                self.finished = True
        return out
