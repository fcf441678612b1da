"""Provider discovery: the providers file, API keys in the environment, and the local default.

Order: entries of ``ROUTER_PROVIDERS_FILE`` / ``ROUTER_PROVIDERS_JSON`` first; then, with
``ROUTER_DISCOVER_ENV_KEYS``, one provider per well-known key that is set (unless a file entry
already has that name); then the local SmolLM2 provider when ``ROUTER_LOCAL_PROVIDER`` is
``on``, or ``auto`` and nothing else was configured. Keys are read from the environment only
(the file names the variable, never the key) and never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from masterx_runtime.config import ConfigError
from services.router.classifier.model import CATEGORIES
from services.router.config import RouterSettings
from services.router.providers.anthropic import AnthropicProvider
from services.router.providers.base import Provider, ProviderSpec
from services.router.providers.gemini import GeminiProvider
from services.router.providers.http import HttpClient
from services.router.providers.local import LocalLlamaProvider, local_spec
from services.router.providers.openai import OpenAIProvider

log = logging.getLogger("masterx.router.providers")

KINDS = ("openai", "anthropic", "gemini", "local")
QUALITY_KEYS = ("default", *CATEGORIES)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

#: Providers added when their key is in the environment (prices: list prices per 1M tokens).
ENV_DEFAULTS: tuple[dict[str, Any], ...] = (
    {
        "name": "openai",
        "kind": "openai",
        "api_key_env": "OPENAI_API_KEY",
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "input_price_per_mtok": 0.15,
        "output_price_per_mtok": 0.60,
        "context_window": 128000,
        "max_output_tokens": 4096,
    },
    {
        "name": "anthropic",
        "kind": "anthropic",
        "api_key_env": "ANTHROPIC_API_KEY",
        "base_url": "https://api.anthropic.com",
        "model": "claude-3-5-haiku-latest",
        "input_price_per_mtok": 0.80,
        "output_price_per_mtok": 4.00,
        "context_window": 200000,
        "max_output_tokens": 4096,
    },
    {
        "name": "gemini",
        "kind": "gemini",
        "api_key_env": "GEMINI_API_KEY",
        "base_url": "https://generativelanguage.googleapis.com/v1beta",
        "model": "gemini-2.0-flash",
        "input_price_per_mtok": 0.10,
        "output_price_per_mtok": 0.40,
        "context_window": 1000000,
        "max_output_tokens": 4096,
    },
    {
        "name": "groq",
        "kind": "openai",
        "api_key_env": "GROQ_API_KEY",
        "base_url": "https://api.groq.com/openai/v1",
        "model": "llama-3.1-8b-instant",
        "input_price_per_mtok": 0.05,
        "output_price_per_mtok": 0.08,
        "context_window": 131072,
        "max_output_tokens": 4096,
        "speed": 90,
    },
)

_FIELDS = {
    "name": str,
    "kind": str,
    "model": str,
    "base_url": str,
    "api_key_env": str,
    "input_price_per_mtok": float,
    "output_price_per_mtok": float,
    "context_window": int,
    "max_output_tokens": int,
    "rpm": int,
    "tpm": int,
    "timeout_seconds": float,
    "daily_budget_usd": float,
    "speed": float,
}
_EXTRA = {"quality", "headers", "options", "enabled"}


def parse_spec(entry: Mapping[str, Any], where: str) -> ProviderSpec | None:
    """One providers-file entry -> ProviderSpec (None when ``enabled: false``); ConfigError otherwise."""
    problems: list[str] = []
    unknown = set(entry) - set(_FIELDS) - _EXTRA
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if "api_key" in entry:
        problems.append(f"{where}: put the key in an environment variable and name it in api_key_env")
    values: dict[str, Any] = {}
    for key, typ in _FIELDS.items():
        if key not in entry or entry[key] is None:
            continue
        try:
            values[key] = typ(entry[key])
        except (TypeError, ValueError):
            problems.append(f"{where}: {key} must be a {typ.__name__}")
    name = values.get("name", "")
    if not _NAME_RE.match(name):
        problems.append(f"{where}: name {name!r} must be 1-64 letters, digits, '_', '-', '.'")
    kind = values.get("kind", "")
    if kind not in KINDS:
        problems.append(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
    if kind != "local" and not values.get("base_url"):
        problems.append(f"{where}: base_url is required for kind {kind!r}")
    if kind != "local" and not values.get("model"):
        problems.append(f"{where}: model is required")
    for key in ("input_price_per_mtok", "output_price_per_mtok", "rpm", "tpm", "daily_budget_usd"):
        if values.get(key, 0) < 0:
            problems.append(f"{where}: {key} must be >= 0")
    for key in ("context_window", "max_output_tokens"):
        if key in values and values[key] < 1:
            problems.append(f"{where}: {key} must be >= 1")
    quality = entry.get("quality", {})
    if isinstance(quality, int | float):
        quality = {"default": float(quality)}
    if not isinstance(quality, dict) or not all(isinstance(v, int | float) and 0 <= v <= 100 for v in quality.values()):
        problems.append(f"{where}: quality must be a number 0-100 or a map category -> 0-100")
        quality = {}
    for key in ("headers", "options"):
        if not isinstance(entry.get(key, {}), dict):
            problems.append(f"{where}: {key} must be a map")
    if problems:
        raise ConfigError(problems)
    if entry.get("enabled", True) is False:
        return None
    if kind == "local":
        values.setdefault("model", "SmolLM2-135M-Instruct")
    return ProviderSpec(
        **values,
        quality={str(k).lower(): float(v) for k, v in quality.items()},
        headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
        options=dict(entry.get("options") or {}),
    )


def _document(text: str, source: str) -> list[Any]:
    try:
        data = yaml.safe_load(text) if not source.endswith(".json") else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError([f"{source}: not valid YAML/JSON: {exc}"]) from None
    if isinstance(data, dict):
        data = data.get("providers")
    if not isinstance(data, list):
        raise ConfigError([f"{source}: expected a list of providers or {{providers: [...]}}"])
    return data


def load_specs(cfg: RouterSettings, environ: Mapping[str, str] | None = None) -> list[ProviderSpec]:
    """Every configured provider, validated; raises ConfigError listing all problems."""
    env = os.environ if environ is None else environ
    entries: list[tuple[str, Any]] = []
    if cfg.providers_file:
        path = Path(cfg.providers_file)
        if not path.is_file():
            raise ConfigError([f"ROUTER_PROVIDERS_FILE={cfg.providers_file!r}: no such file"])
        doc = _document(path.read_text(encoding="utf-8"), str(path))
        entries += [(f"{path.name}[{i}]", e) for i, e in enumerate(doc)]
    if cfg.providers_json:
        doc = _document(cfg.providers_json, "ROUTER_PROVIDERS_JSON.json")
        entries += [(f"ROUTER_PROVIDERS_JSON[{i}]", e) for i, e in enumerate(doc)]
    specs: list[ProviderSpec] = []
    problems: list[str] = []
    for where, entry in entries:
        if not isinstance(entry, dict):
            problems.append(f"{where}: each provider must be a map")
            continue
        try:
            spec = parse_spec(entry, where)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if spec is not None:
            specs.append(spec)
    raw_names = [str(e.get("name")) for _, e in entries if isinstance(e, dict) and e.get("name")]
    problems += [f"provider name {n!r} is used twice" for n in sorted({n for n in raw_names if raw_names.count(n) > 1})]
    names = [s.name for s in specs]
    for spec in specs:
        if spec.api_key_env and not env.get(spec.api_key_env):
            log.warning("provider key variable not set", extra={"provider": spec.name, "variable": spec.api_key_env})
    if problems:
        raise ConfigError(problems)
    if cfg.discover_env_keys:
        for default in ENV_DEFAULTS:
            if env.get(default["api_key_env"]) and default["name"] not in names:
                spec = parse_spec(default, f"env {default['api_key_env']}")
                assert spec is not None
                specs.append(spec)
    wants_local = cfg.local_provider == "on" or (cfg.local_provider == "auto" and not specs)
    if wants_local and "local" not in {s.name for s in specs}:
        specs.append(
            local_spec(
                "local",
                cfg.local_model_path,
                cfg.local_threads,
                cfg.local_context_tokens,
                cfg.local_max_tokens,
                cfg.local_timeout_seconds,
            )
        )
    if not specs:
        raise ConfigError(["no providers configured (set ROUTER_PROVIDERS_FILE, an API key, or ROUTER_LOCAL_PROVIDER)"])
    return specs


def build_provider(spec: ProviderSpec, client: HttpClient, environ: Mapping[str, str] | None = None) -> Provider:
    env = dict(os.environ if environ is None else environ)
    if spec.kind == "openai":
        return OpenAIProvider(spec, client, env)
    if spec.kind == "anthropic":
        return AnthropicProvider(spec, client, env)
    if spec.kind == "gemini":
        return GeminiProvider(spec, client, env)
    if spec.kind == "local":
        return LocalLlamaProvider(spec)
    raise ConfigError([f"provider {spec.name}: unknown kind {spec.kind!r}"])
