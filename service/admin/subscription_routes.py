"""Subscription routes: create, list, read, change, delete, rotate the signing secret."""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec
import structlog
from aiohttp import web

from service.admin.requests import decode_body, page_limit
from service.admin.responses import ApiError, error_response, json_response
from service.admin.scope import SCOPE, SUB_ID, tenant_filter, visible
from service.admin.table import WRITE_TIMEOUT_SECONDS, Table
from service.config import MAX_ROTATION_GRACE
from service.delivery.netguard import AddressPolicy
from service.events.envelope import rfc3339
from service.subscriptions.checks import catalog_check
from service.subscriptions.model import (
    InvalidSubscription,
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
    apply_patch,
    new_subscription,
    rotate_secret,
)

log = structlog.get_logger("switchboard.api")

# Fields of the API view that a PATCH cannot change, and what to do instead.
FIXED_FIELDS: Final = {
    "id": "it names the subscription",
    "tenant_id": "a subscription stays with its tenant; create one for the other tenant",
    "secret": "POST /v1/subscriptions/{id}/rotate-secret makes a new one",
    "previous_secret_expires_at": "set by rotate-secret",
    "created_at": "set by the service",
    "updated_at": "set by the service",
    "disabled_reason": "set by the service; PATCH enabled: true clears it",
    "disabled_at": "set by the service; PATCH enabled: true clears it",
    "failing_since": "set by the service (docs/api.md)",
}


class RotateSecret(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    grace_seconds: int | None = None


def not_found() -> web.Response:
    return error_response(404, "not_found", "no such subscription")


class SubscriptionRoutes:
    def __init__(self, table: Table, policy: AddressPolicy, rotation_grace_seconds: int) -> None:
        self._table = table
        self.policy = policy
        self._rotation_grace = rotation_grace_seconds

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/subscriptions", self.create)
        app.router.add_get("/v1/subscriptions", self.list)
        app.router.add_get("/v1/subscriptions/{id}", self.get)
        app.router.add_patch("/v1/subscriptions/{id}", self.patch)
        app.router.add_delete("/v1/subscriptions/{id}", self.delete)
        app.router.add_post("/v1/subscriptions/{id}/rotate-secret", self.rotate)

    def find(self, request: web.Request) -> Subscription | None:
        """The subscription named in the path, if it exists and the caller may see it."""
        return self.lookup(request[SCOPE], request.match_info["id"])

    def lookup(self, scope: str | None, sub_id: str) -> Subscription | None:
        """The subscription `sub_id` if it exists and `scope` may see it: another tenant's
        is None, exactly as a missing one."""
        sub = self._table.get(sub_id) if SUB_ID.fullmatch(sub_id) else None
        return sub if sub is not None and visible(sub.tenant_id, scope) else None

    def of_tenant(self, tenant: str | None) -> list[Subscription]:
        """Every subscription of `tenant` (all of them for None), ordered by id."""
        subs = (s for s in self._table.all() if tenant is None or s.tenant_id == tenant)
        return sorted(subs, key=lambda s: s.id)

    def view(self, sub: Subscription) -> dict[str, object]:
        health = self._table.health(sub.id)
        return {
            **sub.public(),
            "failing_since": rfc3339(health.failing_since) if health is not None else None,
        }

    def draft(self, scope: str | None, req: SubscriptionCreate) -> tuple[Subscription, list[str]]:
        """A new subscription for `scope`, validated but not stored; its catalog warnings."""
        if req.tenant_id is None and scope is not None:
            req = msgspec.structs.replace(req, tenant_id=scope)
        if req.tenant_id is not None and not visible(req.tenant_id, scope):
            # 404 like every other cross-tenant request: nothing confirms the tenant exists.
            raise ApiError(404, "not_found", "no such tenant", "tenant_id")
        try:
            sub = new_subscription(req, self.policy)
            return sub, catalog_check(sub)
        except InvalidSubscription as exc:
            raise ApiError(422, "invalid_field", exc.message, exc.field) from None

    async def created(
        self, scope: str | None, req: SubscriptionCreate
    ) -> tuple[Subscription, list[str]]:
        """Validates and stores a new subscription for `scope`; its catalog warnings."""
        sub, warnings = self.draft(scope, req)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(sub)
        log.info("subscription_created", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return sub, warnings

    async def patched(
        self, sub: Subscription, patch: msgspec.Struct
    ) -> tuple[Subscription, list[str]]:
        """Validates and stores a change; the updated subscription and its warnings."""
        try:
            updated = apply_patch(sub, patch, self.policy)
            warnings = catalog_check(updated)
        except InvalidSubscription as exc:
            raise ApiError(422, "invalid_field", exc.message, exc.field) from None
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(updated)
            if updated.enabled and not sub.enabled and self._table.health(sub.id) is not None:
                # Enabled again: the failing span starts over, or it would be disabled at once.
                await self._table.put_health(sub.id, None)
        log.info("subscription_updated", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return updated, warnings

    async def rotated(self, sub: Subscription, grace_seconds: int | None) -> Subscription:
        """A new signing secret; the old one signs for the grace (the setting's default)."""
        grace = self._rotation_grace if grace_seconds is None else grace_seconds
        if not 0 <= grace <= MAX_ROTATION_GRACE:
            raise ApiError(422, "invalid_field", f"must be 0..{MAX_ROTATION_GRACE}",
                           "grace_seconds")  # fmt: skip
        rotated = rotate_secret(sub, grace)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(rotated)
        log.info("subscription_secret_rotated", subscription_id=sub.id, tenant_id=sub.tenant_id,
                 grace_seconds=grace)  # fmt: skip
        return rotated

    async def create(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read(), SubscriptionCreate)
        sub, warnings = await self.created(request[SCOPE], req)
        # The only response that ever carries the secret.
        return json_response(
            {**self.view(sub), "secret": sub.secret, "warnings": warnings}, status=201
        )

    async def list(self, request: web.Request) -> web.Response:
        tenant = tenant_filter(request, request.query.get("tenant_id"))
        if tenant is False:
            return json_response({"data": [], "next_after": None})
        after = request.query.get("after", "")
        limit = page_limit(request.query)
        subs = self.of_tenant(tenant if isinstance(tenant, str) else None)
        page = [s for s in subs if s.id > after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        return json_response(
            {"data": [self.view(s) for s in page], "next_after": page[-1].id if more else None}
        )

    async def get(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        if sub is None:
            return not_found()
        return json_response(self.view(sub))

    async def patch(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        if sub is None:
            return not_found()
        patch = decode_body(await request.read(), SubscriptionPatch, FIXED_FIELDS)
        updated, warnings = await self.patched(sub, patch)
        return json_response({**self.view(updated), "warnings": warnings})

    async def delete(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        if sub is None:
            return not_found()
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.delete(sub.id)
            if self._table.health(sub.id) is not None:
                await self._table.put_health(sub.id, None)
        log.info("subscription_deleted", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return web.Response(status=204)

    async def rotate(self, request: web.Request) -> web.Response:
        sub = self.find(request)
        if sub is None:
            return not_found()
        req = decode_body(await request.read() or b"{}", RotateSecret)
        rotated = await self.rotated(sub, req.grace_seconds)
        # Like creation, the only response that shows the new secret.
        return json_response({**self.view(rotated), "secret": rotated.secret})
