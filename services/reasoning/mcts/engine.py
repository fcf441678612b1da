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

The tree itself (nodes, config and result types, selection, backup, best path) is in ``tree.py``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

from services.reasoning.mcts.answers import canonical_answer, extract_final_answer
from services.reasoning.mcts.generator import (
    GeneratedStep,
    GenerationError,
    StepGenerator,
    StepRequest,
)
from services.reasoning.mcts.mathcheck import find_problem
from services.reasoning.mcts.prompts import StudentState
from services.reasoning.mcts.rewards import Reward, RewardInput, RewardModel
from services.reasoning.mcts.strategies import Strategy, order_for, question_kind
from services.reasoning.mcts.tree import (
    Node,
    PathBy,
    ResultEvent,
    SearchConfig,
    SearchResult,
    Selection,
    StepEvent,
    StrategyTables,
    TreePolicy,
    Usage,
)

__all__ = [
    "Node",
    "PathBy",
    "ResultEvent",
    "Search",
    "SearchConfig",
    "SearchResult",
    "Selection",
    "StepEvent",
    "StrategyTables",
    "Usage",
]

T = TypeVar("T")


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class Search(TreePolicy):
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
