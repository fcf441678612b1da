"""Provider-neutral request/response types, the provider interface, and the error classes.

Every adapter maps its wire format onto these, so the router's fallback logic only ever sees
one of six failure kinds (the ``outcome`` strings of ``router.proto``'s Attempt).
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """What the router asks a provider for."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def system(self) -> str:
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def conversation(self) -> list[Message]:
        return [m for m in self.messages if m.role != "system"]


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """A finished answer."""

    text: str
    usage: Usage
    finish_reason: str
    model: str
    latency_ms: float = 0.0
    ttft_ms: float = 0.0


@dataclass(frozen=True)
class StreamDelta:
    """A piece of answer text."""

    text: str


@dataclass(frozen=True)
class StreamEnd:
    """The end of a stream: usage (reported or estimated) and why it stopped."""

    usage: Usage
    finish_reason: str
    model: str


StreamEvent = StreamDelta | StreamEnd


# --------------------------------------------------------------------------- errors


class ProviderError(Exception):
    """A provider call failed. ``outcome`` is the Attempt outcome string; messages carry no secrets."""

    outcome = "server_error"
    #: Worth trying the same provider again after a backoff.
    retryable = False
    #: Counts against the provider's circuit breaker.
    counts_as_failure = True

    def __init__(self, provider: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.status = status
        self.retry_after = retry_after


class RateLimited(ProviderError):
    outcome = "rate_limited"
    retryable = True


class AuthError(ProviderError):
    outcome = "auth"


class ProviderTimeout(ProviderError):
    outcome = "timeout"


class ServerError(ProviderError):
    outcome = "server_error"
    retryable = True


class BadRequest(ProviderError):
    """The request itself was refused (too long, bad parameter): not the provider's fault."""

    outcome = "bad_request"
    counts_as_failure = False


class StreamBroken(ProviderError):
    """The connection dropped or the stream ended without its end marker."""

    outcome = "stream_broken"
    retryable = True


def error_for_status(provider: str, status: int, message: str, retry_after: float | None = None) -> ProviderError:
    """Map an HTTP status onto the error classes."""
    if status == 429:
        return RateLimited(provider, message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(provider, message, status=status)
    if status in (408, 504):
        return ProviderTimeout(provider, message, status=status)
    if status >= 500 or status == 529:
        return ServerError(provider, message, status=status)
    return BadRequest(provider, message, status=status)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret (and a long prefix of it) from ``text`` before it is logged or returned."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
            if len(secret) >= 12:
                text = text.replace(secret[:8], "<redacted>")
    return text


# --------------------------------------------------------------------------- specs and the interface


@dataclass(frozen=True)
class ProviderSpec:
    """One configured provider (from the providers file, env keys, or the local default)."""

    name: str
    kind: str  # "openai" | "anthropic" | "gemini" | "local"
    model: str
    base_url: str = ""
    api_key_env: str = ""
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    context_window: int = 8192
    max_output_tokens: int = 1024
    rpm: int = 0
    tpm: int = 0
    timeout_seconds: float | None = None
    daily_budget_usd: float | None = None
    quality: Mapping[str, float] = field(default_factory=dict)
    speed: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def cost_usd(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_price_per_mtok + usage.output_tokens * self.output_price_per_mtok
        ) / 1_000_000


def estimate_tokens(text: str) -> int:
    """A rough token count (words and punctuation) for providers that report no usage."""
    return len(_WORD_RE.findall(text))


def estimate_input_tokens(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) + 3 for m in request.messages)


class Provider(abc.ABC):
    """One LLM endpoint. Implementations must be safe to call concurrently."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @abc.abstractmethod
    async def complete(self, request: ChatRequest, timeout: float) -> Completion:
        """The whole answer, within ``timeout`` seconds (raises ProviderError subclasses)."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest, timeout: float) -> AsyncGenerator[StreamEvent, None]:
        """Deltas then exactly one StreamEnd; raises StreamBroken if the stream ends early."""

    async def start(self) -> None:  # noqa: B027 - optional
        """Prepare (e.g. load a model); called once before serving."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release connections or models."""

    def ready(self) -> bool:
        """True when the provider can take a call now (a local model may still be loading)."""
        return True

    def unavailable_reason(self) -> str:
        """Why the provider cannot serve at all ('' when it can, perhaps after loading)."""
        return ""

    async def wait_ready(self, timeout: float = 120.0) -> bool:
        """Wait until ``ready()`` (a local model loading); remote providers are ready at once."""
        return self.ready()

    def max_tokens_for(self, request: ChatRequest) -> int:
        """The request's max_tokens capped by the provider's limit."""
        limit = self.spec.max_output_tokens
        return min(request.max_tokens, limit) if request.max_tokens else limit
