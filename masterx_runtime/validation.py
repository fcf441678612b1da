"""Input rules shared by the gateway and every service: the user id rule, text caps, number ranges.

The rules live in ``input_limits.json`` beside this file. :func:`check_request` walks a protobuf
request (nested messages, repeated and map fields) and raises :class:`InvalidArgument` naming the
first field that breaks a rule: a string or bytes value over its cap, a repeated field with too
many elements, a float that is NaN or infinite, a number outside its configured range, or a
``user_id``/``student_id`` that does not match the user id rule. The server interceptor
(:class:`masterx_runtime.interceptors.RuntimeInterceptor`) applies it to every RPC of a server
(request streams message by message, :func:`checked_stream`), before the handler; the service's
own, more specific checks run after it.

What to check is worked out once per field and per message type (:class:`Rules` keeps the plans):
a message type none of whose fields can break a rule (only enums, bools, unbounded integers and
such messages, nothing repeated) is not walked at all.

The gateway uses the same constants (:data:`USER_ID_PATTERN`, :data:`USER_ID_MAX_CHARS`) in its
pydantic models, so an id the gateway accepts is one every service accepts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from masterx_runtime.errors import InvalidArgument

RULES_FILE = Path(__file__).with_name("input_limits.json")

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)
UINT32_RANGE = (0, 2**32 - 1)
UINT64_RANGE = (0, 2**64 - 1)
_MAX_DEPTH = 32

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_INTS = (
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
)


@dataclass(frozen=True)
class Rules:
    """The parsed rules file."""

    user_id_pattern: str
    user_id_max_chars: int
    user_id_fields: frozenset[str]
    max_string_chars: int
    max_bytes: int
    max_items: int
    string_caps: dict[str, int] = field(default_factory=dict)
    field_caps: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: per-field check plans, filled on first use (one dict lookup per field afterwards)
    plans: dict[FieldDescriptor, _Plan] = field(default_factory=dict, compare=False, repr=False)
    #: per message type: whether any field of it (or of a message inside) can break a rule
    walks: dict[Descriptor, bool] = field(default_factory=dict, compare=False, repr=False)
    #: per message type: the fields to check, read one by one (see ``_fields_of``)
    types: dict[Descriptor, tuple[_Field, ...] | None] = field(default_factory=dict, compare=False, repr=False)

    @property
    def user_id_re(self) -> re.Pattern[str]:
        return _compiled(self.user_id_pattern)

    def string_cap(self, fd: FieldDescriptor) -> int:
        if fd.full_name in self.field_caps:
            return self.field_caps[fd.full_name]
        if fd.name in self.user_id_fields:
            return self.user_id_max_chars
        return self.string_caps.get(fd.name, self.max_string_chars)


@lru_cache(maxsize=8)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def load_rules(path: Path = RULES_FILE) -> Rules:
    raw = json.loads(path.read_text(encoding="utf-8"))
    uid, defaults = raw["user_id"], raw["defaults"]
    return Rules(
        user_id_pattern=str(uid["pattern"]),
        user_id_max_chars=int(uid["max_chars"]),
        user_id_fields=frozenset(uid["fields"]),
        max_string_chars=int(defaults["max_string_chars"]),
        max_bytes=int(defaults["max_bytes"]),
        max_items=int(defaults["max_items"]),
        string_caps={str(k): int(v) for k, v in (raw.get("strings") or {}).items()},
        field_caps={str(k): int(v["max_chars"]) for k, v in (raw.get("fields") or {}).items()},
        numbers={str(k): (float(v[0]), float(v[1])) for k, v in (raw.get("numbers") or {}).items()},
    )


RULES = load_rules()
#: The user id rule (regular expression) every service and the gateway apply.
USER_ID_PATTERN = RULES.user_id_pattern
USER_ID_MAX_CHARS = RULES.user_id_max_chars
USER_ID_RE = RULES.user_id_re


def user_id_problem(value: str) -> str:
    """Why ``value`` is not a valid user id ("" when it is; the empty string is "missing")."""
    if not value:
        return "is empty"
    if len(value) > USER_ID_MAX_CHARS:
        return f"is longer than {USER_ID_MAX_CHARS} characters"
    if not USER_ID_RE.match(value):
        return "may contain only letters, digits and _ . : @ - (1-128 characters)"
    return ""


def check_user_id(value: str, field_name: str = "user_id", *, required: bool = False) -> str:
    """``value`` when it follows the user id rule (or is empty and not required); else InvalidArgument."""
    if not value and not required:
        return value
    problem = user_id_problem(value)
    if problem:
        raise InvalidArgument(f"{field_name} {problem}", reason="INVALID_USER_ID", field=field_name)
    return value


def check_text(value: str, field_name: str, max_chars: int, *, required: bool = False) -> str:
    """``value`` when it is at most ``max_chars`` characters (and not blank when required)."""
    if required and not value.strip():
        raise InvalidArgument(f"{field_name} is empty", reason="EMPTY_FIELD", field=field_name)
    if len(value) > max_chars:
        raise InvalidArgument(
            f"{field_name} is longer than {max_chars} characters ({len(value)})", reason="TOO_LONG", field=field_name
        )
    return value


def check_number(value: float, field_name: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` when it is finite and within [low, high]."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{field_name} must be a finite number", reason="NOT_FINITE", field=field_name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgument(
            f"{field_name} must be between {low} and {high} (got {value})",
            reason="OUT_OF_RANGE",
            field=field_name,
        )
    return value


@dataclass(frozen=True)
class Violation:
    field: str
    message: str
    reason: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"{self.field}: {self.message}", reason=self.reason, field=self.field)


_STR, _BYTES, _FLOAT, _INT, _MSG, _OTHER = range(6)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to check on one field, worked out once per field descriptor."""

    kind: int
    cap: int = 0
    bounds: tuple[float, float] | None = None
    user_id: re.Pattern[str] | None = None
    repeated: bool = False
    map_key: _Plan | None = None
    map_value: _Plan | None = None
    #: whether a value (each element, when repeated) can break a rule; False for enums, bools,
    #: integers without bounds and messages whose type has nothing to check
    values: bool = True


