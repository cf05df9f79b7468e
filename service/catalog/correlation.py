"""Correlation keys: the ids a customer searches the delivery log by ("the call CA123").

Each key has paths into the event tried in order; the first that holds a string or a number
wins. The defaults follow the catalog's shapes (`data.call.id`, `data.conversation_id`, ...);
`SWITCHBOARD_CORRELATION_PATHS` replaces a key's paths (`call_id=data.call.sid`). They are
read when the attempt record is built, from the event's data decoded once per event (shared
with filters and templates), and only ids go into the record: never other event data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from service.attempt_log.record import CORRELATION_KEYS
from service.events.envelope import Event
from service.events.paths import MISSING, Getter, getter, parse, resolve

DEFAULT_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "call_id": ("data.call.id", "data.call_id"),
    "conversation_id": ("data.conversation.id", "data.conversation_id"),
    "contact_id": ("data.contact.id", "data.contact_id"),
    "campaign_id": ("data.campaign.id", "data.call.campaign_id", "data.campaign_id"),
    "agent_id": ("data.agent.id", "data.agent_id"),
}
# Longer values are not ids; cut so one odd event cannot bloat the index.
MAX_KEY_CHARS: Final = 200


def parse_overrides(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`key=path[|path...]` entries as a key's paths; ValueError names a bad entry."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        key, sep, paths = entry.partition("=")
        key = key.strip()
        if not sep or key not in CORRELATION_KEYS:
            raise ValueError(f"{entry!r}: expected KEY=PATH with KEY one of "
                             f"{', '.join(CORRELATION_KEYS)}")  # fmt: skip
        parsed = tuple(p.strip() for p in paths.split("|") if p.strip())
        for path in parsed:
            parse(path)
        out[key] = parsed
    return out


def key_paths(sample: dict[str, object]) -> dict[str, str]:
    """Which default path holds each key in an event of a catalogued type (its sample): what
    a subscription names as its ordering key (docs/ordering.md)."""
    out: dict[str, str] = {}
    for key, paths in DEFAULT_PATHS.items():
        for path in paths:
            if resolve({"data": sample}, parse(path)) is not MISSING:
                out[key] = path
                break
    return out


class Correlation:
    """The correlation keys of an event, by getters compiled once."""

    def __init__(self, overrides: Iterable[str] = ()) -> None:
        paths = {**DEFAULT_PATHS, **parse_overrides(overrides)}
        self._getters: list[tuple[str, list[Getter]]] = [
            (key, [getter(parse(p)) for p in paths[key]]) for key in CORRELATION_KEYS
        ]

    def __call__(self, event: Event) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, getters in self._getters:
            for get in getters:
                value = get(event)
                if value is MISSING or isinstance(value, bool):
                    continue
                if isinstance(value, str | int) and value != "":
                    out[key] = str(value)[:MAX_KEY_CHARS]
                    break
        return out
