"""Static reading of deploy/docker/Dockerfile, its .dockerignore and the requirement files.

There is no Docker engine on the CI machines, so the images cannot be built here; these helpers
let tests check what a build would do: stages and their parents, what each stage copies, which
user it runs as, and which files the build context really contains.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.manifests import REPO

DOCKER = REPO / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
REQUIREMENTS = DOCKER / "requirements"


@dataclass
class Instruction:
    op: str
    args: str
    line: int

    def words(self) -> list[str]:
        return shlex.split(self.args)

    def json_or_words(self) -> list[str]:
        text = self.args.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return self.words()


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def ops(self, op: str) -> list[Instruction]:
        return [i for i in self.instructions if i.op == op]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, name: str) -> list[Stage]:
        """The stage and its ancestors, nearest first (FROM <stage> inherits its image)."""
        out = []
        stage: Stage | None = self.stages[name]
        while stage is not None:
            out.append(stage)
            stage = self.stages.get(stage.base)
        return out

    def root_image(self, name: str) -> str:
        """The registry image a stage ultimately starts from, with ARG defaults substituted."""
        return self._subst(self.chain(name)[-1].base)

    def effective(self, name: str, op: str) -> list[Instruction]:
        """Instructions ``op`` of the stage and its ancestors, in build order."""
        return [i for st in reversed(self.chain(name)) for i in st.ops(op)]

    def user(self, name: str) -> str | None:
        users = self.effective(name, "USER")
        return users[-1].args.strip() if users else None

    def env(self, name: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.effective(name, "ENV"):
            for word in ins.words():
                key, _, value = word.partition("=")
                out[key] = value
        return out

    def _subst(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comment lines (also inside continuations)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(b for b in buf if b)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for number, line in _logical_lines(path.read_text()):
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and current is None:
            key, _, value = rest.strip().partition("=")
            args[key] = value
            continue
        if op == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            current = stages[name] = Stage(name, base)
            continue
        if current is None:
            raise ValueError(f"{path}:{number}: {op} before FROM")
        current.instructions.append(Instruction(op, rest, number))
    return Dockerfile(args, stages)


def copy_sources(ins: Instruction) -> tuple[str | None, list[str], str]:
    """(--from stage or None, sources, destination) of a COPY instruction."""
    words = ins.json_or_words() if ins.args.strip().startswith("[") else ins.words()
    from_stage = None
    paths = []
    for w in words:
        if w.startswith("--from="):
            from_stage = w.split("=", 1)[1]
        elif not w.startswith("--"):
            paths.append(w)
    return from_stage, paths[:-1], paths[-1]


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
            continue
        ch = pattern[i]
        out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
        i += 1
    return re.compile(out)


class DockerIgnore:
    """Docker's rules: patterns match a path or any parent; the last matching pattern wins."""

    def __init__(self, path: Path = DOCKERIGNORE) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            self.rules.append((negate, _pattern_regex(line.lstrip("!"))))

    def excluded(self, rel_path: str) -> bool:
        parts = rel_path.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, rx in self.rules:
            if any(rx.fullmatch(c) for c in candidates):
                result = not negate
        return result


def in_context(rel_path: str, ignore: DockerIgnore | None = None) -> bool:
    """True when the file exists in the repository and the build context sends it."""
    ignore = ignore or DockerIgnore()
    return (REPO / rel_path).exists() and not ignore.excluded(rel_path)


# --------------------------------------------------------------------------- requirement files


def requirement_lines(path: Path) -> list[str]:
    """Requirement specifiers of a file, following ``-r`` includes."""
    out: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += requirement_lines(path.parent / line.split(None, 1)[1])
            continue
        out.append(line)
    return out


def canonical_name(requirement: str) -> str:
    """The canonical distribution name of one requirement line (``Foo_Bar[x]>=1`` -> ``foo-bar``)."""
    from packaging.requirements import Requirement

    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()