def _plan(fd: FieldDescriptor, rules: Rules, visiting: set[Descriptor] | None = None) -> _Plan:
    plan = rules.plans.get(fd)
    if plan is not None:
        return plan
    kind = fd.type
    entry = fd.message_type if kind == FieldDescriptor.TYPE_MESSAGE else None
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        plan = _Plan(_MSG, repeated=True, map_key=_plan(key, rules, visiting), map_value=_plan(value, rules, visiting))
    elif kind == FieldDescriptor.TYPE_STRING:
        user_id = rules.user_id_re if fd.name in rules.user_id_fields else None
        plan = _Plan(_STR, rules.string_cap(fd), user_id=user_id, repeated=fd.is_repeated)
    elif kind == FieldDescriptor.TYPE_BYTES:
        plan = _Plan(_BYTES, rules.max_bytes, repeated=fd.is_repeated)
    elif kind in _FLOATS:
        plan = _Plan(_FLOAT, bounds=rules.numbers.get(fd.full_name), repeated=fd.is_repeated)
    elif kind in _INTS:
        bounds = rules.numbers.get(fd.full_name)
        plan = _Plan(_INT, bounds=bounds, repeated=fd.is_repeated, values=bounds is not None)
    elif entry is not None:
        plan = _Plan(_MSG, repeated=fd.is_repeated, values=_walks(entry, rules, visiting))
    else:  # enums and bools: nothing to check, not even the number of elements
        plan = _Plan(_OTHER, values=False)
    rules.plans[fd] = plan
    return plan


def _walks(descriptor: Descriptor, rules: Rules, visiting: set[Descriptor] | None = None) -> bool:
    """Whether a message of this type can break a rule at all (cached per type).

    A type met again while working it out (a recursive type) counts as "yes", so it is walked
    and the depth limit applies ("no" is always exact; only recursive types nest that deep).
    """
    known = rules.walks.get(descriptor)
    if known is not None:
        return known
    visiting = set() if visiting is None else visiting
    if descriptor in visiting:
        return True
    visiting.add(descriptor)
    found = False
    for fd in descriptor.fields:
        plan = _plan(fd, rules, visiting)
        if plan.repeated or plan.values:
            found = True
            break
    visiting.discard(descriptor)
    rules.walks[descriptor] = found
    return found


