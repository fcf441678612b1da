"""Protobuf <-> JSON with friendly enum names.

HTTP clients see ``"frustrated"`` instead of ``"LEARNING_STATE_FRUSTRATED"``: an enum value's name
loses the enum's common prefix and is lower-cased. Both directions use the descriptors, so
any message of the contracts converts the same way.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


@cache
def _prefix(enum: EnumDescriptor) -> str:
    """The prefix shared by an enum's value names, e.g. ``LEARNING_STATE_``."""
    names = [v.name for v in enum.values]
    first = names[0]
    cut = first.rfind("_UNSPECIFIED")
    if cut > 0:
        return first[: cut + 1]
    # Enums whose zero value is not *_UNSPECIFIED (e.g. REWARD_MODEL_AUTO): longest common "X_" prefix.
    common = first
    for name in names[1:]:
        while not name.startswith(common):
            common = common[:-1]
    return common[: common.rfind("_") + 1]


@cache
def _to_friendly(enum: EnumDescriptor) -> dict[int, str]:
    prefix = _prefix(enum)
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.values}


@cache
def _from_friendly(enum: EnumDescriptor) -> dict[str, int]:
    prefix = _prefix(enum)
    out: dict[str, int] = {}
    for v in enum.values:
        out[v.name.removeprefix(prefix).lower()] = v.number
        out[v.name.lower()] = v.number
    return out


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """Friendly name of an enum value (``"unspecified"`` for 0)."""
    return _to_friendly(enum).get(number, str(number))


def enum_value(enum: EnumDescriptor, name: str) -> int:
    """Enum number from a friendly or full name; ValueError listing the choices otherwise."""
    table = _from_friendly(enum)
    key = name.strip().lower()
    if key not in table:
        choices = ", ".join(n for n in _to_friendly(enum).values() if n != "unspecified")
        raise ValueError(f"unknown value {name!r}; expected one of: {choices}")
    return table[key]


def enum_choices(enum: EnumDescriptor) -> list[str]:
    """Friendly names of an enum, without the zero ``unspecified`` value."""
    return [n for n in _to_friendly(enum).values() if n != "unspecified"]


def _value_to_json(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_dict(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64):
        return int(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def to_dict(msg: Message) -> dict[str, Any]:
    """Message as a JSON-ready dict: every field present (defaults too), messages unset -> None."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value_to_json(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value_to_json(field, v) for v in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE or field.has_presence:
            out[field.name] = _value_to_json(field, value) if msg.HasField(field.name) else None
        else:
            out[field.name] = _value_to_json(field, value)
    return out


def _friendly_to_proto_json(descriptor: Any, data: Any, path: str) -> Any:
    """Rewrite friendly enum names in ``data`` into numbers ParseDict accepts."""
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'body'}: expected an object")
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is None or value is None:
            out[key] = value
            continue
        where = f"{path}.{key}" if path else key
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            out[key] = value
        elif field.is_repeated and isinstance(value, list):
            out[key] = [_field_from_json(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _field_from_json(field, value, where)
    return out


def _field_from_json(field: Any, value: Any, where: str) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        try:
            return enum_value(field.enum_type, value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _friendly_to_proto_json(field.message_type, value, where)
    return value


def from_dict(data: Any, cls: type[M]) -> M:
    """Build a message from JSON with friendly enum names; ValueError with the field path otherwise."""
    prepared = _friendly_to_proto_json(cls.DESCRIPTOR, data, "")
    msg = cls()
    try:
        json_format.ParseDict(prepared, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None
    return msg
