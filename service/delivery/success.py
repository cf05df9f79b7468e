"""Success conditions: when a response counts as delivered.

By default any 2xx does. A subscription may list the status codes it accepts instead, and
may require a key of the JSON response to hold a value (`{"json_path": "result.accepted",
"json_value": true}`), for receivers that answer 200 with an error inside. A response that
fails the condition is a failed attempt, retried like any other, with the reason recorded.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import orjson

from service.events.paths import MISSING, InvalidPath, Path, parse, resolve
from service.routing.filters import json_equal

MAX_STATUS_CODES: Final = 50
# The response is read up to this much when a JSON key must be checked (else: the excerpt).
MAX_CONDITION_BODY: Final = 64 * 1024


class SuccessCondition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    status_codes: tuple[int, ...] = ()
    json_path: str | None = None
    json_value: Any = True


class InvalidCondition(ValueError):
    pass


class CompiledCondition:
    __slots__ = ("json_path", "json_value", "status_codes")

    def __init__(self, cond: SuccessCondition) -> None:
        if len(cond.status_codes) > MAX_STATUS_CODES:
            raise InvalidCondition(f"status_codes: at most {MAX_STATUS_CODES}")
        for code in cond.status_codes:
            if not 100 <= code <= 599:
                raise InvalidCondition(f"status_codes: {code} is not an HTTP status")
        self.status_codes = frozenset(cond.status_codes)
        self.json_value = cond.json_value
        self.json_path: Path | None = None
        if cond.json_path is not None:
            try:
                self.json_path = parse(cond.json_path, envelope=False)
            except InvalidPath as exc:
                raise InvalidCondition(f"json_path: {exc}") from None

    def accepts_status(self, status: int) -> bool:
        if self.status_codes:
            return status in self.status_codes
        return 200 <= status < 300

    def failure(self, status: int, body: bytes) -> str | None:
        """Why this response is not a success, or None when it is."""
        if not self.accepts_status(status):
            return f"status {status} is not an accepted status"
        if self.json_path is None:
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return "the response is not JSON (a JSON key must be checked)"
        found = resolve(doc, self.json_path)
        dotted = ".".join(map(str, self.json_path))
        if found is MISSING:
            return f"the response has no {dotted}"
        if not json_equal(found, self.json_value):
            shown = orjson.dumps(found).decode()[:100]
            wanted = orjson.dumps(self.json_value).decode()[:100]
            return f"response {dotted} is {shown}, expected {wanted}"
        return None
