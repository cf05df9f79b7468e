"""Delivery log routes: attempts per subscription, per event, by correlation key, and a
subscription's stats, answered from the history store (PostgreSQL).

Every replica answers the same, from the same store. `history_from` is the start of
retention (`HISTORY_RETENTION_DAYS`): nothing older is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final, Literal

import asyncpg
from aiohttp import web

from service.admin.history_access import HistoryAccess, stamp
from service.admin.requests import page_limit, parse_range
from service.admin.responses import ApiError, error_response, json_response
from service.admin.scope import scoped_tenant
from service.attempt_log.record import CORRELATION_KEYS, TRIGGERS
from service.delivery.outcomes import Outcome
from service.history import queries
from service.history.rollup import minute_of, quantile
from service.subscriptions.model import Subscription

# The windows stats are given over, from the per-minute roll-ups.
WINDOWS: Final = (("5m", 300.0), ("1h", 3600.0), ("24h", 86_400.0), ("7d", 7 * 86_400.0),
                  ("30d", 30 * 86_400.0))  # fmt: skip
_OUTCOMES: Final = frozenset(o.value for o in Outcome)
# What `GET /v1/attempts` may search by: the correlation keys and the webhook-id.
SEARCH_KEYS: Final = (*CORRELATION_KEYS, "webhook_id")
_COLUMNS: Final = ("id", "subscription_id", "tenant_id", "event_id", "event_type", "webhook_id",
                   "attempt", "trigger", "method", "url", "outcome", "status", "latency_ms",
                   "error", "response_excerpt", "replay_of", *CORRELATION_KEYS)  # fmt: skip


class AttemptRoutes:
    def __init__(
        self, access: HistoryAccess, find: Callable[[web.Request], Subscription | None]
    ) -> None:
        self._access = access
        self._find = find

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/attempts", self.search)
        app.router.add_get("/v1/subscriptions/{id}/attempts", self.subscription_attempts)
        app.router.add_get("/v1/subscriptions/{id}/stats", self.stats)
        app.router.add_get("/v1/events/{id}/attempts", self.event_attempts)

    async def subscription_attempts(self, request: web.Request) -> web.Response:
        self._access.required()
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        return json_response(
            await self.log_page("subscription_id", sub.id, None, request.query, "attempts")
        )

    async def event_attempts(self, request: web.Request) -> web.Response:
        tenant = scoped_tenant(request, None)
        event_id = request.match_info["id"]
        return json_response(
            await self.log_page("event_id", event_id, tenant, request.query, "attempts")
        )

    async def search(self, request: web.Request) -> web.Response:
        """Attempts by one correlation key (or webhook-id); a tenant key sees its own only."""
        given = [k for k in SEARCH_KEYS if k in request.query]
        if len(given) != 1:
            return error_response(
                400, "invalid_query", f"exactly one of {', '.join(SEARCH_KEYS)}", "call_id"
            )
        tenant = scoped_tenant(request, request.query.get("tenant_id"))
        key = given[0]
        return json_response(
            await self.log_page(key, request.query[key], tenant, request.query, "search")
        )

    async def log_page(
        self, selector: str, value: str, tenant: str | Literal[False] | None,
        query: Mapping[str, str], route: str,
    ) -> dict[str, object]:  # fmt: skip
        """One page of the delivery log where `selector` is `value`, narrowed by the filters
        and cursor in `query` (the API's names); `tenant` False sees nothing."""
        self._access.required()
        limit = page_limit(query)
        since, until = parse_range(query.get("since"), query.get("until"))
        outcome = query.get("outcome")
        if outcome is not None and outcome not in _OUTCOMES | {"failure"}:
            raise ApiError(
                400,
                "invalid_query",
                f"one of {', '.join(sorted(_OUTCOMES))}, or failure for any but success",
                "outcome",
            )
        trigger = query.get("trigger")
        if trigger is not None and trigger not in TRIGGERS:
            raise ApiError(400, "invalid_query", f"one of {', '.join(TRIGGERS)}", "trigger")
        before = None
        if "before" in query:
            before = queries.parse_cursor(query["before"])
            if before is None:
                raise ApiError(400, "invalid_query", "a next_before of this listing", "before")
        rows: list[asyncpg.Record] = []
        async with self._access.query(route) as store:
            if tenant is not False:  # another tenant than the key's: nothing to see
                rows = list(await queries.attempts(store.pool, queries.AttemptQuery(
                    selector, value, tenant_id=tenant, event_type=query.get("event_type"),
                    outcome=outcome, trigger=trigger, since=_utc(since), until=_utc(until),
                    before=before, limit=limit,
                )))  # fmt: skip
            history_from = store.history_from()
        more = len(rows) > limit
        page = rows[:limit]
        last = page[-1] if more else None
        return {
            "data": [attempt_view(r) for r in page],
            "next_before": queries.cursor_of(last["at"], last["id"]) if last else None,
            "history_from": stamp(history_from),
        }

    async def stats(self, request: web.Request) -> web.Response:
        self._access.required()
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        return json_response(await self.stats_of(sub))

    async def stats_of(self, sub: Subscription) -> dict[str, object]:
        """Attempts, success rate and latency quantiles of `sub` per window."""
        now = time.time()
        starts = [datetime.fromtimestamp(minute_of(now - s), UTC) for _, s in reversed(WINDOWS)]
        async with self._access.query("stats") as store:
            counted = await queries.stats(store.pool, sub.id, starts)
            history_from = store.history_from(now)
        windows = {}
        for (name, _), c in zip(reversed(WINDOWS), counted, strict=True):
            windows[name] = {
                "attempts": c.attempts,
                "succeeded": c.succeeded,
                "failed": c.attempts - c.succeeded,
                "success_rate": round(c.succeeded / c.attempts, 4) if c.attempts else None,
                "latency_ms": {q: quantile(c.buckets, v)
                               for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
            }  # fmt: skip
        return {
            "subscription_id": sub.id,
            "windows": {name: windows[name] for name, _ in WINDOWS},
            "history_from": stamp(history_from),
        }


def _utc(unix: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix is not None else None


def attempt_view(row: asyncpg.Record) -> dict[str, object]:
    out: dict[str, object] = {"id": row["id"], "at": stamp(row["at"])}
    for column in _COLUMNS[1:]:
        out[column] = row[column]
    return out
