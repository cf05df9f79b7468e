"""Field filters: which of the events of a subscribed type a subscription wants.

A subscription's `filters` is a list of conditions, all of which must hold:

    {"path": "data.agent.id", "op": "eq", "value": "agent_12345"}
    {"path": "data.campaign_id", "op": "in", "value": ["camp_a", "camp_b"]}
    {"path": "data.call.duration", "op": "gt", "value": 60}

Operators: eq, ne, in, not_in, gt, gte, lt, lte, exists (value true or false), contains (a
string contains a substring, or a list contains a value). Equality is JSON equality (1 equals
1.0, true does not equal 1). Ordering compares numbers with numbers and strings with strings;
any other pair is false. A path that is absent satisfies only `exists: false`, `ne` and
`not_in`. Conditions are parsed when the subscription is saved and evaluated with dict lookups
and comparisons; nothing is evaluated as code.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec

from service.events.envelope import Event
from service.events.paths import MISSING, InvalidPath, Path, getter, parse

MAX_FILTERS: Final = 20
MAX_IN_VALUES: Final = 1000
OPS: Final = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "contains")
_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


_VALUE: Final = f"in/not_in: a list of 1..{MAX_IN_VALUES}"


class Filter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The Meta is for the OpenAPI schema; compile_filters checks every part, saying what is wrong.
    path: Annotated[str, msgspec.Meta(examples=["data.agent.id"])]
    op: Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(OPS)})]
    value: Annotated[Any, msgspec.Meta(description=_VALUE)] = None


class InvalidFilter(ValueError):
    pass


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: bools are not numbers, numbers compare by value, containers deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _number(a) and _number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def _ordered(a: Any, b: Any, compare: Callable[[Any, Any], bool]) -> bool:
    if (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return compare(a, b)
    return False


class Condition:
    __slots__ = ("get", "op", "path", "value")

    def __init__(self, path: Path, op: str, value: Any) -> None:
        self.path = path
        self.get = getter(path)
        self.op = op
        self.value = value

    def holds(self, event: Event) -> bool:
        found = self.get(event)
        op, value = self.op, self.value
        if op == "exists":
            return (found is not MISSING) is value
        if found is MISSING:
            return op in ("ne", "not_in")
        match op:
            case "eq":
                return json_equal(found, value)
            case "ne":
                return not json_equal(found, value)
            case "in":
                return any(json_equal(found, v) for v in value)
            case "not_in":
                return not any(json_equal(found, v) for v in value)
            case "contains":
                if isinstance(found, str):
                    return isinstance(value, str) and value in found
                return isinstance(found, list) and any(json_equal(item, value) for item in found)
        return _ordered(found, value, _ORDER[op])


def compile_filters(filters: tuple[Filter, ...]) -> tuple[Condition, ...]:
    """Parse and check every condition; raise InvalidFilter naming the first that cannot work."""
    if len(filters) > MAX_FILTERS:
        raise InvalidFilter(f"at most {MAX_FILTERS} conditions")
    out = []
    for i, f in enumerate(filters):
        try:
            path = parse(f.path)
        except InvalidPath as exc:
            raise InvalidFilter(f"[{i}].path: {exc}") from None
        if f.op not in OPS:
            raise InvalidFilter(f"[{i}].op: one of {', '.join(OPS)}")
        value = f.value
        if f.op in ("in", "not_in") and (
            not isinstance(value, list) or not 0 < len(value) <= MAX_IN_VALUES
        ):
            raise InvalidFilter(f"[{i}].value: a list of 1..{MAX_IN_VALUES} values")
        if f.op == "exists" and not isinstance(value, bool):
            raise InvalidFilter(f"[{i}].value: true or false")
        if f.op in _ORDER and not (_number(value) or isinstance(value, str)):
            raise InvalidFilter(f"[{i}].value: a number or a string")
        if f.op == "contains" and value is None:
            raise InvalidFilter(f"[{i}].value: required")
        out.append(Condition(path, f.op, value))
    return tuple(out)


def matches(conditions: tuple[Condition, ...], event: Event) -> bool:
    return all(c.holds(event) for c in conditions)


def failing(conditions: tuple[Condition, ...], event: Event) -> int | None:
    """The index of the first condition the event fails, or None when all hold: what the
    routing decision names for a filtered event."""
    for i, condition in enumerate(conditions):
        if not condition.holds(event):
            return i
    return None


def path_text(path: Path) -> str:
    return ".".join(str(key) for key in path)
