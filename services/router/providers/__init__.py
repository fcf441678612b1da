"""LLM provider adapters (OpenAI-compatible, Anthropic, Gemini, local llama.cpp) and discovery."""

from services.router.providers.base import (
    AuthError,
    BadRequest,
    ChatRequest,
    Completion,
    Message,
    Provider,
    ProviderError,
    ProviderSpec,
    ProviderTimeout,
    RateLimited,
    ServerError,
    StreamBroken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
    Usage,
)

__all__ = [
    "AuthError",
    "BadRequest",
    "ChatRequest",
    "Completion",
    "Message",
    "Provider",
    "ProviderError",
    "ProviderSpec",
    "ProviderTimeout",
    "RateLimited",
    "ServerError",
    "StreamBroken",
    "StreamDelta",
    "StreamEnd",
    "StreamEvent",
    "Usage",
]
