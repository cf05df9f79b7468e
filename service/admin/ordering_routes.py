"""Ordering routes: an operator releases an ordering key that a dead letter stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import msgspec
import structlog
from aiohttp import web
from msgspec import Meta

from service.admin.requests import decode_body
from service.admin.responses import error_response, json_response
from service.admin.table import WRITE_TIMEOUT_SECONDS
from service.ordering.control import OrderingControl
from service.ordering.keys import MAX_KEY_CHARS
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.api")


class ReleaseRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: Annotated[str, Meta(min_length=1, max_length=MAX_KEY_CHARS)]


class OrderingRoutes:
    def __init__(
        self, control: OrderingControl, find: Callable[[web.Request], Subscription | None]
    ) -> None:
        self._control = control
        self._find = find

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/subscriptions/{id}/ordering/release", self.release)

    async def release(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        req = decode_body(await request.read(), ReleaseRequest)
        if sub.ordering is None:
            return error_response(
                409, "not_ordered", "the subscription has no ordering; nothing is held"
            )
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._control.release(sub.id, req.key)
        log.info("ordering_release_requested", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return json_response({"subscription_id": sub.id, "key": req.key, "status": "requested"},
                             status=202)  # fmt: skip
