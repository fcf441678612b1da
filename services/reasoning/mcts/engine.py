"""Monte Carlo tree search over reasoning steps.

One *iteration* selects a leaf from the root by UCB1 (PUCT when the children carry priors).
An open leaf is *expanded*: ``width`` children, one per strategy, are written in parallel by the
:class:`StepGenerator`, scored by the :class:`RewardModel` and backed up to the root. A leaf
that states a final answer (or sits at the depth limit) is *revisited*: its reward is backed up
again at no provider cost, which is how visits pile up on good answers (visit-weighted voting).

Several leaves may be expanded per round (``parallelism // width``) using virtual loss; rounds
are integrated in selection order, so the tree depends only on the seed and on the answers,
never on which call finished first. The search stops on the first of: iteration, token, cost,
wall-time or deadline limits, an exhausted tree, or early stop (a verified-correct answer, or
one answer holding ``early_stop_share`` of the votes).

*Progressive widening*: a child *fails* when it is a final answer scored below
``failed_below`` (proved wrong), a dead end at the depth limit, or a node whose own children
all failed and that cannot be widened any more. A node whose children all failed is *widened*:
expanded again (up to ``max_widenings`` times) with new samples - the next strategies in its
order, a temperature raised by ``widen_temperature_step`` per retry (capped at
``max_temperature``), and the answers already rejected below it named in the prompt. A new
sample identical to an existing child (same final answer, or same text) is merged into it (one
more vote, no new node). Failed children are never selected again. The tree is ``exhausted``
only when no leaf is open and no node can be widened.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.reasoning.mcts.answers import canonical_answer, extract_final_answer
from services.reasoning.mcts.generator import (
    CallUsage,
    GeneratedStep,
    GenerationError,
    StepGenerator,
    StepRequest,
)
from services.reasoning.mcts.mathcheck import CheckableProblem, find_problem
from services.reasoning.mcts.prompts import StudentState
from services.reasoning.mcts.rewards import Reward, RewardInput, RewardModel
from services.reasoning.mcts.strategies import Strategy, order_for, question_kind

T = TypeVar("T")


class Selection(enum.IntEnum):
    AUTO = 0  # PUCT when the children carry priors, else UCB1
    UCB1 = 1
    PUCT = 2


class PathBy(enum.IntEnum):
    VISITS = 0  # the most-visited (robust) answer and child
    VALUE = 1  # the highest mean value


@dataclass(frozen=True)
class SearchConfig:
    """Limits and knobs of one search; 0 in ``max_tokens``/``max_cost_usd``/``max_wall_ms`` = none."""

    max_iterations: int = 16
    max_depth: int = 5
    max_width: int = 3
    max_tokens: int = 0
    max_cost_usd: float = 0.0
    max_wall_ms: int = 0
    exploration_weight: float = 2.0
    parallelism: int = 0  # concurrent provider calls (0 = max_width)
    early_stop_share: float = 0.8
    early_stop: bool = True
    min_votes: int = 3
    min_answer_value: float = 0.1  # answers scored below this (proved wrong) never win
    step_max_tokens: int = 256
    min_step_tokens: int = 16
    selection: Selection = Selection.AUTO
    best_by: PathBy = PathBy.VISITS
    max_widenings: int = 0  # re-expansions of a node whose children all failed (0 = no widening)
    failed_below: float = 0.1  # a final answer scored below this has failed (see module docstring)
    step_temperature: float = 0.7  # temperature of first samples (the generator's own default)
    widen_temperature_step: float = 0.2  # added per widening retry
    max_temperature: float = 1.2

    def widen_temperature(self, attempt: int) -> float | None:
        """Sampling temperature of widening retry ``attempt`` (None for the first expansion)."""
        if attempt <= 0:
            return None
        return min(self.max_temperature, self.step_temperature + attempt * self.widen_temperature_step)

    @property
    def concurrency(self) -> int:
        return self.parallelism or self.max_width


class Node:
    """One reasoning step (the root holds the question). Mutable and slotted: the hot path."""

    __slots__ = (
        "answer",
        "canonical",
        "children",
        "closed",
        "depth",
        "expanded",
        "index",
        "parent",
        "pending",
        "prior",
        "reward",
        "source",
        "strategy",
        "text",
        "value_sum",
        "visits",
        "vloss",
        "widenings",
    )

    def __init__(self, index: int, parent: Node | None, depth: int, strategy: Strategy | None, text: str) -> None:
        self.index = index
        self.parent = parent
        self.depth = depth
        self.strategy = strategy
        self.text = text
        self.children: list[Node] = []
        self.visits = 0
        self.vloss = 0
        self.value_sum = 0.0
        self.reward = 0.0
        self.source = ""
        self.prior = 0.0
        self.answer: str | None = None
        self.canonical: str | None = None
        self.expanded = False
        self.pending = False
        self.closed = False  # failed: never selected again (see the module docstring)
        self.widenings = 0  # widening retries made below this node

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def terminal(self) -> bool:
        return self.answer is not None

    def path(self) -> list[Node]:
        """Steps from the root's child down to this node."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node)
            node = node.parent
        out.reverse()
        return out


