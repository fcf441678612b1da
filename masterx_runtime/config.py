"""Typed configuration from environment variables.

Every setting is a dataclass field declared with :func:`env`, which records the variable
name, default and description in :data:`REGISTRY`. That registry feeds the README's
configuration table and the deploy checks, so a variable the code reads is always documented.
Loading collects *all* problems and raises one :class:`ConfigError` with a readable message.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, dataclass_transform

C = TypeVar("C")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class EnvSpec:
    """Metadata of one environment variable."""

    name: str
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    secret: bool = False
    section: str = ""


REGISTRY: dict[str, EnvSpec] = {}


class ConfigError(Exception):
    """Raised with every invalid or missing setting listed, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def env(
    name: str,
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field read from environment variable ``name``."""
    spec = EnvSpec(name, default, doc, minimum, maximum, choices, secret)
    return dataclasses.field(default=default, metadata={"env": spec})


@dataclass_transform(frozen_default=True)
def settings(section: str) -> Any:
    """Class decorator: make a frozen dataclass and register its variables under ``section``."""

    def wrap(cls: type[C]) -> type[C]:
        dc = cls if dataclasses.is_dataclass(cls) else dataclass(frozen=True)(cls)
        for f in dataclasses.fields(dc):  # type: ignore[arg-type]
            spec: EnvSpec | None = f.metadata.get("env")
            if spec is not None:
                REGISTRY[spec.name] = dataclasses.replace(spec, section=section)
        return dc

    return wrap


def _parse(raw: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw == "":
            return None
        return _parse(raw, args[0])
    if typ is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected a boolean (1/0, true/false, yes/no, on/off)")
    if typ is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if typ is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if origin is tuple:
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def load(cls: type[C], environ: Mapping[str, str] | None = None, **defaults: Any) -> C:
    """Build ``cls`` from ``environ`` (default ``os.environ``).

    ``defaults`` override declared defaults by field name (e.g. a service's own port).
    """
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec: EnvSpec | None = f.metadata.get("env")
        if spec is None:
            continue
        raw = environ.get(spec.name)
        if raw is None:
            values[f.name] = defaults.get(f.name, f.default)
            continue
        shown = "<hidden>" if spec.secret else repr(raw)
        try:
            value = _parse(raw, hints[f.name])
        except ValueError as exc:
            problems.append(f"{spec.name}={shown}: {exc}")
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            if spec.minimum is not None and value < spec.minimum:
                problems.append(f"{spec.name}={shown}: must be >= {spec.minimum:g}")
                continue
            if spec.maximum is not None and value > spec.maximum:
                problems.append(f"{spec.name}={shown}: must be <= {spec.maximum:g}")
                continue
        if spec.choices is not None and value not in spec.choices:
            problems.append(f"{spec.name}={shown}: must be one of {', '.join(spec.choices)}")
            continue
        values[f.name] = value
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def markdown_table() -> str:
    """The README's configuration table, grouped by section."""
    _import_all_settings()
    lines = ["| variable | default | section | description |", "|---|---|---|---|"]
    for spec in sorted(REGISTRY.values(), key=lambda s: (s.section, s.name)):
        default = "" if spec.default in (None, "") else f"`{spec.default}`"
        if isinstance(spec.default, tuple):
            default = f"`{','.join(spec.default)}`" if spec.default else ""
        lines.append(f"| `{spec.name}` | {default} | {spec.section} | {spec.doc} |")
    return "\n".join(lines)


def _import_all_settings() -> None:
    """Import every module that declares settings so the registry is complete."""
    import importlib
    import pkgutil

    import masterx_runtime

    for mod in pkgutil.walk_packages(masterx_runtime.__path__, "masterx_runtime."):
        if mod.name.endswith(("settings", "config")) or ".stores." in mod.name:
            importlib.import_module(mod.name)
    try:
        import services
    except ImportError:
        return
    for mod in pkgutil.walk_packages(services.__path__, "services."):
        if mod.name.rsplit(".", 1)[-1] in ("config", "settings"):
            importlib.import_module(mod.name)


START, END = "<!-- env-table:start -->", "<!-- env-table:end -->"


def update_readme(path: str = "README.md") -> bool:
    """Rewrite the table between the README's env-table markers; True if it changed."""
    from pathlib import Path

    readme = Path(path)
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{markdown_table()}\n{END}{tail}"
    readme.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    # Run as a script this module is `__main__`; the settings classes register into the
    # importable `masterx_runtime.config`, so use that module's functions.
    from masterx_runtime import config as _config

    if sys.argv[1:] == ["--update-readme"]:
        print("README.md updated" if _config.update_readme() else "README.md already up to date")
    else:
        print(_config.markdown_table())
