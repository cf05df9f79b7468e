"""`POST /v1/portal-sessions`: a one-time link into the customers' portal for one tenant.

The platform's backend asks with the operator token (any tenant) or a tenant key (its own
tenant only; another answers 404, as everywhere), and hands the link to the page that embeds
the portal. The link opens once (service/portal/link_uses.py) within `LINK_SECONDS`.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
import structlog
from aiohttp import web
from msgspec import Meta
from yarl import URL

from service.admin.requests import check_tenant_id, decode_body
from service.admin.responses import ApiError, json_response
from service.admin.scope import SCOPE, visible
from service.events.envelope import rfc3339
from service.portal.tokens import (
    DEFAULT_SESSION_SECONDS,
    MAX_SESSION_SECONDS,
    MIN_SESSION_SECONDS,
    new_link,
    seal,
)

log = structlog.get_logger("switchboard.api")

# Where a link opens, under the portal's prefix.
START_PATH = "/portal/start"


class PortalSessionCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # None: the tenant of the API key that asks (the operator token must name one).
    tenant_id: str | None = None
    session_seconds: Annotated[int, Meta(ge=MIN_SESSION_SECONDS, le=MAX_SESSION_SECONDS)] = (
        DEFAULT_SESSION_SECONDS
    )
    read_only: bool = False


class PortalSessionRoutes:
    def __init__(self, key: bytes, public_url: str | None) -> None:
        self._key = key
        self._public_url = public_url

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/portal-sessions", self.create)

    async def create(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read() or b"{}", PortalSessionCreate)
        scope = request[SCOPE]
        tenant = req.tenant_id if req.tenant_id is not None else scope
        if tenant is None:
            raise ApiError(422, "invalid_field", "the operator token must name a tenant_id",
                           "tenant_id")  # fmt: skip
        check_tenant_id(tenant)
        if not visible(tenant, scope):
            raise ApiError(404, "not_found", "no such tenant", "tenant_id")
        link = new_link(tenant, req.read_only, req.session_seconds, time.time())
        base = URL(self._public_url or f"{request.scheme}://{request.host}")
        url = base.with_path(START_PATH).with_query(token=seal(self._key, "link", link))
        log.info("portal_session_created", tenant_id=tenant, read_only=req.read_only)
        return json_response(
            {"url": str(url), "expires_at": rfc3339(link.expires), "tenant_id": tenant,
             "read_only": req.read_only, "session_seconds": req.session_seconds},
            status=201,
        )  # fmt: skip