@dataclass
class Usage:
    """Tokens and money across every call of the search (steps and judge)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    failed_calls: int = 0
    estimated: bool = False
    max_call_cost: float = 0.0
    providers: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, usage: CallUsage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cost_usd += usage.cost_usd
        self.calls += 1
        self.estimated = self.estimated or usage.estimated
        if usage.cost_usd > self.max_call_cost:
            self.max_call_cost = usage.cost_usd
        key = (usage.provider, usage.model)
        self.providers[key] = self.providers.get(key, 0) + 1

    @property
    def main_provider(self) -> tuple[str, str]:
        if not self.providers:
            return ("", "")
        return max(self.providers.items(), key=lambda kv: kv[1])[0]


@dataclass
class StepEvent:
    """A node that joined the current best path."""

    node: Node


@dataclass
class SearchResult:
    answer: str
    confidence: float
    path: list[Node]
    nodes: list[Node]
    votes: dict[str, int]
    usage: Usage
    iterations: int
    wall_ms: float
    stop_reason: str
    problem: CheckableProblem | None
    widenings: int = 0  # widening expansions (re-expansions of nodes whose children all failed)
    merged: int = 0  # samples merged into an identical existing child instead of a new node


@dataclass
class ResultEvent:
    result: SearchResult


@dataclass(frozen=True)
class StrategyTables:
    """Per question kind: strategies tried first, and PUCT priors (kinds without priors use UCB1)."""

    preferred: Mapping[str, Sequence[str]] = field(default_factory=dict)
    priors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Search:
    """One search; iterate :meth:`run` for step events followed by one :class:`ResultEvent`."""

    def __init__(
        self,
        query: str,
        generator: StepGenerator,
        reward_model: RewardModel,
        config: SearchConfig,
        *,
        student: StudentState | None = None,
        seed: int = 0,
        tables: StrategyTables | None = None,
        deadline: float | None = None,
    ) -> None:
        self.query = query
        self.generator = generator
        self.rewards = reward_model
        self.cfg = config
        self.student = student or StudentState()
        self.seed = seed
        self.tables = tables or StrategyTables()
        self.external_deadline = deadline
        self.problem = find_problem(query)
        self.kind = question_kind(query, self.problem.kind if self.problem else None)
        self.kind_priors = self.tables.priors.get(self.kind, {})
        self.root = Node(0, None, 0, None, query)
        self.nodes: list[Node] = [self.root]
        self.open_leaves = 1
        self.iterations = 0
        self.usage = Usage()
        self.votes: dict[str, int] = {}  # terminal visits per canonical answer
        self.mass: dict[str, float] = {}  # terminal visits x reward per canonical answer
        self.answer_nodes: dict[str, int] = {}  # terminal nodes per canonical answer
        self.best_terminal: dict[str, Node] = {}  # per answer: highest (value, visits), earliest on ties
        self.verified = False
        self.emitted: set[int] = set()
        self._semaphore = asyncio.Semaphore(max(1, config.concurrency))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._c = config.exploration_weight
        self._judge_tokens = reward_model.settings.judge_max_tokens if reward_model.uses_judge else 0
        self._failed_rounds = 0
        self.widenings = 0
        self.merged = 0

    # --- public -------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[StepEvent | ResultEvent]:
        start = time.monotonic()
        wall_deadline = start + self.cfg.max_wall_ms / 1000 if self.cfg.max_wall_ms > 0 else math.inf
        ext = self.external_deadline if self.external_deadline is not None else math.inf
        self._deadline = min(wall_deadline, ext)
        self._deadline_reason = "deadline" if ext < wall_deadline else "wall_time"
        reason = "iterations"
        try:
            while True:
                try:
                    self._check_limits()
                    await self._round()
                except _Stop as stop:
                    reason = stop.reason
                    break
                for event in self._new_steps():
                    yield event
        finally:
            await self._cancel_all()
        for event in self._new_steps():
            yield event
        yield ResultEvent(self._result(reason, (time.monotonic() - start) * 1000))

    # --- loop -----------------------------------------------------------------------------

    def _check_limits(self) -> None:
        if time.monotonic() >= self._deadline:
            raise _Stop(self._deadline_reason)
        if self.iterations >= self.cfg.max_iterations:
            raise _Stop("iterations")
        if self.open_leaves == 0 and not self._widenable_exists():
            raise _Stop("exhausted")
        if self.cfg.max_tokens and self.usage.output_tokens >= self.cfg.max_tokens:
            raise _Stop("tokens")
        if self.cfg.max_cost_usd and self.usage.cost_usd >= self.cfg.max_cost_usd:
            raise _Stop("cost")

    def _children_affordable(self, planned: int) -> tuple[int, str]:
        """How many more child generations fit the token and cost budgets after ``planned`` ones,
        and which budget is the binding one ("" when neither)."""
        cfg = self.cfg
        fit, binding = cfg.max_width, ""
        if cfg.max_tokens:
            per_child = cfg.min_step_tokens + self._judge_tokens
            by_tokens = (cfg.max_tokens - self.usage.output_tokens) // per_child - planned
            if by_tokens < fit:
                fit, binding = by_tokens, "tokens"
        if cfg.max_cost_usd and self.usage.max_call_cost > 0:
            per_child_cost = self.usage.max_call_cost * (2 if self.rewards.uses_judge else 1)
            by_cost = int((cfg.max_cost_usd - self.usage.cost_usd) / per_child_cost) - planned
            if by_cost < fit:
                fit, binding = by_cost, "cost"
        return max(fit, 0), binding

    async def _round(self) -> None:
        """Select leaves (revisiting terminals on the way), expand them in parallel, back up."""
        cfg = self.cfg
        leaves_wanted = max(1, cfg.concurrency // cfg.max_width)
        plan: list[tuple[Node, int, int]] = []
        planned_children = 0
        try:
            while len(plan) < leaves_wanted and self.iterations < cfg.max_iterations:
                leaf = self._select()
                if leaf is None or leaf.pending:
                    if leaf is None and not plan:
                        raise _Stop("exhausted")
                    break
                if leaf.terminal or leaf.depth >= cfg.max_depth:
                    self.iterations += 1
                    self._backup(leaf, leaf.reward)
                    if self._dominant():
                        raise _Stop("early_stop")
                    continue
                width, binding = self._children_affordable(planned_children)
                if width <= 0:
                    if plan:
                        break
                    raise _Stop(binding)
                self.iterations += 1
                attempt = 0
                if leaf.expanded:  # a node whose children all failed: widen it
                    leaf.widenings += 1
                    self.widenings += 1
                    attempt = leaf.widenings
                leaf.pending = True
                self._apply_vloss(leaf, 1)
                plan.append((leaf, width, attempt))
                planned_children += width
        finally:
            for leaf, _, _ in plan:
                self._apply_vloss(leaf, -1)
        if plan:
            await self._expand(plan, planned_children)
            if self._dominant():
                raise _Stop("early_stop")

    # --- selection --------------------------------------------------------------------------

    def _select(self) -> Node | None:
        node = self.root
        max_depth = self.cfg.max_depth
        c = self._c
        puct_mode = self.cfg.selection
        while True:
            if node.answer is not None or node.depth >= max_depth or not node.expanded:
                return node
            parent_n = node.visits + node.vloss
            use_puct = puct_mode == Selection.PUCT or (
                puct_mode == Selection.AUTO and node.children and node.children[0].prior > 0.0
            )
            if use_puct:
                scale = c * math.sqrt(parent_n)
            else:
                log_n = math.log(parent_n) if parent_n > 1 else 0.0
            best: Node | None = None
            best_score = -math.inf
            for child in node.children:
                if child.closed:
                    continue
                n = child.visits + child.vloss
                q = child.value_sum / n if n else 0.0
                if use_puct:
                    score = q + scale * child.prior / (1 + n)
                else:
                    score = q + c * math.sqrt(log_n / n) if n else math.inf
                if score > best_score:
                    best_score = score
                    best = child
            if best is None:  # every child failed (or none could be generated)
                if self._can_widen(node):
                    return node
                node.closed = True  # never come back here
                if node.parent is None:
                    return None
                node = self.root
                continue
            node = best

    def _can_widen(self, node: Node) -> bool:
        return (
            node.widenings < self.cfg.max_widenings
            and node.answer is None
            and node.depth < self.cfg.max_depth
            and not node.closed
        )

    def _widenable_exists(self) -> bool:
        """Whether some node could still be widened: bottom-up over the tree (children are
        created after their parents), a node is dead when it failed, or when it is expanded,
        every child is dead and it has no widening left."""
        dead = [False] * len(self.nodes)
        for node in reversed(self.nodes):
            if node.closed:
                dead[node.index] = True
                continue
            if node.answer is not None or not node.expanded or node.pending:
                continue
            if all(dead[k.index] for k in node.children):
                if self._can_widen(node):
                    return True
                dead[node.index] = True
        return False

    def _apply_vloss(self, leaf: Node, delta: int) -> None:
        node: Node | None = leaf
        while node is not None:
            node.vloss += delta
            node = node.parent

    def _backup(self, leaf: Node, reward: float) -> None:
        node: Node | None = leaf
        while node is not None:
            node.visits += 1
            node.value_sum += reward
            node = node.parent
        if leaf.canonical is not None:
            key = leaf.canonical
            self.votes[key] = self.votes.get(key, 0) + 1
            self.mass[key] = self.mass.get(key, 0.0) + reward
            best = self.best_terminal.get(key)
            # a final answer's value is its own reward (nothing backs up through it), so only
            # visits change: one comparison keeps the best node per answer up to date
            if best is None or (leaf.value, leaf.visits, -leaf.index) > (best.value, best.visits, -best.index):
                self.best_terminal[key] = leaf

    def _dominant(self) -> bool:
        cfg = self.cfg
        if not cfg.early_stop:
            return False
        if self.verified:
            return True
        total = sum(self.votes.values())
        if total < cfg.min_votes:
            return False
        # only an answer that can win (not proved wrong) stops the search by its vote share
        floor = cfg.min_answer_value
        top = max((v for a, v in self.votes.items() if self.mass[a] / v >= floor), default=0)
        return top / total >= cfg.early_stop_share

    # --- expansion ------------------------------------------------------------------------------

    def _strategies(self, leaf: Node, width: int, attempt: int = 0) -> list[tuple[Strategy, int]]:
        """The leaf's seeded strategy order; a widening retry continues where the last one stopped."""
        order = order_for(self.kind, self.tables.preferred, random.Random(self.seed * 1_000_003 + leaf.index))
        offset = attempt * self.cfg.max_width
        return [(order[i % len(order)], i // len(order)) for i in range(offset, offset + width)]

    @staticmethod
    def _merge_key(answer_key: str | None, text: str) -> tuple[str, str]:
        if answer_key is not None:
            return ("answer", answer_key)
        return ("text", " ".join(text.lower().split()))

    async def _expand(self, plan: list[tuple[Node, int, int]], planned_children: int) -> None:
        cfg = self.cfg
        step_tokens = cfg.step_max_tokens
        if cfg.max_tokens:
            share = (cfg.max_tokens - self.usage.output_tokens) // planned_children - self._judge_tokens
            step_tokens = max(cfg.min_step_tokens, min(step_tokens, share))
        jobs: list[tuple[Node, Strategy, int, asyncio.Task[GeneratedStep]]] = []
        for leaf, width, attempt in plan:
            previous = tuple(n.text for n in leaf.path())
            rejected = tuple(dict.fromkeys(k.answer for k in leaf.children if k.closed and k.answer is not None))
            for strategy, variant in self._strategies(leaf, width, attempt):
                request = StepRequest(
                    self.query,
                    previous,
                    strategy,
                    leaf.depth + 1,
                    cfg.max_depth,
                    self.student,
                    step_tokens,
                    variant,
                    self._deadline,
                    attempt,
                    cfg.widen_temperature(attempt),
                    rejected,
                )
                jobs.append((leaf, strategy, attempt, self._spawn(self._generate(request))))
        await self._wait([job[3] for job in jobs])

        new_nodes: list[Node] = []
        merged: list[Node] = []  # existing children that received an identical sample
        errors: list[BaseException] = []
        for leaf, _, _, _ in jobs:
            leaf.pending = False
            if not leaf.expanded:
                leaf.expanded = True
                self.open_leaves -= 1
        for leaf, strategy, attempt, task in jobs:
            if not task.done() or task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                if not isinstance(exc, GenerationError):
                    raise exc
                self.usage.failed_calls += 1
                errors.append(exc)
                continue
            step = task.result()
            self.usage.add(step.usage)
            if attempt > 0:
                twin = self._twin(leaf, step.text)
                if twin is not None:
                    self.merged += 1
                    if twin.canonical is not None:
                        self.answer_nodes[twin.canonical] = self.answer_nodes.get(twin.canonical, 0) + 1
                    merged.append(twin)
                    continue
            node = self._add_child(leaf, strategy, step)
            new_nodes.append(node)
        for leaf, _, _ in plan:
            self._set_priors(leaf)
        if not new_nodes and not merged and errors:
            first = errors[0]
            if len(self.nodes) == 1:  # nothing to show at all: report why
                raise (first.cause if isinstance(first, GenerationError) and first.cause else first)
            self._failed_rounds += 1
            if self._failed_rounds >= 2:
                raise _Stop("generation_failed")
        elif new_nodes or merged:
            self._failed_rounds = 0
        rewards = await self._score(new_nodes)
        for node, reward in zip(new_nodes, rewards, strict=True):
            for usage in reward.usages:
                self.usage.add(usage)
            node.reward = reward.value
            node.source = reward.source
            if node.answer is not None:
                if reward.source == "verifier" and reward.value >= 1.0:
                    self.verified = True
                if reward.value < cfg.failed_below:
                    node.closed = True  # proved wrong (or scored as good as): failed
            elif node.depth >= cfg.max_depth:
                node.closed = True  # a dead end: no final answer at the depth limit
            self._backup(node, reward.value)
        for twin in merged:  # an identical sample is one more vote for its twin
            self._backup(twin, twin.reward)
        if time.monotonic() >= self._deadline:
            raise _Stop(self._deadline_reason)

    async def _generate(self, request: StepRequest) -> GeneratedStep:
        async with self._semaphore:
            return await self.generator.generate(request)

    def _twin(self, leaf: Node, text: str) -> Node | None:
        """The child of ``leaf`` that a new sample ``text`` duplicates (same answer or text), if any."""
        answer = extract_final_answer(text)
        key = self._merge_key(canonical_answer(answer) if answer is not None else None, text)
        for child in leaf.children:
            if self._merge_key(child.canonical, child.text) == key:
                return child
        return None

    def _add_child(self, leaf: Node, strategy: Strategy, step: GeneratedStep) -> Node:
        node = Node(len(self.nodes), leaf, leaf.depth + 1, strategy, step.text)
        node.prior = step.prior
        answer = extract_final_answer(step.text)
        if answer is not None:
            node.answer = answer
            node.canonical = canonical_answer(answer)
            self.answer_nodes[node.canonical] = self.answer_nodes.get(node.canonical, 0) + 1
        elif node.depth < self.cfg.max_depth:
            self.open_leaves += 1
        self.nodes.append(node)
        leaf.children.append(node)
        return node

    def _set_priors(self, leaf: Node) -> None:
        """Generator priors win; else the question kind's strategy priors; normalised over siblings."""
        kids = leaf.children
        if not kids:
            return
        if any(k.prior <= 0.0 for k in kids):
            if not self.kind_priors:
                uniform = 1.0 / len(kids) if self.cfg.selection == Selection.PUCT else 0.0
                for k in kids:
                    k.prior = uniform
                return
            for k in kids:
                k.prior = float(self.kind_priors.get(k.strategy.label if k.strategy else "", 0.0)) or 1e-3
        total = sum(k.prior for k in kids)
        for k in kids:
            k.prior /= total

    async def _score(self, nodes: list[Node]) -> list[Reward]:
        if not nodes:
            return []
        items = [
            RewardInput(
                self.query,
                self.problem,
                tuple(n.text for n in node.path()[:-1]),
                node.text,
                node.answer,
                node.canonical,
                node.depth >= self.cfg.max_depth,
                self.answer_nodes,
                self._deadline,
            )
            for node in nodes
        ]
        if not self.rewards.uses_judge:
            return [await self.rewards.score(item) for item in items]
        tasks = [self._spawn(self._judged(item)) for item in items]
        await self._wait(tasks)
        out: list[Reward] = []
        for item, task in zip(items, tasks, strict=True):
            if task.done() and not task.cancelled() and task.exception() is None:
                out.append(task.result())
            else:  # the judge ran out of time: fall back to the scorers that make no calls
                out.append(self.rewards.score_without_calls(item))
        return out

    async def _judged(self, item: RewardInput) -> Reward:
        async with self._semaphore:
            return await self.rewards.score(item)

    # --- task bookkeeping ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Wait for ``tasks`` until the deadline; cancel the stragglers."""
        timeout = self._deadline - time.monotonic()
        if timeout == math.inf:
            timeout = None  # type: ignore[assignment]
        if timeout is not None and timeout <= 0:
            pending = set(tasks)
        else:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def _cancel_all(self) -> None:
        """Cancel in-flight calls (client cancelled, deadline, or an error) and wait for them."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # --- answers and the best path ----------------------------------------------------------------

    def _best_answer(self) -> str | None:
        """The winning answer among those not rejected (mean reward >= ``min_answer_value``)."""
        floor = self.cfg.min_answer_value
        eligible = [a for a, v in self.votes.items() if self.mass[a] / v >= floor]
        if not eligible:
            return None
        if self.cfg.best_by == PathBy.VALUE:
            return max(eligible, key=lambda a: (self.mass[a] / self.votes[a], self.votes[a]))
        return max(eligible, key=lambda a: (self.votes[a], self.mass[a]))

    def best_path(self) -> list[Node]:
        """Path to the best node of the winning answer; without one, descend by visits (or value)
        avoiding rejected final answers: the best partial line of thought."""
        answer = self._best_answer()
        if answer is not None:
            return self.best_terminal[answer].path()
        path: list[Node] = []
        node = self.root
        floor = self.cfg.min_answer_value
        by_value = self.cfg.best_by == PathBy.VALUE
        while node.children:
            kids = [k for k in node.children if k.visits and not (k.answer is not None and k.value < floor)]
            if not kids:
                break
            node = max(kids, key=(lambda k: (k.value, k.visits)) if by_value else (lambda k: (k.visits, k.value)))
            path.append(node)
        return path

    def _new_steps(self) -> list[StepEvent]:
        out = []
        for node in self.best_path():
            if node.index not in self.emitted:
                self.emitted.add(node.index)
                out.append(StepEvent(node))
        return out

    def _result(self, reason: str, wall_ms: float) -> SearchResult:
        path = self.best_path()
        answer_key = self._best_answer()
        if answer_key is not None and path:
            answer = path[-1].answer or answer_key
            # reward-weighted vote share times the answer's mean reward: answers proved wrong
            # (reward 0) do not dilute it, unverified rivals do, and a weak answer stays weak
            mass_total = sum(self.mass.values())
            share = self.mass[answer_key] / mass_total if mass_total > 0 else 0.0
            confidence = share * self.mass[answer_key] / self.votes[answer_key]
        else:
            answer = path[-1].text if path else ""
            confidence = 0.0
        return SearchResult(
            answer=answer,
            confidence=min(1.0, max(0.0, confidence)),
            path=path,
            nodes=self.nodes,
            votes=dict(self.votes),
            usage=self.usage,
            iterations=self.iterations,
            wall_ms=wall_ms,
            stop_reason=reason,
            problem=self.problem,
            widenings=self.widenings,
            merged=self.merged,
        )
