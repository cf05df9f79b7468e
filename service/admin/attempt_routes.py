"""Delivery log routes: attempts per subscription and per event, and a subscription's stats.

They read the bounded history every replica materializes from the attempts topic, so they
answer the same on any replica; how far back it reaches is in every answer (`history_from`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from aiohttp import web

from service.admin.requests import page_limit, parse_range
from service.admin.responses import error_response, json_response
from service.admin.scope import SCOPE, visible
from service.attempt_log.record import TRIGGERS, AttemptRecord
from service.delivery.outcomes import Outcome
from service.events.envelope import rfc3339
from service.subscriptions.model import Subscription

# The windows stats are given over; the history may not reach back over the longest.
WINDOWS: Final = (("5m", 300.0), ("1h", 3600.0), ("24h", 86_400.0))
_OUTCOMES: Final = frozenset(o.value for o in Outcome)


class History(Protocol):
    @property
    def oldest(self) -> float | None: ...
    def for_subscription(self, sub_id: str) -> Iterable[AttemptRecord]: ...
    def for_event(self, event_id: str) -> Iterable[AttemptRecord]: ...


class AttemptRoutes:
    def __init__(
        self, history: History, find: Callable[[web.Request], Subscription | None]
    ) -> None:
        self._history = history
        self._find = find

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/subscriptions/{id}/attempts", self.subscription_attempts)
        app.router.add_get("/v1/subscriptions/{id}/stats", self.stats)
        app.router.add_get("/v1/events/{id}/attempts", self.event_attempts)

    async def subscription_attempts(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        return self._page(request, self._history.for_subscription(sub.id))

    async def event_attempts(self, request: web.Request) -> web.Response:
        scope = request[SCOPE]
        records = [
            r
            for r in self._history.for_event(request.match_info["id"])
            if visible(r.tenant_id, scope)
        ]
        return self._page(request, records)

    def _page(self, request: web.Request, records: Iterable[AttemptRecord]) -> web.Response:
        query = request.query
        limit = page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        window = parse_range(query.get("since"), query.get("until"))
        if isinstance(window, web.Response):
            return window
        since, until = window
        outcome = query.get("outcome")
        if outcome is not None and outcome not in _OUTCOMES | {"failure"}:
            return error_response(
                400,
                "invalid_query",
                f"one of {', '.join(sorted(_OUTCOMES))}, or failure for any but success",
                "outcome",
            )
        trigger = query.get("trigger")
        if trigger is not None and trigger not in TRIGGERS:
            return error_response(400, "invalid_query", f"one of {', '.join(TRIGGERS)}", "trigger")
        event_type = query.get("event_type")
        picked = [
            r
            for r in records
            if (since is None or r.at >= since)
            and (until is None or r.at < until)
            and (event_type is None or r.event_type == event_type)
            and (trigger is None or r.trigger == trigger)
            and (
                outcome is None
                or r.outcome == outcome
                or (outcome == "failure" and r.outcome != Outcome.SUCCESS.value)
            )
        ]
        # Newest first; `before` continues after the last record of the previous page.
        picked.sort(key=lambda r: (r.at, r.id), reverse=True)
        before = query.get("before")
        if before is not None:
            at = next((i for i, r in enumerate(picked) if r.id == before), None)
            if at is None:
                return error_response(
                    400, "invalid_query", "not an attempt id of this listing", "before"
                )
            picked = picked[at + 1 :]
        page = picked[:limit]
        more = len(picked) > limit
        return json_response(
            {
                "data": [r.view() for r in page],
                "next_before": page[-1].id if more else None,
                "history_from": _time(self._history.oldest),
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        now = time.time()
        # Test sends are the customer trying things out, not the endpoint's record.
        records = [r for r in self._history.for_subscription(sub.id) if r.trigger != "test"]
        windows = {}
        for name, seconds in WINDOWS:
            recent = [r for r in records if r.at >= now - seconds]
            ok = sum(1 for r in recent if r.outcome == Outcome.SUCCESS.value)
            latencies = sorted(r.latency_ms for r in recent)
            windows[name] = {
                "attempts": len(recent),
                "succeeded": ok,
                "failed": len(recent) - ok,
                "success_rate": round(ok / len(recent), 4) if recent else None,
                "latency_ms": {"p50": _rank(latencies, 0.5), "p99": _rank(latencies, 0.99)},
            }
        return json_response(
            {
                "subscription_id": sub.id,
                "windows": windows,
                "history_from": _time(self._history.oldest),
            }
        )


def _rank(ordered: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted values."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _time(unix: float | None) -> str | None:
    return rfc3339(unix) if unix is not None else None
