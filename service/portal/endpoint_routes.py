"""The endpoint screens: the list with health, add and edit, enable and disable, the secret
(shown once, rotated with a grace), test sends and the template preview.

Each calls the admin API's own operations (`SubscriptionRoutes`, `TestSendRoutes`,
`AttemptRoutes`) acting for the session's tenant, so every rule is the API's: the portal only
turns forms into the API's JSON and answers into pages.
"""

from __future__ import annotations

import time
from typing import Any, Final

import orjson
from aiohttp import web

from service.admin.history_access import StoreUnavailable
from service.admin.requests import decode_body
from service.admin.responses import ApiError
from service.admin.subscription_routes import FIXED_FIELDS, SubscriptionRoutes
from service.admin.test_send import TestSend, TestSendRoutes, event_for_test_send
from service.catalog.entries import catalog
from service.delivery.endpoint import EndpointSettings
from service.delivery.request import prepare
from service.delivery.signing import message_id
from service.portal.access import SESSION
from service.portal.chart import stats_chart
from service.portal.forms import form_values, subscription_json
from service.portal.pages import error_page, page
from service.subscriptions.checks import type_matches
from service.subscriptions.fields import METHODS
from service.subscriptions.model import Subscription, SubscriptionCreate, SubscriptionPatch

# The grace periods the rotation form offers (seconds, label).
GRACES: Final = ((0, "none: the old secret stops now"), (3600, "1 hour"), (86_400, "1 day"),
                 (7 * 86_400, "7 days"))  # fmt: skip
AUTH_TYPES: Final = (("", "none"), ("api_key", "API key header"), ("basic", "HTTP Basic"),
                     ("bearer", "Bearer token"),
                     ("oauth2_client_credentials", "OAuth 2 client credentials"))  # fmt: skip


