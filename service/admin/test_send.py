"""Test sends: one real request now, with a catalog sample or the caller's data.

It goes through the same path as a delivery (shaping, signing, auth, the address guard and
resolver) but outside the endpoint's queue, rate limit and circuit. Filters and the
subscription's enabled flag do not apply: it is a test. The answer shows the request as sent,
with credentials masked.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import structlog
from aiohttp import web

from service.admin.requests import decode_body
from service.admin.responses import ApiError, error_response, json_response
from service.catalog.entries import BY_TYPE
from service.delivery.outcomes import AttemptResult
from service.delivery.request import Prepared
from service.events.envelope import MAX_TYPE_LENGTH, TYPE_PATTERN, Event, rfc3339
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.api")


class TestSend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The catalog's sample of this type is sent, unless `data` is given.
    event_type: str | None = None
    data: dict[str, Any] | None = None


class Tester(Protocol):
    """Makes one real attempt now (the delivery pool)."""

    async def attempt(
        self, event: Event, sub: Subscription, *, trigger: str = "test", traced: bool = False
    ) -> tuple[Prepared, AttemptResult]: ...


class TestSendRoutes:
    def __init__(self, find: Callable[[web.Request], Subscription | None], tester: Tester) -> None:
        self._find = find
        self._tester = tester

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/subscriptions/{id}/test", self.test_send)

    async def test_send(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        req = decode_body(await request.read() or b"{}", TestSend)
        return json_response(await self.sent(sub, req))

    async def sent(self, sub: Subscription, req: TestSend) -> dict[str, object]:
        """Sends one test event to `sub` now; the request as sent and what came back."""
        event = event_for_test_send(sub, req)
        # With tracing on, a span of its own (a trace of its own: nothing produced the event).
        prepared, result = await self._tester.attempt(event, sub, trigger="test", traced=True)
        log.info("subscription_test_sent", subscription_id=sub.id, tenant_id=sub.tenant_id,
                 outcome=result.outcome.value, status=result.status)  # fmt: skip
        return {
            "event_id": event.id,
            "request": prepared.shown(),
            "outcome": result.outcome.value,
            "delivered": result.ok,
            "status": result.status,
            "latency_ms": round(result.duration * 1000, 3),
            "error": result.error,
            "response_excerpt": result.body_excerpt.decode("utf-8", "replace"),
        }


def event_for_test_send(sub: Subscription, req: TestSend) -> Event:
    """The event a test send carries: the caller's data, or the catalog's sample of the type
    (by default the subscription's first catalogued one)."""
    event_type = req.event_type
    if event_type is None:
        exact = [t for t in sub.event_types if t in BY_TYPE]
        if req.data is None and not exact:
            raise ApiError(422, "invalid_field", "give an event type", "event_type")
        event_type = exact[0] if exact else "switchboard.test"
    if len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.fullmatch(event_type):
        raise ApiError(422, "invalid_field", "dotted lower-case", "event_type")
    data = req.data
    if data is None:
        entry = BY_TYPE.get(event_type)
        if entry is None:
            raise ApiError(422, "invalid_field", "not in the catalog: give data to send",
                           "event_type")  # fmt: skip
        data = entry.sample
    now = time.time()
    return Event(
        id="evt_test_" + secrets.token_hex(8),
        source="switchboard/test",
        type=event_type,
        tenant_id=sub.tenant_id,
        time=rfc3339(now),
        time_unix=now,
        data_raw=msgspec.json.encode(data),
    )
