"""Does deep thinking make answers more often right? One reply vs majority vote vs MCTS.

A fixed-seed generated problem set (5 kinds x 3 difficulty levels: precedence/parentheses,
fractions, decimals, percentages, one-variable linear equations; every problem checked by the
verifier) is answered three ways at the same budget of ``k`` samples of at most ``S`` tokens:

* ``single``: one reply (budget 1 x S);
* ``vote@k``: k replies, the most frequent final answer (ties: the first seen);
* ``mcts``: the MCTS engine with the verifier as reward model, width ``w``, progressive
  widening, capped at ``k / w`` iterations and ``k x S`` generated tokens (so at most k calls).

All three use the same step prompt (``services/reasoning/mcts/prompts.py``, strategy
algorithmic, "this is the last step: finish with Final answer") and temperature 0.7; MCTS
retries sample hotter and name the rejected answers (the engine's widening).

Providers:

* ``scripted``: the fake LLM server, scripted per problem to be right with probability ``p``
  per sample (else one of three wrong answers), reached through the real router (Redis,
  MongoDB-wire server, HTTP). Prints the analytic expectation next to each measurement:
  single ``p``, best-of-k with a perfect verifier ``1 - (1 - p)^k``, vote@k by exact
  enumeration; ``z`` = (measured - analytic) / standard error.
* ``local``: the embedded SmolLM2-135M (llama.cpp, in-process; CPU), on the first ``--subset``
  problems of each level (interleaved kinds).

Usage::

    .venv/bin/python bench/bench_reasoning_accuracy.py scripted [--k 4] [--width 2]
    .venv/bin/python bench/bench_reasoning_accuracy.py local --subset 8 [--threads 1] [--json out.json]
    .venv/bin/python bench/bench_reasoning_accuracy.py problems     # list the problem set
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masterx_runtime.testing.benchstats import machine
from services.reasoning.mcts.answers import canonical_answer, extract_final_answer, format_number
from services.reasoning.mcts.engine import ResultEvent, Search, SearchConfig
from services.reasoning.mcts.generator import (
    CallUsage,
    Completer,
    CompleterStepGenerator,
    Completion,
    StepRequest,
)
from services.reasoning.mcts.mathcheck import find_problem
from services.reasoning.mcts.prompts import StudentState
from services.reasoning.mcts.rewards import RewardMode, RewardModel, RewardSettings
from services.reasoning.mcts.strategies import Strategy

LEVELS = ("easy", "medium", "hard")
KINDS = ("precedence", "fractions", "decimals", "percentages", "linear")
SEED = 20261201
TEMPERATURE = 0.7

# --- the problem set ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    pid: str
    kind: str
    level: str
    question: str
    answer: Fraction

    @property
    def answer_text(self) -> str:
        return format_number(self.answer)


def _dec(r: random.Random, lo: int, hi: int, places: int) -> Fraction:
    """A random decimal with exactly ``places`` decimal places (last digit non-zero)."""
    while True:
        n = r.randint(lo * 10**places, hi * 10**places)
        if n % 10:
            return Fraction(n, 10**places)


def _d(x: Fraction) -> str:
    return format_number(x)


def _make(kind: str, level: str, r: random.Random) -> tuple[str, Fraction]:
    F = Fraction
    if kind == "precedence":
        if level == "easy":
            a, b, c = r.randint(2, 20), r.randint(2, 9), r.randint(2, 9)
            if r.random() < 0.5:
                return f"What is {a} + {b} * {c}?", F(a + b * c)
            return f"What is {a} * {b} - {c}?", F(a * b - c)
        if level == "medium":
            a, b, c, d = r.randint(2, 15), r.randint(2, 15), r.randint(2, 9), r.randint(1, 20)
            if r.random() < 0.5:
                return f"What is ({a} + {b}) * {c} - {d}?", F((a + b) * c - d)
            return f"What is {d} + {c} * ({a} - {b})?", F(d + c * (a - b))
        a, b, c, e = r.randint(2, 12), r.randint(2, 9), r.randint(2, 9), r.randint(2, 6)
        q = r.randint(2, 12)
        d = e * q  # d / e is exact
        return f"What is {a} * ({b} + {c}) - {d} / {e} + {b} * {c}?", F(a * (b + c) - q + b * c)
    if kind == "fractions":
        if level == "easy":
            den = r.randint(3, 12)
            a, b = r.randint(1, den - 1), r.randint(1, den - 1)
            return f"What is {a}/{den} + {b}/{den}?", F(a, den) + F(b, den)
        if level == "medium":
            b, d = r.sample(range(2, 10), 2)
            a, c = r.randint(1, b), r.randint(1, d)
            op = r.choice("+-")
            val = F(a, b) + F(c, d) if op == "+" else F(a, b) - F(c, d)
            return f"What is {a}/{b} {op} {c}/{d}?", val
        b, d, f = r.sample(range(2, 10), 3)
        a, c, e = r.randint(1, 2 * b), r.randint(1, d), r.randint(1, f)
        return f"What is ({a}/{b} - {c}/{d}) * {e}/{f}?", (F(a, b) - F(c, d)) * F(e, f)
    if kind == "decimals":
        if level == "easy":
            u, v = _dec(r, 1, 30, 1), _dec(r, 1, 30, 1)
            if r.random() < 0.5:
                return f"What is {_d(u)} + {_d(v)}?", u + v
            u, v = max(u, v), min(u, v)
            return f"What is {_d(u)} - {_d(v)}?", u - v
        if level == "medium":
            u, v = _dec(r, 1, 20, 1), _dec(r, 1, 9, 1)
            return f"What is {_d(u)} * {_d(v)}?", u * v
        u, v, w = _dec(r, 5, 20, 2), _dec(r, 1, 5, 1), _dec(r, 1, 4, 1)
        return f"What is ({_d(u)} - {_d(v)}) * {_d(w)}?", (u - v) * w
    if kind == "percentages":
        if level == "easy":
            p, n = r.choice((10, 20, 25, 50)), 20 * r.randint(1, 20)
            return f"What is {p}% of {n}?", F(p * n, 100)
        if level == "medium":
            p, n = r.choice((12, 15, 35, 45, 65, 75)), 20 * r.randint(2, 30)
            return f"What is {p}% of {n}?", F(p * n, 100)
        pf, n = F(r.choice(("15", "35", "45", "12.5"))), 40 * r.randint(2, 20)
        q, m = r.choice((20, 30, 40)), 10 * r.randint(2, 20)
        return f"What is {_d(pf)}% of {n} + {q}% of {m}?", pf * n / 100 + F(q * m, 100)
    # linear equations with an integer root
    x = r.randint(-9, 12)
    if level == "easy":
        a = r.randint(1, 20)
        return f"Solve for x: x + {a} = {x + a}", F(x)
    if level == "medium":
        a, b = r.randint(2, 9), r.randint(1, 20)
        return f"Solve for x: {a}x - {b} = {a * x - b}", F(x)
    a, b, c = r.randint(2, 6), r.randint(1, 9), r.randint(1, 15)
    d = r.choice([v for v in range(1, 6) if v != a])
    e = a * (x - b) + c - d * x
    rhs = f"{d}x + {e}" if e >= 0 else f"{d}x - {-e}"
    return f"Solve for x: {a}(x - {b}) + {c} = {rhs}", F(x)


def make_problems(seed: int = SEED, per_cell: int = 15) -> list[Problem]:
    """``per_cell`` problems per kind and level (225 by default), interleaved by kind within a
    level, each checked: the verifier finds it and accepts its answer. Questions are distinct."""
    r = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    for level in LEVELS:
        cells: dict[str, list[Problem]] = {k: [] for k in KINDS}
        for kind in KINDS:
            while len(cells[kind]) < per_cell:
                question, answer = _make(kind, level, r)
                if question in seen:
                    continue
                problem = find_problem(question)
                if problem is None or not problem.check(format_number(answer)):
                    raise AssertionError(f"the verifier cannot check {question!r} = {answer}")
                seen.add(question)
                cells[kind].append(Problem(f"{level}-{kind}-{len(cells[kind])}", kind, level, question, answer))
        for i in range(per_cell):
            out.extend(cells[k][i] for k in KINDS)
    return out


# --- answering ------------------------------------------------------------------------------


@dataclass
class Outcome:
    correct: bool
    answer: str
    tokens: int
    calls: int
    wall_s: float
    stop: str = ""


def _request(problem: Problem, max_tokens: int) -> StepRequest:
    return StepRequest(problem.question, (), Strategy.ALGORITHMIC, 1, 1, StudentState(), max_tokens, 0, math.inf)


def graded(problem: Problem, answer: str | None) -> bool:
    checkable = find_problem(problem.question)
    return bool(answer) and checkable is not None and checkable.check(answer or "")


async def single(gen: CompleterStepGenerator, problem: Problem, s: int) -> Outcome:
    started = time.perf_counter()
    step = await gen.generate(_request(problem, s))
    answer = extract_final_answer(step.text)
    return Outcome(graded(problem, answer), answer or "", step.usage.output_tokens, 1, time.perf_counter() - started)


async def vote(gen: CompleterStepGenerator, problem: Problem, s: int, k: int) -> Outcome:
    started = time.perf_counter()
    steps = [await gen.generate(_request(problem, s)) for _ in range(k)]
    answers = [a for a in (extract_final_answer(st.text) for st in steps) if a is not None]
    counts = Counter(canonical_answer(a) for a in answers)  # insertion order: ties go to the first seen
    best = max(counts, key=lambda key: counts[key]) if counts else None
    answer = next((a for a in answers if canonical_answer(a) == best), None)
    tokens = sum(st.usage.output_tokens for st in steps)
    return Outcome(graded(problem, answer), answer or "", tokens, k, time.perf_counter() - started)


async def mcts(gen: CompleterStepGenerator, problem: Problem, s: int, k: int, width: int, depth: int) -> Outcome:
    started = time.perf_counter()
    cfg = SearchConfig(
        max_iterations=max(1, k // width),
        max_depth=depth,
        max_width=width,
        max_tokens=k * s,
        step_max_tokens=s,
        min_step_tokens=s,
        parallelism=width,
        max_widenings=k,
        step_temperature=TEMPERATURE,
    )
    search = Search(problem.question, gen, RewardModel(RewardMode.VERIFIER, RewardSettings()), cfg, seed=0)
    result = None
    async for event in search.run():
        if isinstance(event, ResultEvent):
            result = event.result
    assert result is not None
    answer = result.answer if result.confidence > 0 else ""
    return Outcome(
        graded(problem, answer),
        answer,
        result.usage.output_tokens,
        result.usage.calls,
        time.perf_counter() - started,
        result.stop_reason,
    )


# --- analytic expectations for the scripted provider ------------------------------------------


def analytic(p: float, k: int, wrong_values: int = 3) -> dict[str, float]:
    """Expected accuracy: single, vote@k (exact enumeration, ties to the first seen) and
    best-of-k with a perfect verifier."""
    values = list(range(wrong_values + 1))  # 0 = the right answer
    probs = [p] + [(1 - p) / wrong_values] * wrong_values
    vote_acc = 0.0
    for seq in itertools.product(values, repeat=k):
        weight = math.prod(probs[v] for v in seq)
        counts = Counter(seq)
        if max(counts, key=lambda v: counts[v]) == 0:
            vote_acc += weight
    return {"single": p, f"vote@{k}": vote_acc, "mcts": 1 - (1 - p) ** k}


# --- running ----------------------------------------------------------------------------------


@dataclass
class Cell:
    outcomes: list[Outcome] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        n = len(self.outcomes)
        return {
            "n": n,
            "accuracy": sum(o.correct for o in self.outcomes) / n,
            "tokens": sum(o.tokens for o in self.outcomes) / n,
            "calls": sum(o.calls for o in self.outcomes) / n,
            "wall_s": sum(o.wall_s for o in self.outcomes) / n,
        }


async def evaluate(
    completer: Completer,
    problems: Sequence[Problem],
    *,
    k: int,
    s: int,
    width: int,
    depth: int,
    log: Any = None,
    on_problem: Any = None,
) -> dict[tuple[str, str], Cell]:
    gen = CompleterStepGenerator(completer, temperature=TEMPERATURE)
    cells: dict[tuple[str, str], Cell] = {}
    methods = ("single", f"vote@{k}", "mcts")
    for i, problem in enumerate(problems):
        outs = (
            await single(gen, problem, s),
            await vote(gen, problem, s, k),
            await mcts(gen, problem, s, k, width, depth),
        )
        for method, out in zip(methods, outs, strict=True):
            cells.setdefault((problem.level, method), Cell()).outcomes.append(out)
        if log is not None:
            log(
                f"[{i + 1}/{len(problems)}] {problem.pid}: {problem.question} = {problem.answer_text} | "
                + " | ".join(
                    f"{m}: {o.answer!r} {'ok' if o.correct else 'x'} ({o.calls} calls)"
                    for m, o in zip(methods, outs, strict=True)
                )
            )
        if on_problem is not None:
            on_problem(cells)
    return cells


def save(cells: dict[tuple[str, str], Cell], path: str, meta: dict[str, Any]) -> None:
    data = {"meta": meta, "cells": {f"{lv}|{m}": [o.__dict__ for o in c.outcomes] for (lv, m), c in cells.items()}}
    Path(path).write_text(json.dumps(data, indent=1))


def load_cells(path: str) -> tuple[dict[tuple[str, str], Cell], dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    cells = {}
    for key, outs in data["cells"].items():
        level, method = key.split("|")
        cells[(level, method)] = Cell([Outcome(**o) for o in outs])
    return cells, data["meta"]


def table(cells: dict[tuple[str, str], Cell], k: int, expect: dict[str, float] | None = None) -> list[str]:
    head = "| level | method | n | accuracy | tokens / problem | provider calls / problem | wall ms / problem |"
    sep = "|---|---|---|---|---|---|---|"
    if expect is not None:
        head += " analytic | z |"
        sep += "---|---|"
    lines = [head, sep]
    for level in (*LEVELS, "all"):
        for method in ("single", f"vote@{k}", "mcts"):
            if level == "all":
                outs = [o for (lv, m), c in cells.items() if m == method for o in c.outcomes]
                if not outs:
                    continue
                r = Cell(outs).row()
            elif (level, method) in cells:
                r = cells[(level, method)].row()
            else:
                continue
            line = (
                f"| {level} | {method} | {int(r['n'])} | {r['accuracy']:.3f} | {r['tokens']:.1f} | "
                f"{r['calls']:.2f} | {r['wall_s'] * 1000:.0f} |"
            )
            if expect is not None:
                exp = expect.get(f"{level}:{method}")
                if exp is None:
                    line += " | |"
                else:
                    se = math.sqrt(max(exp * (1 - exp), 1e-9) / r["n"])
                    line += f" {exp:.3f} | {(r['accuracy'] - exp) / se:+.2f} |"
            lines.append(line)
    return lines


# --- providers ----------------------------------------------------------------------------------

P_BY_LEVEL = {"easy": 0.6, "medium": 0.4, "hard": 0.25}
SCRIPTED_REPLY = "Working through it carefully step by step gives this. Final answer: {answer}"


def wrong_answers(answer: Fraction) -> list[str]:
    return [format_number(v) for v in (answer + 1, answer - 2, answer * 2 + 3)]


async def run_scripted(problems: Sequence[Problem], k: int, width: int, depth: int) -> list[str]:
    import re

    from masterx.router.v1 import router_pb2_grpc
    from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
    from masterx_runtime.testing.grpc_server import serving
    from masterx_runtime.testing.servers import offline_router_env, start_mongo, start_redis
    from services.reasoning.router_client import RouterCompleter
    from services.router.app import RouterApp

    s = 16  # scripted replies are 12 tokens
    rules = [
        ReplyRule(
            match=re.escape(p.question),
            reply=SCRIPTED_REPLY.format(answer=p.answer_text),
            correct_probability=P_BY_LEVEL[p.level],
            wrong_replies=[SCRIPTED_REPLY.format(answer=w) for w in wrong_answers(p.answer)],
        )
        for p in problems
    ]
    redis, mongo = start_redis(), start_mongo()
    try:
        async with FakeLLMServer() as fake:
            fake.configure("scripted", ProviderBehavior(rules=rules, seed=SEED))
            env = {
                **offline_router_env(redis.url, mongo.url, "bench_reasoning_accuracy"),
                "ROUTER_PROVIDERS_JSON": json.dumps([fake.provider_entry("scripted")]),
            }
            async with serving(RouterApp(env)) as (_, chan):
                completer = RouterCompleter(router_pb2_grpc.RouterServiceStub(chan), call_timeout=30.0)
                started = time.perf_counter()
                cells = await evaluate(completer, problems, k=k, s=s, width=width, depth=depth)
                wall = time.perf_counter() - started
    finally:
        redis.stop()
        mongo.stop()
    expect: dict[str, float] = {}
    for level in LEVELS:
        for method, value in analytic(P_BY_LEVEL[level], k).items():
            expect[f"{level}:{method}"] = value
    for method in ("single", f"vote@{k}", "mcts"):
        expect[f"all:{method}"] = sum(expect[f"{lv}:{method}"] for lv in LEVELS) / len(LEVELS)
    return [
        f"Scripted fake provider through the real router: p(correct per sample) = "
        f"{', '.join(f'{lv} {p}' for lv, p in P_BY_LEVEL.items())}; k = {k}, width {width}, depth {depth}, "
        f"S = {s} tokens; {len(problems)} problems; total {wall:.1f} s.",
        "",
        *table(cells, k, expect),
    ]


class LocalCompleter:
    """The router's local provider (SmolLM2-135M, llama.cpp) called in-process."""

    def __init__(self, threads: int) -> None:
        from services.router.providers.local import LocalLlamaProvider, local_spec

        self.provider = LocalLlamaProvider(local_spec(threads=threads, max_tokens=512))

    async def start(self) -> None:
        if not await self.provider.wait_ready(300):
            raise SystemExit(f"local model unavailable: {self.provider.unavailable_reason()}")

    async def complete(
        self,
        messages: list[tuple[str, str]],
        *,
        purpose: str,
        max_tokens: int,
        deadline: float,
        temperature: float | None = None,
    ) -> Completion:
        from services.router.providers.base import ChatRequest, Message

        request = ChatRequest(
            tuple(Message(role, content) for role, content in messages), max_tokens=max_tokens, temperature=temperature
        )
        done = await self.provider.complete(request, timeout=600)
        usage = CallUsage(done.usage.input_tokens, done.usage.output_tokens, 0.0, "local", done.model, True)
        return Completion(done.text, usage)


