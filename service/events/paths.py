"""Dotted paths into an event: `type`, `tenant_id`, `data.contact.phoneNumber`, `data.items.0`.

The one way filters, body templates, field lists, header templates and success conditions
name a value. A path is parsed once, when the subscription is saved, into a tuple of keys
and list indexes; resolving it is a loop of dict and list lookups, no code is evaluated.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Final

from service.events.envelope import Event

MAX_PATH_LENGTH: Final = 256
MAX_DEPTH: Final = 16
# The envelope fields a path may start with besides `data`.
ENVELOPE: Final = ("id", "type", "source", "tenant_id", "timestamp", "time")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_\-]{1,100}")
MISSING: Final = object()

Path = tuple[str | int, ...]


class InvalidPath(ValueError):
    pass


def parse(path: str, *, envelope: bool = True) -> Path:
    """Parse a dotted path; `envelope=False` for paths into other documents (a response)."""
    if not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidPath(f"{path[:40]!r}: a path is 1..{MAX_PATH_LENGTH} characters")
    parts = path.split(".")
    if len(parts) > MAX_DEPTH:
        raise InvalidPath(f"{path!r}: at most {MAX_DEPTH} levels")
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            raise InvalidPath(f"{path!r}: segments are letters, digits, _ or -, split by dots")
    if envelope and parts[0] not in (*ENVELOPE, "data"):
        raise InvalidPath(f"{path!r}: starts with data or one of {', '.join(ENVELOPE)}")
    if envelope and parts[0] != "data" and len(parts) > 1:
        raise InvalidPath(f"{path!r}: {parts[0]} has no fields")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def resolve(doc: Any, path: Path) -> Any:
    """The value at `path` in a decoded JSON document, or MISSING."""
    for key in path:
        if isinstance(doc, dict):
            doc = doc.get(str(key), MISSING)
        elif isinstance(doc, list) and isinstance(key, int):
            doc = doc[key] if key < len(doc) else MISSING
        else:
            return MISSING
        if doc is MISSING:
            return MISSING
    return doc


Getter = Callable[[Event], Any]
_ENVELOPE_ATTRS: Final = {"id": "id", "type": "type", "source": "source", "tenant_id": "tenant_id",
                          "timestamp": "time", "time": "time"}  # fmt: skip


def getter(path: Path) -> Getter:
    """The value at `path` in an event (its envelope fields, or a field of its data, or
    MISSING), as a function made once per path: what templates and filters call per event."""
    if path[0] != "data":
        return operator.attrgetter(_ENVELOPE_ATTRS[str(path[0])])
    rest = path[1:]
    if not rest:
        return lambda event: event.data
    if len(rest) == 1 and isinstance(rest[0], str):
        key = rest[0]
        return lambda event: event.data.get(key, MISSING)
    return lambda event: resolve(event.data, rest)
