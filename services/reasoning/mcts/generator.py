"""The small interface between the search and whatever writes reasoning steps.

In the service a :class:`StepGenerator` sends the step prompt through the router (the reasoning
service never calls a provider itself); tests and benchmarks plug in scripted generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.reasoning.mcts.prompts import StudentState, step_messages
from services.reasoning.mcts.strategies import Strategy


@dataclass(frozen=True, slots=True)
class CallUsage:
    """Tokens and money of one model call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str = ""
    model: str = ""
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class StepRequest:
    """Everything needed to write the next step below a node."""

    query: str
    previous: tuple[str, ...]  # the steps on the path so far, oldest first
    strategy: Strategy
    step_number: int  # 1-based depth of the step being written
    max_depth: int
    student: StudentState
    max_tokens: int  # output tokens this call may use
    variant: int  # >0 when a strategy repeats under one node (width > 6)
    deadline: float  # time.monotonic() by which the call must finish
    attempt: int = 0  # 0 = first expansion of the node, n = its n-th widening retry
    temperature: float | None = None  # sampling temperature (None = the generator's default)
    rejected: tuple[str, ...] = ()  # final answers already rejected below this node (widening)


@dataclass(frozen=True, slots=True)
class GeneratedStep:
    text: str
    usage: CallUsage
    prior: float = 0.0  # the generator's own prior for PUCT (0 = none)


class StepGenerator(Protocol):
    async def generate(self, request: StepRequest) -> GeneratedStep:
        """Write one step. Raise :class:`GenerationError` on failure; honour cancellation."""
        ...


class GenerationError(Exception):
    """A step (or judge) call failed; ``cause`` is the service error to report if nothing else worked."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: CallUsage


class Completer(Protocol):
    """One chat completion through the router (``purpose`` is "reasoning" or "judge")."""

    async def complete(
        self,
        messages: list[tuple[str, str]],
        *,
        purpose: str,
        max_tokens: int,
        deadline: float,
        temperature: float | None = None,
    ) -> Completion: ...


class CompleterStepGenerator:
    """The production generator: builds the step prompt and sends it through a :class:`Completer`."""

    def __init__(self, completer: Completer, *, temperature: float | None = None) -> None:
        self.completer = completer
        self.temperature = temperature

    async def generate(self, request: StepRequest) -> GeneratedStep:
        messages = step_messages(
            request.query,
            request.previous,
            request.strategy,
            request.step_number,
            request.max_depth,
            request.student,
            rejected=request.rejected,
        )
        done = await self.completer.complete(
            messages,
            purpose="reasoning",
            max_tokens=request.max_tokens,
            deadline=request.deadline,
            temperature=self.temperature if request.temperature is None else request.temperature,
        )
        return GeneratedStep(done.text.strip(), done.usage)
