"""Reasoning service settings (environment) and its config files (YAML next to this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from masterx_runtime.config import ConfigError, env, settings

HERE = Path(__file__).resolve().parent


@settings("reasoning")
class ReasoningSettings:
    budget_factors_file: str = env(
        "REASONING_BUDGET_FACTORS_FILE",
        "",
        "Token budget factors YAML (empty = the packaged `services/reasoning/budget_factors.yaml`).",
    )
    complexity_model_file: str = env(
        "REASONING_COMPLEXITY_MODEL_FILE",
        "",
        "Fitted complexity estimator JSON (empty = the packaged `budget/complexity_model.json`; refit with `python -m services.reasoning.budget.fit`).",
    )
    practice_config_file: str = env(
        "REASONING_PRACTICE_CONFIG_FILE",
        "",
        "Complexity budget YAML: skill costs, mastery multipliers, recency rules, bounds (empty = packaged `practice.yaml`).",
    )
    search_config_file: str = env(
        "REASONING_SEARCH_CONFIG_FILE",
        "",
        "MCTS defaults, strategy order and priors, reward constants (empty = packaged `search.yaml`).",
    )
    default_max_wall_ms: int = env(
        "REASONING_DEFAULT_MAX_WALL_MS", 60000, "Wall-clock limit of a search when the request sets none.", minimum=100
    )
    default_max_tokens: int = env(
        "REASONING_DEFAULT_MAX_TOKENS",
        16000,
        "Generated-token limit of a search when neither the request nor its budget sets one.",
        minimum=16,
    )
    default_max_cost_usd: float = env(
        "REASONING_DEFAULT_MAX_COST_USD",
        0.0,
        "Cost limit of a search when the request sets none (0 = only the router's budgets).",
        minimum=0,
    )
    step_max_tokens: int = env(
        "REASONING_STEP_MAX_TOKENS", 256, "Output tokens one reasoning step may use.", minimum=16
    )
    step_temperature: float = env(
        "REASONING_STEP_TEMPERATURE",
        0.7,
        "Sampling temperature for steps (siblings must differ).",
        minimum=0,
        maximum=2,
    )
    judge_enabled: bool = env(
        "REASONING_JUDGE_ENABLED",
        True,
        "Score uncheckable steps with a judge model through the router (else the heuristic).",
    )
    judge_provider: str = env(
        "REASONING_JUDGE_PROVIDER", "", "Router provider pinned for judging (empty = the router decides)."
    )
    max_parallelism: int = env(
        "REASONING_MAX_PARALLELISM", 16, "Most concurrent router calls one search may make.", minimum=1, maximum=64
    )
    controller_config_file: str = env(
        "REASONING_CONTROLLER_CONFIG_FILE",
        "",
        "Metacognitive controller YAML: threshold, emotion and outcome adjustments, limits (empty = packaged `controller.yaml`).",
    )
    chain_ttl_seconds: int = env(
        "REASONING_CHAIN_TTL_SECONDS",
        2592000,
        "How long stored turns (decision and reasoning chain) are kept (TTL index; default 30 days).",
        minimum=1,
    )
    chain_max_nodes: int = env(
        "REASONING_CHAIN_MAX_NODES", 200, "Most tree nodes stored per chain (the best path is always kept).", minimum=1
    )
    chain_max_chars: int = env(
        "REASONING_CHAIN_MAX_CHARS", 2000, "Longest step text stored in a chain (longer ones are cut).", minimum=16
    )
    mongo_retry_seconds: float = env(
        "REASONING_MONGO_RETRY_SECONDS",
        1.0,
        "Wait between MongoDB connection attempts at start-up (health stays NOT_SERVING).",
        minimum=0.05,
    )


def _path(value: str, default: str) -> Path:
    return Path(value) if value else HERE / default


def load_yaml(value: str, default: str) -> dict[str, Any]:
    """A config file as a mapping; a missing or malformed file is a ConfigError (exit code 2)."""
    path = _path(value, default)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    return data


def complexity_model_path(cfg: ReasoningSettings) -> Path:
    return Path(cfg.complexity_model_file) if cfg.complexity_model_file else HERE / "budget" / "complexity_model.json"
