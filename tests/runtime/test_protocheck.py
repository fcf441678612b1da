"""The breaking-change check keeps field numbers and RPC shapes stable."""

from __future__ import annotations

import copy
import json

from masterx_runtime import protocheck


def test_current_protos_are_compatible_with_the_lock() -> None:
    locked = json.loads(protocheck.LOCK.read_text())
    assert protocheck.breaking_changes(locked, protocheck.snapshot()) == []


def test_renumbered_removed_retyped_and_reused_fields_are_breaking() -> None:
    old = protocheck.snapshot()
    key = "message masterx.common.v1.PAD"
    assert old[key]["pleasure"]["number"] == 1

    renumbered = copy.deepcopy(old)
    renumbered[key]["pleasure"]["number"] = 9
    assert any("pleasure changed" in p for p in protocheck.breaking_changes(old, renumbered))

    removed_and_reused = copy.deepcopy(old)
    del removed_and_reused[key]["pleasure"]
    removed_and_reused[key]["valence"] = {"number": 1, "type": 1, "repeated": False}
    problems = protocheck.breaking_changes(old, removed_and_reused)
    assert any("pleasure (#1) was removed and its number reused by valence" in p for p in problems)

    retyped_rpc = copy.deepcopy(old)
    rpcs = retyped_rpc["service masterx.router.v1.RouterService"]
    rpcs["Generate"] = [*rpcs["Generate"][:3], True]
    assert any("Generate changed" in p for p in protocheck.breaking_changes(old, retyped_rpc))


def test_additions_are_compatible() -> None:
    old = protocheck.snapshot()
    new = copy.deepcopy(old)
    new["message masterx.common.v1.PAD"]["certainty"] = {"number": 4, "type": 1, "repeated": False}
    new["message masterx.common.v1.NewThing"] = {}
    assert protocheck.breaking_changes(old, new) == []