def _scalar(plan: _Plan, value: Any, rules: Rules) -> tuple[str, str] | None:
    """(message, reason) when a scalar value breaks its rule."""
    kind = plan.kind
    if kind == _STR:
        if len(value) > plan.cap:
            return f"longer than {plan.cap} characters ({len(value)})", "TOO_LONG"
        if plan.user_id is not None and value and not plan.user_id.match(value):
            return user_id_problem(value), "INVALID_USER_ID"
        return None
    if kind == _BYTES:
        if len(value) > plan.cap:
            return f"longer than {plan.cap} bytes ({len(value)})", "TOO_LONG"
        return None
    if kind == _FLOAT and not math.isfinite(value):
        return "must be a finite number (no NaN or infinity)", "NOT_FINITE"
    bounds = plan.bounds
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        return f"must be between {bounds[0]:g} and {bounds[1]:g} (got {value:g})", "OUT_OF_RANGE"
    return None


#: (field name, its plan, whether to ask HasField before reading it)
_Field = tuple[str, _Plan, bool]


def _fields_of(descriptor: Descriptor, rules: Rules) -> tuple[_Field, ...] | None:
    """The fields of a message type that can break a rule, in field-number order (the order of
    ``ListFields``), or None when messages of this type are walked with ``ListFields``.

    Reading just these with ``getattr`` finds what walking ``ListFields`` finds: an unset
    string, bytes, number or repeated field holds its default (empty, 0), which no rule rejects,
    and unset message fields are skipped by asking ``HasField``. Where that would not hold, the
    type keeps the ``ListFields`` walk: a number whose range excludes 0 (an unset one must not be
    checked, and a proto3 -0.0 counts as set), and types with extensions.
    """
    known = rules.types.get(descriptor, False)
    if known is not False:
        return known  # type: ignore[return-value]
    fields: list[_Field] | None = []
    if descriptor.extension_ranges:
        fields = None
    for fd in sorted(descriptor.fields, key=lambda f: f.number):
        if fields is None:
            break
        plan = _plan(fd, rules)
        if not plan.repeated and not plan.values:
            continue
        if plan.repeated or plan.kind in (_STR, _BYTES):
            fields.append((fd.name, plan, False))
        elif plan.kind == _MSG:
            fields.append((fd.name, plan, True))
        elif plan.bounds is None or plan.bounds[0] <= 0 <= plan.bounds[1]:
            fields.append((fd.name, plan, False))
        elif fd.has_presence:
            fields.append((fd.name, plan, True))
        else:
            fields = None
    result = None if fields is None else tuple(fields)
    rules.types[descriptor] = result
    return result


def _first(message: Message, rules: Rules, depth: int) -> Violation | None:
    """The first rule ``message`` breaks (depth-first, in field order), or None.

    The violation's field is relative to ``message`` ('' for the message itself); the callers
    prepend their part on the way out, so no path is built while nothing is wrong.
    """
    if depth > _MAX_DEPTH:
        return Violation("", f"nested deeper than {_MAX_DEPTH} levels", "TOO_DEEP")
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    fields = rules.types.get(descriptor, False)
    if fields is False:
        fields = _fields_of(descriptor, rules)  # type: ignore[arg-type]
    if fields is None:
        return _first_listed(message, rules, depth)
    isfinite = math.isfinite
    for name, plan, presence in fields:  # type: ignore[union-attr]
        if presence and not message.HasField(name):
            continue
        value = getattr(message, name)
        kind = plan.kind
        if not plan.repeated:
            if kind == _STR:  # the common cases inline: a string within its cap, not a user id to match
                if len(value) <= plan.cap and (plan.user_id is None or not value or plan.user_id.match(value)):
                    continue
            elif kind == _FLOAT:  # a finite float without a range
                if plan.bounds is None and isfinite(value):
                    continue
            elif kind == _INT:  # an integer in its range (only bounded ones are here)
                bounds = plan.bounds
                if bounds is not None and bounds[0] <= value <= bounds[1]:
                    continue
            elif kind == _MSG:
                if (found := _first(value, rules, depth + 1)) is not None:
                    return _under(name, found)
                continue
            if (bad := _scalar(plan, value, rules)) is not None:
                return Violation(name, *bad)
        elif value and (found := _repeated(plan, name, value, rules, depth)) is not None:
            return found
    return None


