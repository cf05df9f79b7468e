"""The event catalog: every event type the platform publishes, what it means, the JSON Schema
of its `data`, and a realistic sample.

The catalog documents; it does not gate. An event of a type not listed here is routed like
any other, unless a subscription asks for strict schema validation (`strict_schema`), in
which case only listed types whose `data` validates are delivered to it. `docs/events.md`
is generated from this module (`python -m tools.events_doc`), and a test keeps the two equal.
"""

from __future__ import annotations

import functools
from typing import Final

import jsonschema

from service.catalog.calls import CALLS
from service.catalog.model import EventType
from service.catalog.operations import OPERATIONS
from service.catalog.people import PEOPLE

_CATALOG: Final[tuple[EventType, ...]] = (*CALLS, *PEOPLE, *OPERATIONS)
BY_TYPE: Final = {t.type: t for t in _CATALOG}


def catalog() -> tuple[EventType, ...]:
    return _CATALOG


@functools.cache
def _validator(event_type: str) -> jsonschema.Draft202012Validator | None:
    entry = BY_TYPE.get(event_type)
    if entry is None:
        return None
    return jsonschema.Draft202012Validator(
        entry.schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def schema_error(event_type: str, data: object) -> str | None:
    """Why `data` does not fit the catalog's schema for `event_type`, or None if it does.
    An unlisted type cannot be validated and is an error for this question."""
    validator = _validator(event_type)
    if validator is None:
        return f"{event_type!r} is not in the event catalog"
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = "".join(f".{p}" for p in error.absolute_path)
    return f"data{where}: {error.message}"[:300]
