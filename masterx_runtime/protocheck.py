"""Breaking-change check for the protobuf contracts (we have no `buf` here).

`lock` writes protos/fields.lock.json: every message field's number, type and label, every
enum value's number, and every RPC's shapes. `check` compares the current descriptors with
that lock: a removed, renumbered or retyped field, a reused number, a changed enum value or a
changed RPC signature fails; additions pass (run `lock` afterwards to record them).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

import masterx

LOCK = Path(__file__).resolve().parent.parent / "protos" / "fields.lock.json"


def _files() -> list[FileDescriptor]:
    out = []
    for mod in pkgutil.walk_packages(masterx.__path__, "masterx."):
        if mod.name.endswith("_pb2"):
            out.append(importlib.import_module(mod.name).DESCRIPTOR)
    return sorted(out, key=lambda f: f.name)


def _enum(e: EnumDescriptor, into: dict[str, Any]) -> None:
    into[f"enum {e.full_name}"] = {v.name: v.number for v in e.values}


def _message(m: Descriptor, into: dict[str, Any]) -> None:
    if m.GetOptions().map_entry:
        return
    fields = {}
    for f in m.fields:
        type_name = f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else f.type)
        fields[f.name] = {"number": f.number, "type": type_name, "repeated": f.is_repeated}
    into[f"message {m.full_name}"] = fields
    for nested in m.nested_types:
        _message(nested, into)
    for e in m.enum_types:
        _enum(e, into)


def snapshot() -> dict[str, Any]:
    """The compatibility-relevant shape of every proto file."""
    out: dict[str, Any] = {}
    for fd in _files():
        for m in fd.message_types_by_name.values():
            _message(m, out)
        for e in fd.enum_types_by_name.values():
            _enum(e, out)
        for s in fd.services_by_name.values():
            out[f"service {s.full_name}"] = {
                rpc.name: [
                    rpc.input_type.full_name,
                    rpc.output_type.full_name,
                    rpc.client_streaming,
                    rpc.server_streaming,
                ]
                for rpc in s.methods
            }
    return out


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every incompatible difference between two snapshots."""
    problems: list[str] = []
    for key, old_body in old.items():
        if key not in new:
            problems.append(f"{key} was removed")
            continue
        new_body = new[key]
        kind = key.split(" ", 1)[0]
        for name, old_val in old_body.items():
            if name not in new_body:
                if kind == "message":
                    reused = [n for n, v in new_body.items() if v["number"] == old_val["number"]]
                    problems.append(
                        f"{key}.{name} (#{old_val['number']}) was removed"
                        + (f" and its number reused by {reused[0]}" if reused else " (reserve it instead)")
                    )
                else:
                    problems.append(f"{key}.{name} was removed")
            elif new_body[name] != old_val:
                problems.append(f"{key}.{name} changed from {old_val} to {new_body[name]}")
        if kind == "message":
            numbers = {v["number"]: n for n, v in old_body.items()}
            for name, val in new_body.items():
                if name not in old_body and val["number"] in numbers:
                    problems.append(f"{key}.{name} reuses number {val['number']} of {numbers[val['number']]}")
    return problems


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "check"
    current = snapshot()
    if cmd == "lock":
        LOCK.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"wrote {LOCK} ({len(current)} entries)")
        return 0
    if not LOCK.exists():
        print(f"{LOCK} missing: run `make proto-lock`", file=sys.stderr)
        return 1
    problems = breaking_changes(json.loads(LOCK.read_text()), current)
    for p in problems:
        print(f"BREAKING: {p}", file=sys.stderr)
    added = sorted(set(current) - set(json.loads(LOCK.read_text())))
    if not problems:
        print(
            f"protos compatible with {LOCK.name}"
            + (f"; {len(added)} new entries (run make proto-lock)" if added else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
