"""What a service's image must contain: the modules ``python -m services.<name>`` can import.

Starting at ``services/<name>/__main__.py`` we follow first-party imports (``masterx``,
``masterx_runtime``, ``services``) through the source with :mod:`ast`, including imports inside
functions (they run later, but they run). Imports guarded by ``try: ... except ImportError`` and
``if TYPE_CHECKING:`` blocks are optional. The result: every first-party file the service needs
and every third-party distribution it imports, to compare with the image's COPY lines and its
requirement file.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.deploy.manifests import REPO

FIRST_PARTY = ("masterx", "masterx_runtime", "services")
_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
#: A distribution whose metadata is not in this venv but installs the same modules as another.
SAME_MODULES_AS = {"onnxruntime-gpu": "onnxruntime"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Closure:
    files: set[Path] = field(default_factory=set)
    #: third-party top-level module -> first-party files importing it (required imports only)
    third_party: dict[str, set[str]] = field(default_factory=dict)
    optional: set[str] = field(default_factory=set)


def module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, bool]] = []
        self._optional = 0

    def _guarded(self, node: ast.Try) -> bool:
        for handler in node.handlers:
            names = []
            if handler.type is None:
                return True
            for t in handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]:
                if isinstance(t, ast.Name):
                    names.append(t.id)
            if _GUARDS & set(names):
                return True
        return False

    def visit_Try(self, node: ast.Try) -> None:
        guarded = self._guarded(node)
        self._optional += guarded
        for stmt in node.body:
            self.visit(stmt)
        self._optional -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, self._optional > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        self.found.append((target, self._optional > 0))
        for alias in node.names:  # `from pkg import submodule`
            self.found.append((f"{target}.{alias.name}", self._optional > 0))


@functools.cache
def closure(entry: str) -> Closure:
    """Files and third-party imports reachable from module ``entry`` (e.g. services.emotion.__main__)."""
    result = Closure()
    todo = [entry]
    seen: set[str] = set()
    stdlib = set(sys.stdlib_module_names)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(parts[:i]))
        path = module_file(module)
        if path is None:
            continue
        result.files.add(path)
        collector = _Collector(module, path.name == "__init__.py")
        collector.visit(ast.parse(path.read_text(), str(path)))
        rel = str(path.relative_to(REPO))
        for name, optional in collector.found:
            top = name.split(".")[0]
            if not top or top in stdlib or top == "__future__":
                continue
            if top in FIRST_PARTY:
                if module_file(name) is not None:
                    todo.append(name)
                continue
            if optional:
                result.optional.add(top)
            else:
                result.third_party.setdefault(top, set()).add(rel)
    return result


# --------------------------------------------------------------------------- distributions


@functools.cache
def _module_to_dists() -> dict[str, set[str]]:
    return {mod: {canonical(d) for d in dists} for mod, dists in md.packages_distributions().items()}


def distributions_of(module: str) -> set[str]:
    return _module_to_dists().get(module, set())


def requirement_closure(specs: list[str]) -> set[str]:
    """Canonical names of the listed distributions and everything they depend on (per this venv)."""
    out: set[str] = set()
    todo = [Requirement(s) for s in specs]
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in out:
            continue
        out.add(key)
        out.add(name)
        lookup = SAME_MODULES_AS.get(name, name)  # its dependencies, not its name
        try:
            requires = md.requires(lookup) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            if dep.marker is not None:
                ok = any(dep.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""}))
                if not ok:
                    continue
            todo.append(dep)
    return {n for n in out if "[" not in n}