class EndpointScreens:
    def __init__(self, subs: SubscriptionRoutes, tests: TestSendRoutes, stats: Any) -> None:
        self._subs = subs
        self._tests = tests
        self._stats = stats

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self.list_)
        app.router.add_get("/endpoints/new", self.new)
        app.router.add_post("/endpoints", self.create)
        app.router.add_post("/preview", self.preview)
        app.router.add_get("/endpoints/{id}", self.detail)
        app.router.add_get("/endpoints/{id}/edit", self.edit)
        app.router.add_post("/endpoints/{id}", self.update)
        app.router.add_post("/endpoints/{id}/enabled", self.set_enabled)
        app.router.add_post("/endpoints/{id}/rotate", self.rotate)
        app.router.add_post("/endpoints/{id}/test", self.test_send)

    def find(self, request: web.Request, sub_id: str | None = None) -> Subscription:
        """The endpoint `sub_id` (by default the path's) if it is the session's tenant's;
        else 404, exactly as for an id that does not exist."""
        sub_id = request.match_info["id"] if sub_id is None else sub_id
        sub = self._subs.lookup(request[SESSION].tenant_id, sub_id)
        if sub is None:
            raise ApiError(404, "not_found", "no such endpoint")
        return sub

    async def list_(self, request: web.Request) -> web.Response:
        rows = []
        for sub in self._subs.of_tenant(request[SESSION].tenant_id):
            rows.append({"view": self._subs.view(sub), "rate": await self._recent_rate(sub)})
        return page(request, "endpoints.html", {"rows": rows})

    async def _recent_rate(self, sub: Subscription) -> float | None:
        try:
            stats = await self._stats.stats_of(sub)
        except StoreUnavailable:
            return None
        rate: float | None = stats["windows"]["24h"]["success_rate"]
        return rate

    async def new(self, request: web.Request) -> web.Response:
        return self._form(request, None, {"method": "POST", "timeout_seconds": "10"}, None)

    def _form(
        self, request: web.Request, sub: Subscription | None, values: dict[str, Any],
        error: ApiError | None, status: int = 200,
    ) -> web.Response:  # fmt: skip
        return page(request, "endpoint_form.html", {
            "sub": sub, "values": values, "error": error, "methods": METHODS,
            "catalog": catalog(), "auth_types": AUTH_TYPES,
            "chosen": set(values.get("event_types", ())),
        }, status)  # fmt: skip

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        chosen = [str(t) for t in form.getall("event_types", [])]
        try:
            body = subscription_json(form, chosen)
            req = decode_body(orjson.dumps(body), SubscriptionCreate)
            sub, warnings = await self._subs.created(request[SESSION].tenant_id, req)
        except ApiError as exc:
            return self._form(request, None, {**form, "event_types": chosen}, exc, exc.status)
        # The page that shows the secret is this answer: nothing can fetch it again.
        return page(request, "secret.html", {"sub": sub, "secret": sub.secret,
                                             "warnings": warnings, "rotated": False})  # fmt: skip

    async def detail(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        try:
            stats = await self._stats.stats_of(sub)
        except StoreUnavailable:
            stats = None
        exact = [t.type for t in catalog() if t.type in sub.event_types]
        return page(request, "endpoint.html", {
            "sub": sub, "view": self._subs.view(sub), "graces": GRACES,
            "chart": stats_chart(stats["windows"]) if stats else None, "stats": stats,
            "test_types": exact or [t.type for t in catalog()],
            "saved": "saved" in request.query,
        })  # fmt: skip

    async def edit(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        values = form_values(self._subs.view(sub))
        return self._form(request, sub, {**values, "event_types": sub.event_types}, None)

    async def update(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        form = await request.post()
        chosen = [str(t) for t in form.getall("event_types", [])]
        try:
            body = subscription_json(form, chosen)
            patch = decode_body(orjson.dumps(body), SubscriptionPatch, FIXED_FIELDS)
            await self._subs.patched(sub, patch)
        except ApiError as exc:
            return self._form(request, sub, {**form, "event_types": chosen}, exc, exc.status)
        raise web.HTTPSeeOther(f"/portal/endpoints/{sub.id}?saved")

    async def set_enabled(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        form = await request.post()
        patch = decode_body(orjson.dumps({"enabled": form.get("enabled") == "true"}),
                            SubscriptionPatch)  # fmt: skip
        await self._subs.patched(sub, patch)
        back = str(form.get("back", ""))
        # Back to a page of the portal only: never a redirect to elsewhere.
        raise web.HTTPSeeOther(back if back.startswith("/portal/") else "/portal/")

    async def rotate(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        form = await request.post()
        try:
            grace = int(str(form.get("grace_seconds", "")))
        except ValueError:
            return error_page(request, "Choose a grace period", "Go back and pick one.", 422)
        rotated = await self._subs.rotated(sub, grace)
        return page(request, "secret.html", {"sub": rotated, "secret": rotated.secret,
                                             "warnings": [], "rotated": True})  # fmt: skip

    async def test_send(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        form = await request.post()
        req = TestSend(event_type=str(form.get("event_type") or "") or None)
        result = await self._tests.sent(sub, req)
        return page(request, "test_result.html", {"sub": sub, "result": result})

    async def preview(self, request: web.Request) -> web.Response:
        """The request a draft of the form would send for a catalog sample: rendered by the
        delivery path's own shaping and signing, never sent. A fragment for the script, or
        a page without it."""
        form = await request.post()
        chosen = [str(t) for t in form.getall("event_types", [])]
        context: dict[str, Any]
        try:
            body = subscription_json(form, chosen)
            draft, warnings = self._subs.draft(
                request[SESSION].tenant_id, decode_body(orjson.dumps(body), SubscriptionCreate)
            )
            event = event_for_test_send(draft, TestSend(event_type=_catalogued(draft)))
            shown = prepare(EndpointSettings(draft, self._subs.policy), event,
                            message_id(draft.id, event.id), int(time.time())).shown()  # fmt: skip
            context = {
                "shown": shown,
                "event_type": event.type,
                "warnings": warnings,
                "error": None,
            }
        except ApiError as exc:
            context = {"error": exc}
        fragment = request.headers.get("X-Requested-With") == "portal"
        return page(request, "preview.html", {**context, "fragment": fragment})


def _catalogued(sub: Subscription) -> str | None:
    """The first catalogued type the draft subscribes to (patterns included)."""
    return next(
        (e.type for e in catalog() if any(type_matches(p, e.type) for p in sub.event_types)),
        None,
    )
