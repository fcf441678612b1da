"""Scripted step generators and completers for engine tests (the e2e tests use the real router)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from services.reasoning.mcts.engine import ResultEvent, Search, SearchResult, StepEvent
from services.reasoning.mcts.generator import CallUsage, Completion, GeneratedStep, GenerationError, StepRequest


class ScriptedGenerator:
    """Answers with ``script(request)``; optional latency (seeded jitter), failures and bookkeeping."""

    def __init__(
        self,
        script: Callable[[StepRequest], str],
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        jitter_seed: int = 0,
        output_tokens: int = 10,
        cost: float = 0.0,
        fail: Callable[[StepRequest], bool] | None = None,
    ) -> None:
        self.script = script
        self.latency = latency
        self.jitter = jitter
        self.rng = random.Random(jitter_seed)
        self.output_tokens = output_tokens
        self.cost = cost
        self.fail = fail
        self.requests: list[StepRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0
        self.completed = 0
        self.started = asyncio.Semaphore(0)  # released once per call, so tests can wait for calls

    async def generate(self, request: StepRequest) -> GeneratedStep:
        self.requests.append(request)
        self.started.release()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency + self.rng.random() * self.jitter
            if delay:
                await asyncio.sleep(delay)
            if self.fail is not None and self.fail(request):
                raise GenerationError("scripted failure", RuntimeError("provider down"))
            self.completed += 1
            text = self.script(request)
            return GeneratedStep(
                text, CallUsage(20, min(self.output_tokens, request.max_tokens), self.cost, "scripted", "m")
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


class ScriptedCompleter:
    """A Completer answering from ``script(messages, purpose)``."""

    def __init__(self, script: Callable[[list[tuple[str, str]], str], str], *, output_tokens: int = 2) -> None:
        self.script = script
        self.output_tokens = output_tokens
        self.calls: list[tuple[str, list[tuple[str, str]], int]] = []

    async def complete(
        self,
        messages: list[tuple[str, str]],
        *,
        purpose: str,
        max_tokens: int,
        deadline: float,
        temperature: float | None = None,
    ) -> Completion:
        self.calls.append((purpose, messages, max_tokens))
        return Completion(self.script(messages, purpose), CallUsage(30, self.output_tokens, 0.0001, "judge", "j"))


async def run(search: Search) -> tuple[list[StepEvent], SearchResult]:
    """Run ``search`` to its end: the step events, then the result."""
    steps: list[StepEvent] = []
    async for event in search.run():
        if isinstance(event, ResultEvent):
            return steps, event.result
        steps.append(event)
    raise AssertionError("no result event")
