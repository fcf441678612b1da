"""Pull the code a tutor's answer proposes out of its prose and fenced blocks."""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_NOT_PYTHON = {
    "bash",
    "sh",
    "shell",
    "console",
    "text",
    "txt",
    "output",
    "plaintext",
    "json",
    "yaml",
    "sql",
    "js",
    "javascript",
    "java",
    "c",
    "cpp",
    "c++",
    "go",
    "rust",
    "ts",
    "typescript",
    "html",
    "css",
}


def _defines(code: str, name: str) -> bool:
    return (
        re.search(
            rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(|^\s*{re.escape(name)}\s*=|^\s*class\s+{re.escape(name)}\b",
            code,
            re.MULTILINE,
        )
        is not None
    )


def _compiles(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def extract_code(answer: str, entry_point: str) -> tuple[str, str]:
    """The code to test and how it was found; ("", reason) when the answer has none.

    Preference: the last fenced Python block that defines ``entry_point`` (answers often show
    the student's buggy version first, then the fix), then all Python blocks joined, then the
    whole answer if it is valid Python on its own.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(answer)]
    python_blocks = [body for lang, body in blocks if lang not in _NOT_PYTHON]
    defining = [i for i, body in enumerate(python_blocks) if _defines(body, entry_point)]
    if defining:
        index = defining[-1]
        return python_blocks[index], f"fenced block {index + 1} of {len(python_blocks)} defining {entry_point}"
    if python_blocks:
        joined = "\n\n".join(python_blocks)
        return joined, f"{len(python_blocks)} fenced block(s) joined (none defines {entry_point})"
    if _defines(answer, entry_point) and _compiles(answer):
        return answer, "whole answer is Python"
    return "", "no code block found"
