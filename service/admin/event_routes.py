"""What became of one event: its routing decision and its delivery attempts.

`GET /v1/events/{id}` answers "why didn't event X arrive?": matched subscriptions, or the
filter condition that dropped it, or no subscription of its type, or the quarantine and why;
then every attempt. Both come from the history store (the indexer writes the decisions that
travel the attempts topic next to the attempts). An id with neither is answered as unknown
(404), which is also how another tenant's event answers, so nothing confirms that it exists.
"""

from __future__ import annotations

from typing import Final

import msgspec
from aiohttp import web

from service.admin.attempt_routes import attempt_view
from service.admin.history_access import HistoryAccess, stamp
from service.admin.responses import error_response, json_response
from service.admin.scope import SCOPE, visible
from service.history import queries
from service.routing.decision import RoutingDecision

# Attempts shown with the decision, newest first; the attempts route pages through all.
MAX_ATTEMPTS_SHOWN: Final = 100
_DECISION: Final = msgspec.json.Decoder(RoutingDecision)


class EventRoutes:
    def __init__(self, access: HistoryAccess) -> None:
        self._access = access

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/events/{id}", self.event)

    async def event(self, request: web.Request) -> web.Response:
        scope = request[SCOPE]
        event_id = request.match_info["id"]
        async with self._access.query("event") as store:
            row = await store.pool.fetchrow(queries.DECISION_SQL, queries.clean(event_id))
            attempts = await queries.attempts(store.pool, queries.AttemptQuery(
                "event_id", event_id, tenant_id=scope, limit=MAX_ATTEMPTS_SHOWN
            ))  # fmt: skip
            history_from = store.history_from()
        routing = None
        if row is not None and visible(row["tenant_id"], scope):
            routing = _DECISION.decode(row["decision"])
        if routing is None and not attempts:
            return error_response(
                404, "not_found",
                f"no record of this event since {stamp(history_from)} (the start of retention)",
            )  # fmt: skip
        return json_response(
            {
                "event_id": event_id,
                "routing": routing.view() if routing is not None else None,
                "attempts": [attempt_view(r) for r in attempts[:MAX_ATTEMPTS_SHOWN]],
                "more_attempts": len(attempts) > MAX_ATTEMPTS_SHOWN,
            }
        )
