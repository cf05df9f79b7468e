"""What became of one event: its routing decision and its delivery attempts.

`GET /v1/events/{id}` answers "why didn't event X arrive?": matched subscriptions, or the
filter condition that dropped it, or no subscription of its type, or the quarantine and why;
then every attempt. An id with neither is answered as unknown (404), which is also how
another tenant's event answers, so nothing confirms that it exists.
"""

from __future__ import annotations

from typing import Final, Protocol

from aiohttp import web

from service.admin.attempt_routes import History
from service.admin.responses import error_response, json_response
from service.admin.scope import SCOPE, visible
from service.events.envelope import rfc3339
from service.routing.decision import RoutingDecision

# Attempts shown with the decision, newest first; the attempts route pages through all.
MAX_ATTEMPTS_SHOWN: Final = 100


class EventHistory(History, Protocol):
    """The delivery log with the routing decisions (consumers/attempt_log/history.py)."""

    def routing_for(self, event_id: str) -> RoutingDecision | None: ...


class EventRoutes:
    def __init__(self, history: EventHistory) -> None:
        self._history = history

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/events/{id}", self.event)

    async def event(self, request: web.Request) -> web.Response:
        scope = request[SCOPE]
        event_id = request.match_info["id"]
        routing = self._history.routing_for(event_id)
        if routing is not None and not visible(routing.tenant_id, scope):
            routing = None
        attempts = sorted(
            (r for r in self._history.for_event(event_id) if visible(r.tenant_id, scope)),
            key=lambda r: (r.at, r.id),
            reverse=True,
        )
        if routing is None and not attempts:
            oldest = self._history.oldest
            since = f" since {rfc3339(oldest)}" if oldest is not None else ""
            return error_response(
                404, "not_found", f"no record of this event{since} (the history's reach)"
            )
        return json_response(
            {
                "event_id": event_id,
                "routing": routing.view() if routing is not None else None,
                "attempts": [r.view() for r in attempts[:MAX_ATTEMPTS_SHOWN]],
                "more_attempts": len(attempts) > MAX_ATTEMPTS_SHOWN,
            }
        )