def subset(problems: Sequence[Problem], per_level: int, levels: Sequence[str] = LEVELS) -> list[Problem]:
    out: list[Problem] = []
    for level in levels:
        out.extend([p for p in problems if p.level == level][:per_level])
    return out


async def run_local(
    problems: Sequence[Problem], k: int, width: int, depth: int, s: int, threads: int, json_path: str
) -> list[str]:
    completer = LocalCompleter(threads)
    await completer.start()
    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    meta = {"k": k, "width": width, "depth": depth, "s": s, "threads": threads, "problems": len(problems)}

    def progress(cells: dict[tuple[str, str], Cell]) -> None:
        if json_path:
            save(cells, json_path, meta | {"wall_s": time.perf_counter() - started})

    cells = await evaluate(completer, problems, k=k, s=s, width=width, depth=depth, log=log, on_problem=progress)
    wall = time.perf_counter() - started
    await completer.provider.close()
    return [
        f"Local SmolLM2-135M-Instruct (llama.cpp, {threads} thread(s)): {len(problems)} problems "
        f"(first of each level, kinds interleaved); k = {k}, width {width}, depth {depth}, "
        f"S = {s} tokens; total {wall:.0f} s.",
        "",
        *table(cells, k),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("provider", choices=("scripted", "local", "problems", "table"))
    ap.add_argument("--k", type=int, default=4, help="samples per problem for vote and MCTS (default 4)")
    ap.add_argument("--width", type=int, default=2, help="MCTS width (children per expansion; default 2)")
    ap.add_argument("--depth", type=int, default=1, help="MCTS depth (default 1: every step must answer)")
    ap.add_argument("--tokens", type=int, default=64, help="local: tokens per sample S (default 64)")
    ap.add_argument("--subset", type=int, default=8, help="local: problems per level (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="local: llama.cpp threads (default 1)")
    ap.add_argument("--levels", default=",".join(LEVELS), help="local: levels to run (default all three)")
    ap.add_argument("--json", default="", help="local: write every outcome to this file (after each problem)")
    args = ap.parse_args()
    problems = make_problems()
    print(f"MasterX reasoning accuracy ({machine()})")
    print(f"problem set: {len(problems)} problems, seed {SEED}, {len(problems) // 3} per level")
    print()
    if args.provider == "problems":
        for p in problems:
            print(f"{p.pid}\t{p.question}\t{p.answer_text}")
        return
    if args.provider == "table":  # the table of a (possibly partial) local run's --json file
        cells, meta = load_cells(args.json)
        n = len(next(iter(cells.values())).outcomes) if cells else 0
        print(f"from {args.json}: {meta}, {n} problems per level done")
        print("\n".join(table(cells, int(meta["k"]))))
        return
    if args.provider == "scripted":
        lines = asyncio.run(run_scripted(problems, args.k, args.width, args.depth))
    else:
        lines = asyncio.run(
            run_local(
                subset(problems, args.subset, args.levels.split(",")),
                args.k,
                args.width,
                args.depth,
                args.tokens,
                args.threads,
                args.json,
            )
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
