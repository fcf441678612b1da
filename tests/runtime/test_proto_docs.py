"""Every field and enum value of the protobuf contracts carries a `//` comment.

A comment counts when it is on the line directly above the declaration or trailing on the same
line. Files in ``PENDING`` are skipped until their comments are written; empty the set then.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FileDescriptor

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"

#: Protos (paths relative to the repository root) not checked yet.
PENDING: set[str] = set()

_FIELD = re.compile(
    r"^(?:(?:optional|repeated|required)\s+)?(?:map\s*<[^>]*>|[\w.]+)\s+\w+\s*=\s*\d+\s*(?:\[.*\])?\s*;$"
)
_ENUM_VALUE = re.compile(r"^\w+\s*=\s*-?(?:0x[0-9a-fA-F]+|\d+)\s*(?:\[.*\])?\s*;$")
_BLOCK = re.compile(r"\b(message|enum|oneof|service|extend)\b[^{};]*\{|\{|\}")
_FIELD_BLOCKS = {"message", "oneof", "extend"}


def _split_comment(line: str) -> tuple[str, bool]:
    """The code part of a line (outside string literals) and whether a `//` comment follows it."""
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif line.startswith("//", i):
            return line[:i], True
        i += 1
    return line, False


def declarations(text: str) -> list[tuple[int, str, bool]]:
    """Each field and enum value as (1-based line, declaration, documented)."""
    out: list[tuple[int, str, bool]] = []
    stack: list[str] = []
    in_block_comment = False
    previous_is_comment = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        if in_block_comment:
            end = line.find("*/")
            if end < 0:
                previous_is_comment = False
                continue
            line = line[end + 2 :]
            in_block_comment = False
        line = re.sub(r"/\*.*?\*/", " ", line)
        if "/*" in line and "//" not in line.split("/*", 1)[0]:
            line, in_block_comment = line.split("/*", 1)[0], True
        code, trailing = _split_comment(line)
        decl = code.strip()
        kind = stack[-1] if stack else ""
        if decl and (
            (kind in _FIELD_BLOCKS and _FIELD.match(decl) and not decl.startswith(("option ", "reserved ")))
            or (kind == "enum" and _ENUM_VALUE.match(decl) and not decl.startswith(("option ", "reserved ")))
        ):
            out.append((number, decl, trailing or previous_is_comment))
        for match in _BLOCK.finditer(code):
            if match.group(0) == "}":
                if stack:
                    stack.pop()
            else:
                stack.append(match.group(1) or "")
        previous_is_comment = not decl and trailing
    return out


def undocumented(text: str) -> list[tuple[int, str]]:
    """Fields and enum values with no `//` comment directly above or trailing."""
    return [(number, decl) for number, decl, documented in declarations(text) if not documented]


def _checked_protos() -> list[Path]:
    protos = sorted(PROTOS.rglob("*.proto"))
    assert protos, f"no .proto files under {PROTOS}"
    return [p for p in protos if p.relative_to(ROOT).as_posix() not in PENDING]


def test_every_field_and_enum_value_is_documented() -> None:
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{number}: {decl}"
        for path in _checked_protos()
        for number, decl in undocumented(path.read_text())
    ]
    assert not offenders, "fields / enum values without a `//` comment above or trailing:\n" + "\n".join(offenders)


def test_pending_files_exist() -> None:
    missing = sorted(p for p in PENDING if not (ROOT / p).is_file())
    assert not missing, f"PENDING names files that do not exist: {missing}"


def _declared(file: FileDescriptor) -> Counter[str]:
    """Names of the fields and enum values a compiled file declares (map entry messages excluded)."""
    names: Counter[str] = Counter()

    def visit(message: Descriptor) -> None:
        if message.GetOptions().map_entry:
            return
        names.update(f.name for f in message.fields)
        for enum in message.enum_types:
            names.update(v.name for v in enum.values)
        for nested in message.nested_types:
            visit(nested)

    for message in file.message_types_by_name.values():
        visit(message)
    for enum in file.enum_types_by_name.values():
        names.update(v.name for v in enum.values)
    return names


def test_checker_sees_every_declared_field_and_enum_value() -> None:
    """The line parser finds exactly what the compiled descriptors declare, so nothing slips past."""
    for path in _checked_protos():
        module = ".".join(path.relative_to(PROTOS).with_suffix("").parts) + "_pb2"
        declared = _declared(importlib.import_module(module).DESCRIPTOR)
        parsed = Counter(
            re.split(r"\s*=", decl, maxsplit=1)[0].split()[-1] for _, decl, _ in declarations(path.read_text())
        )
        assert parsed == declared, (
            f"{path.name}: the parser and the compiled descriptor disagree: "
            f"parsed only {sorted((parsed - declared).elements())}, declared only {sorted((declared - parsed).elements())}"
        )


_SNIPPET = """\
syntax = "proto3";

// A message.
message Example {
  // Documented above.
  string name = 1;
  optional double score = 2;  // Documented trailing.
  // A map.
  map<string, int32> counts = 3;
  reserved 4;
  // Repeated.
  repeated string tags = 5 [deprecated = true];
  oneof kind {
    // In a oneof.
    string text = 6;
    // Also in a oneof.
    int64 number = 7;
  }
  // Nested.
  enum Level {
    // Zero.
    LEVEL_UNSPECIFIED = 0;
    LEVEL_HIGH = 1; // Trailing.
  }
  // Empty nested message.
  message Inner {}
  // After the nested types.
  Inner inner = 8;
}
"""


def test_fully_documented_snippet_passes() -> None:
    assert len(declarations(_SNIPPET)) == 9
    assert undocumented(_SNIPPET) == []


@pytest.mark.parametrize(
    ("documented", "bare"),
    [
        ("  // Documented above.\n  string name = 1;", "  string name = 1;"),
        ("  optional double score = 2;  // Documented trailing.", "  optional double score = 2;"),
        ("  // A map.\n  map<string, int32> counts = 3;", "  map<string, int32> counts = 3;"),
        (
            "  // Repeated.\n  repeated string tags = 5 [deprecated = true];",
            "  repeated string tags = 5 [deprecated = true];",
        ),
        ("    // Also in a oneof.\n    int64 number = 7;", "    int64 number = 7;"),
        ("    LEVEL_HIGH = 1; // Trailing.", "    LEVEL_HIGH = 1;"),
        ("  // After the nested types.\n  Inner inner = 8;", "  // After the nested types.\n\n  Inner inner = 8;"),
    ],
)
def test_one_undocumented_declaration_is_reported(documented: str, bare: str) -> None:
    assert _SNIPPET.count(documented) == 1
    text = _SNIPPET.replace(documented, bare)
    decl = bare.strip().splitlines()[-1].strip()
    line = text.splitlines().index(bare.splitlines()[-1]) + 1
    assert undocumented(text) == [(line, decl)]
