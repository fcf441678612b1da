"""The search tree: its nodes, configuration and result types, and the tree policy.

:class:`TreePolicy` is the part of :class:`~services.reasoning.mcts.engine.Search` that works on
the tree alone, with no provider call: UCB1/PUCT selection with virtual loss, which nodes can
still be widened, backing rewards up to the root (with the per-answer votes), early stop by vote
share, and the best path and final result. The engine adds rounds, expansion and scoring.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.reasoning.mcts.generator import CallUsage
from services.reasoning.mcts.mathcheck import CheckableProblem
from services.reasoning.mcts.strategies import Strategy


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


class TreePolicy:
    """Selection, widening checks, backup, early stop and the best path over :attr:`nodes`."""

    cfg: SearchConfig
    root: Node
    nodes: list[Node]
    iterations: int
    usage: Usage
    votes: dict[str, int]
    mass: dict[str, float]
    best_terminal: dict[str, Node]
    verified: bool
    emitted: set[int]
    problem: CheckableProblem | None
    widenings: int
    merged: int
    _c: float

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
