"""The shared input rules' check plans (masterx_runtime.validation): what is skipped, what is not.

The walk is planned once per field and per message type: a type none of whose fields can break
a rule is not walked. These pin what that must not change: enums and bools (repeated or not)
are never limited, a repeated message field is limited even when its type has nothing to check,
recursive types are still walked so the depth limit applies, and violation paths name the field
through nested, repeated and map fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from masterx_runtime.errors import InvalidArgument
from masterx_runtime.validation import RULES, Rules, _fields_of, _walks, check_request, request_violations

FDP = descriptor_pb2.FieldDescriptorProto


def _types() -> dict[str, Any]:
    f = descriptor_pb2.FileDescriptorProto(name="masterx_plans_test.proto", package="plans.test", syntax="proto3")
    color = f.enum_type.add(name="Color")
    color.value.add(name="RED", number=0)
    color.value.add(name="BLUE", number=1)

    flags = f.message_type.add(name="Flags")
    flags.field.add(
        name="colors", number=1, type=FDP.TYPE_ENUM, type_name=".plans.test.Color", label=FDP.LABEL_REPEATED
    )
    flags.field.add(name="on", number=2, type=FDP.TYPE_BOOL, label=FDP.LABEL_OPTIONAL)
    flags.field.add(name="n", number=3, type=FDP.TYPE_INT32, label=FDP.LABEL_OPTIONAL)

    node = f.message_type.add(name="Node")
    node.field.add(
        name="child", number=1, type=FDP.TYPE_MESSAGE, type_name=".plans.test.Node", label=FDP.LABEL_OPTIONAL
    )
    node.field.add(name="c", number=2, type=FDP.TYPE_ENUM, type_name=".plans.test.Color", label=FDP.LABEL_OPTIONAL)

    holder = f.message_type.add(name="Holder")
    holder.field.add(
        name="flags", number=1, type=FDP.TYPE_MESSAGE, type_name=".plans.test.Flags", label=FDP.LABEL_OPTIONAL
    )
    holder.field.add(
        name="many", number=2, type=FDP.TYPE_MESSAGE, type_name=".plans.test.Flags", label=FDP.LABEL_REPEATED
    )
    holder.field.add(name="s", number=3, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    entry = holder.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)
    entry.field.add(
        name="value", number=2, type=FDP.TYPE_MESSAGE, type_name=".plans.test.Holder", label=FDP.LABEL_OPTIONAL
    )
    holder.field.add(
        name="by_name",
        number=4,
        type=FDP.TYPE_MESSAGE,
        type_name=".plans.test.Holder.ByNameEntry",
        label=FDP.LABEL_REPEATED,
    )
    holder.field.add(
        name="nodes", number=5, type=FDP.TYPE_MESSAGE, type_name=".plans.test.Node", label=FDP.LABEL_REPEATED
    )

    ranged = f.message_type.add(name="Ranged")
    ranged.field.add(name="level", number=1, type=FDP.TYPE_INT32, label=FDP.LABEL_OPTIONAL)
    ranged.field.add(name="weight", number=2, type=FDP.TYPE_DOUBLE, label=FDP.LABEL_OPTIONAL, proto3_optional=True)
    ranged.oneof_decl.add(name="_weight")
    ranged.field[1].oneof_index = 0
    ranged.field.add(name="note", number=3, type=FDP.TYPE_STRING, label=FDP.LABEL_OPTIONAL)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {
        name: GetMessageClass(pool.FindMessageTypeByName(f"plans.test.{name}"))
        for name in ("Flags", "Node", "Holder", "Ranged")
    }


T = _types()
Flags, Node, Holder, Ranged = T["Flags"], T["Node"], T["Holder"], T["Ranged"]


def walked(cls: Any) -> bool:
    return _walks(cls.DESCRIPTOR, RULES)


def _violation(message: Message) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        check_request(message)
    found = request_violations(message)
    assert len(found) == 1 and found[0].field == caught.value.field
    return caught.value.field, caught.value.reason


def test_what_is_walked() -> None:
    assert walked(Flags) is False  # enums, bools, unbounded integers only
    assert walked(Node) is True  # recursive: walked, so the depth limit applies
    assert walked(Holder) is True
    assert walked(struct_pb2.Struct) is True


def test_enums_and_bools_have_no_element_limit() -> None:
    check_request(Flags(colors=[1] * (RULES.max_items + 10), on=True, n=-5))
    check_request(Holder(flags=Flags(colors=[1] * (RULES.max_items + 10))))


def test_a_repeated_field_is_limited_even_when_its_type_has_nothing_to_check() -> None:
    assert _violation(Holder(many=[Flags()] * (RULES.max_items + 1))) == ("many", "TOO_MANY")
    big = Holder()
    for i in range(RULES.max_items + 1):
        big.by_name[f"k{i}"].s = "x"
    with pytest.raises(InvalidArgument, match=r"by_name: has more than \d+ entries"):
        check_request(big)


def test_paths_through_nested_repeated_and_map_fields() -> None:
    too_long = "x" * (RULES.max_string_chars + 1)
    assert _violation(Holder(s=too_long)) == ("s", "TOO_LONG")
    h = Holder()
    h.by_name["a"].by_name["b"].s = too_long
    assert _violation(h) == ("by_name['a'].by_name['b'].s", "TOO_LONG")
    h = Holder()
    h.many.add()
    h.by_name["a"].many.add()
    h.by_name["a"].by_name["b"].many.extend([Flags()] * (RULES.max_items + 1))
    assert _violation(h) == ("by_name['a'].by_name['b'].many", "TOO_MANY")
    h = Holder()
    h.by_name["x" * 200_000].s = "fine"
    field, reason = _violation(h)
    assert reason == "TOO_LONG" and field.startswith("by_name['xxx")


def test_recursive_types_stop_at_the_depth_limit_with_the_path() -> None:
    root = Node()
    node = root
    for _ in range(40):
        node = node.child
        node.c = 1
    assert _violation(root) == (".".join(["child"] * 33), "TOO_DEEP")
    h = Holder()
    h.nodes.add().child.child.c = 1
    check_request(h)  # a shallow recursive value is fine

    s = struct_pb2.Struct()
    inner = s
    for _ in range(20):
        inner = inner.fields["a"].struct_value
    field, reason = _violation(s)
    assert reason == "TOO_DEEP"
    assert field == "fields['a']" + ".struct_value.fields['a']" * 16


def _ranged_rules(level: tuple[float, float], weight: tuple[float, float]) -> Rules:
    numbers = {**RULES.numbers, "plans.test.Ranged.level": level, "plans.test.Ranged.weight": weight}
    return dataclasses.replace(RULES, numbers=numbers, plans={}, walks={}, types={})


def _reason(message: Message, rules: Rules) -> str:
    with pytest.raises(InvalidArgument) as caught:
        check_request(message, rules)
    return f"{caught.value.field} {caught.value.reason}"


def test_ranges_that_exclude_zero_check_only_the_numbers_that_are_set() -> None:
    rules = _ranged_rules((1, 5), (0.5, 2.0))
    # an implicit-presence number whose range excludes 0: the type keeps the ListFields walk
    assert _fields_of(Ranged.DESCRIPTOR, rules) is None
    check_request(Ranged(), rules)  # unset level (0) and unset weight are not checked
    check_request(Ranged(level=3, weight=1.0, note="n"), rules)
    assert _reason(Ranged(level=9), rules) == "level OUT_OF_RANGE"
    assert _reason(Ranged(level=3, weight=0.0), rules) == "weight OUT_OF_RANGE"  # set to 0: checked
    negative_zero = Ranged()
    negative_zero.level = 3
    negative_zero.weight = -0.0
    assert _reason(negative_zero, rules) == "weight OUT_OF_RANGE"

    # ranges that hold 0: fields read one by one, an optional one only when set
    rules = _ranged_rules((-1, 5), (0.5, 2.0))
    fields = _fields_of(Ranged.DESCRIPTOR, rules)
    assert fields is not None and [(name, presence) for name, _, presence in fields] == [
        ("level", False),
        ("weight", True),
        ("note", False),
    ]
    check_request(Ranged(), rules)
    assert _reason(Ranged(weight=0.0), rules) == "weight OUT_OF_RANGE"
    assert _reason(Ranged(level=-2), rules) == "level OUT_OF_RANGE"
    assert _fields_of(Flags.DESCRIPTOR, RULES) == ()
