"""The delivery log, the search by call, conversation or contact id, and the dead letters
(replay, recover since a time): the admin API's own queries and replay, for the session's
tenant only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from service.admin.attempt_routes import AttemptRoutes
from service.admin.dead_letter_routes import DeadLetterRoutes
from service.admin.requests import parse_time
from service.admin.responses import ApiError
from service.attempt_log.record import TRIGGERS
from service.delivery.outcomes import Outcome
from service.portal.access import SESSION
from service.portal.endpoint_routes import EndpointScreens
from service.portal.pages import page

# What the search box searches by, as the form offers it (API parameter, label).
SEARCH_KEYS: Final = (("call_id", "Call id"), ("conversation_id", "Conversation id"),
                      ("contact_id", "Contact id"))  # fmt: skip
# The log's filters, by the API's parameter names.
LOG_FILTERS: Final = ("event_type", "outcome", "trigger", "since", "until", "before")
PAGE: Final = "50"


def _rfc3339(text: str) -> str:
    """A datetime-local field's value (minutes, no offset; the form says UTC) as RFC 3339;
    anything else as it is, for the API's parsing to refuse or take."""
    return text + ":00+00:00" if len(text) == len("2026-01-01T00:00") else text


def _filters(query: Mapping[str, str]) -> dict[str, str]:
    """The filters the form filled in (empty fields are no filter), one page's worth."""
    out = {k: query[k] for k in LOG_FILTERS if query.get(k)}
    for key in ("since", "until"):
        if key in out:
            out[key] = _rfc3339(out[key])
    return {**out, "limit": PAGE}


class LogScreens:
    def __init__(
        self, endpoints: EndpointScreens, attempts: AttemptRoutes, dead: DeadLetterRoutes
    ) -> None:
        self._endpoints = endpoints
        self._attempts = attempts
        self._dead = dead

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/endpoints/{id}/log", self.log)
        app.router.add_get("/search", self.search)
        app.router.add_get("/dead-letters", self.dead_letters)
        app.router.add_post("/dead-letters/replay", self.replay)
        app.router.add_post("/endpoints/{id}/recover", self.recover)

    def _context(self, query: Mapping[str, str]) -> dict[str, object]:
        return {"query": query, "outcomes": ["failure", *(o.value for o in Outcome)],
                "triggers": TRIGGERS, "search_keys": SEARCH_KEYS}  # fmt: skip

    async def log(self, request: web.Request) -> web.Response:
        sub = self._endpoints.find(request)
        query = _filters(request.query)
        error: ApiError | None = None
        try:
            listing = await self._attempts.log_page("subscription_id", sub.id, None, query,
                                                    "attempts")  # fmt: skip
        except ApiError as exc:
            # A filter the log cannot take: the form again, with what is wrong.
            listing, error = {"data": [], "next_before": None}, exc
        return page(request, "log.html", {**self._context(request.query), "sub": sub,
                                          "listing": listing, "error": error})  # fmt: skip

    async def search(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "call_id")
        value = request.query.get("value", "").strip()
        listing = None
        if key not in dict(SEARCH_KEYS):
            raise ApiError(400, "invalid_query", "search by call, conversation or contact id")
        if value:
            listing = await self._attempts.log_page(
                key, value, request[SESSION].tenant_id, _filters(request.query), "search"
            )
        return page(request, "search.html", {**self._context(request.query), "key": key,
                                             "value": value, "listing": listing})  # fmt: skip

    async def dead_letters(self, request: web.Request) -> web.Response:
        tenant = request[SESSION].tenant_id
        query = {"replayed": "false", "limit": "100"}
        sub = None
        if request.query.get("subscription_id"):
            sub = self._endpoints.find(request, request.query["subscription_id"])
            query["subscription_id"] = sub.id
        listing = await self._dead.listing(tenant, query)
        return page(request, "dead_letters.html", {"listing": listing, "sub": sub,
                                                   "result": None})  # fmt: skip

    async def replay(self, request: web.Request) -> web.Response:
        form = await request.post()
        ids = [str(i) for i in form.getall("ids", [])]
        if not ids:
            raise ApiError(422, "invalid_field", "choose a dead letter to replay", "ids")
        result = await self._dead.replayed_ids(request[SESSION].tenant_id, ids)
        return page(request, "replayed.html", {"result": result})

    async def recover(self, request: web.Request) -> web.Response:
        sub = self._endpoints.find(request)
        form = await request.post()
        since = parse_time(_rfc3339(str(form.get("since", ""))) or None, "since")
        if since is None:
            raise ApiError(422, "invalid_field", "give the time to recover from", "since")
        result = await self._dead.recovered(sub, since)
        when = datetime.fromtimestamp(since, UTC)
        return page(request, "replayed.html", {"result": result, "sub": sub, "since": when})
