"""A subscription held against the event catalog: what matches nothing, what can never work.

The catalog documents; it does not gate (service/catalog/entries.py). So an event type or a
path the catalog does not know is accepted, with a warning naming it (and the closest
catalogued name), since upstream may publish more than the catalog lists. What can never
work is refused: `strict_schema` delivers only catalogued types, so with an uncatalogued type
every matching event would be a dead letter; and a filter whose value has another JSON type
than the catalogued field drops every event (`"30"` against a number).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, Final

from service.catalog.entries import BY_TYPE, catalog
from service.catalog.model import EventType
from service.catalog.schemas import Schema
from service.delivery.templates import references
from service.routing.filters import Filter
from service.subscriptions.model import InvalidSubscription, Subscription

# Filter operators whose value is compared with the field's value, so its type must fit.
_TYPED_OPS: Final = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"})


def catalog_check(sub: Subscription) -> list[str]:
    """The warnings for what matches nothing in the catalog; raise InvalidSubscription for
    what can never work."""
    warnings: list[str] = []
    unknown = [p for p in sub.event_types if not _covered(p)]
    for pattern in unknown:
        warnings.append(f"event_types: {pattern!r} matches no type in the event catalog"
                        f"{_closest(pattern, _TYPE_NAMES)}")  # fmt: skip
    if sub.strict_schema and unknown:
        raise InvalidSubscription(
            "strict_schema",
            f"{', '.join(map(repr, unknown))} is not in the event catalog, and strict_schema "
            "delivers only catalogued types: every such event would become a dead letter",
        )
    covered = [t for t in catalog() if any(type_matches(p, t.type) for p in sub.event_types)]
    if not covered:
        return warnings  # nothing catalogued to hold the paths against
    known = sorted({p for t in covered for p in _paths(t.schema, "data")})
    for where, path in _used_paths(sub):
        if path.startswith("data.") and not any(_at(t, path) is not None for t in covered):
            warnings.append(f"{where}: {path} is in no catalogued schema of the subscribed "
                            f"types{_closest(path, known)}")  # fmt: skip
    for i, f in enumerate(sub.filters):
        problem = _type_mismatch(f, covered)
        if problem is None:
            continue
        if unknown:  # an uncatalogued type may carry the field with that type
            warnings.append(f"filters: [{i}].value: {problem}")
        else:
            raise InvalidSubscription("filters", f"[{i}].value: {problem}")
    return warnings


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _covered(pattern: str) -> bool:
    return any(type_matches(pattern, t) for t in BY_TYPE)


_TYPE_NAMES: Final = sorted({*BY_TYPE, *(t.split(".", 1)[0] + ".*" for t in BY_TYPE)})


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and "." not in word:  # "call" for "call.*"
        close = [c for c in choices if c.startswith(word + ".")][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _used_paths(sub: Subscription) -> Iterator[tuple[str, str]]:
    yield from references(sub.body_template, "body_template")
    for name, value in sub.headers.items():
        yield from references(value, f"headers.{name}")
    for path in sub.body_fields or ():
        yield "body_fields", path
    for i, f in enumerate(sub.filters):
        yield f"filters[{i}].path", f.path


def _paths(schema: Schema, prefix: str) -> Iterator[str]:
    for key, sub in (schema.get("properties") or {}).items():
        yield f"{prefix}.{key}"
        yield from _paths(sub, f"{prefix}.{key}")


def _at(entry: EventType, path: str) -> Schema | None:
    """The schema of the field at `path` (data.a.b) in a type's data; None if undeclared."""
    schema: Schema = entry.schema
    for key in path.split(".")[1:]:
        if key.isdigit() and schema.get("type") == "array":
            schema = schema.get("items") or {}
            continue
        props = schema.get("properties")
        if not props or key not in props:
            return None
        schema = props[key]
    return schema


def _json_types(schema: Schema) -> set[str] | None:
    """The JSON types a schema allows; None when it does not say."""
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _json_type(value: Any) -> str:
    match value:
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
    return "null"


def _fits(value: Any, allowed: set[str]) -> bool:
    kind = _json_type(value)
    if kind == "null":
        return True  # null is its own question (an explicit null in the data)
    if kind == "integer" and "number" in allowed:
        return True
    if kind == "number" and "integer" in allowed and float(value).is_integer():
        return True
    return kind in allowed


def _type_mismatch(f: Filter, covered: list[EventType]) -> str | None:
    if f.op not in _TYPED_OPS or not f.path.startswith("data."):
        return None
    allowed: set[str] = set()
    for entry in covered:
        schema = _at(entry, f.path)
        if schema is None:
            continue
        types = _json_types(schema)
        if types is None:
            return None  # some type allows anything here
        allowed |= types
    if not allowed:
        return None
    values = f.value if f.op in ("in", "not_in") and isinstance(f.value, list) else [f.value]
    wrong = [v for v in values if not _fits(v, allowed)]
    if not wrong:
        return None
    hint = (
        " (send it unquoted)"
        if allowed & {"integer", "number"} and isinstance(wrong[0], str)
        else ""
    )
    return (
        f"{f.path} is {' or '.join(sorted(allowed))} in the event catalog, and {wrong[0]!r} "
        f"is {_json_type(wrong[0])}: it would never match{hint}"
    )