def _first_listed(message: Message, rules: Rules, depth: int) -> Violation | None:
    """:func:`_first` for the types :func:`_fields_of` leaves to ``ListFields``."""
    plans = rules.plans
    for fd, value in message.ListFields():
        plan = plans.get(fd) or _plan(fd, rules)
        if not plan.repeated:
            if not plan.values:
                continue
            if plan.kind == _MSG:
                if (found := _first(value, rules, depth + 1)) is not None:
                    return _under(fd.name, found)
            elif (bad := _scalar(plan, value, rules)) is not None:
                return Violation(fd.name, *bad)
        elif (found := _repeated(plan, fd.name, value, rules, depth)) is not None:
            return found
    return None


def _repeated(plan: _Plan, name: str, value: Any, rules: Rules, depth: int) -> Violation | None:
    """The first rule a (non-empty) repeated or map field breaks."""
    if len(value) > rules.max_items:
        what = "entries" if plan.map_key is not None else "elements"
        return Violation(name, f"has more than {rules.max_items} {what} ({len(value)})", "TOO_MANY")
    if plan.map_key is not None and plan.map_value is not None:
        key_plan, value_plan = plan.map_key, plan.map_value
        for key, item in value.items():
            if (bad := _scalar(key_plan, key, rules)) is not None:
                return Violation(f"{name}[{key!r}]", *bad)
            if value_plan.kind == _MSG:
                if value_plan.values and (found := _first(item, rules, depth + 1)) is not None:
                    return _under(f"{name}[{key!r}]", found)
            elif (bad := _scalar(value_plan, item, rules)) is not None:
                return Violation(f"{name}[{key!r}]", *bad)
    elif not plan.values:
        pass
    elif plan.kind == _MSG:
        for i, item in enumerate(value):
            if (found := _first(item, rules, depth + 1)) is not None:
                return _under(f"{name}[{i}]", found)
    else:
        for i, item in enumerate(value):
            if (bad := _scalar(plan, item, rules)) is not None:
                return Violation(f"{name}[{i}]", *bad)
    return None


def _under(head: str, found: Violation) -> Violation:
    """``found`` (relative to a field's message) as seen from the message holding the field."""
    return Violation(f"{head}.{found.field}" if found.field else head, found.message, found.reason)


def _top(found: Violation | None) -> Violation | None:
    if found is not None and not found.field:
        return Violation("request", found.message, found.reason)
    return found


def request_violations(message: Message, rules: Rules = RULES) -> list[Violation]:
    """The first rule ``message`` breaks, as a list (empty when it is fine)."""
    found = _top(_first(message, rules, 0))
    return [] if found is None else [found]


def check_request(message: Any, rules: Rules = RULES) -> None:
    """Raise InvalidArgument for the first rule a protobuf request breaks; anything else passes."""
    if not isinstance(message, Message):
        return
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    walks = rules.walks.get(descriptor)
    if walks is None:
        walks = _walks(descriptor, rules)
    if walks and (found := _top(_first(message, rules, 0))) is not None:
        raise found.error()


def unknown_rule_fields(descriptors: list[Descriptor], rules: Rules = RULES) -> list[str]:
    """Full field names in the rules file that none of ``descriptors`` (and their nested types) has."""
    known: set[str] = set()
    pending = list(descriptors)
    while pending:
        d = pending.pop()
        known.update(f.full_name for f in d.fields)
        pending.extend(d.nested_types)
    return sorted(n for n in (*rules.field_caps, *rules.numbers) if n not in known)


async def checked_stream(requests: AsyncIterator[Any], rules: Rules = RULES) -> AsyncIterator[Any]:
    """The messages of a request stream, each checked with :func:`check_request` as it arrives."""
    async for message in requests:
        check_request(message, rules)
        yield message
