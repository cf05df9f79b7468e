"""The HTTP side: admin API under /v1 (bearer token), and /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import msgspec
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.admin.attempt_routes import AttemptRoutes, History
from service.admin.dead_letter_routes import DeadLetterRoutes, DeadLetterStore
from service.admin.openapi import SPEC
from service.admin.requests import SCOPE, decode_body, page_limit
from service.admin.responses import error_response, json_response
from service.catalog.entries import BY_TYPE, catalog
from service.config import MAX_ROTATION_GRACE
from service.delivery.netguard import AddressPolicy
from service.delivery.outcomes import AttemptResult
from service.delivery.pool import Prepared
from service.events.envelope import MAX_TYPE_LENGTH, TYPE_PATTERN, Event, rfc3339
from service.observability import metrics
from service.subscriptions.api_keys import ApiKey, ApiKeyCreate, hash_key, new_api_key
from service.subscriptions.model import (
    Health,
    InvalidSubscription,
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
    apply_patch,
    new_subscription,
    rotate_secret,
)


class RotateSecret(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    grace_seconds: int | None = None


class TestSend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The catalog's sample of this type is sent, unless `data` is given.
    event_type: str | None = None
    data: dict[str, Any] | None = None


class Tester(Protocol):
    """Makes one real attempt now (the delivery pool)."""

    async def attempt(
        self, event: Event, sub: Subscription, *, trigger: str = "test"
    ) -> tuple[Prepared, AttemptResult]: ...


log = structlog.get_logger("switchboard.api")

MAX_BODY_BYTES: Final = 64 * 1024
# A write waits for this replica to read it back; past this the table is not following the
# topic, and the client is told to retry rather than left hanging.
WRITE_TIMEOUT_SECONDS: Final = 10.0
# The consumer loop polls every 200 ms; silence this long means it is stuck.
LIVENESS_STALL_SECONDS: Final = 60.0
_SUB_ID: Final = re.compile(r"sub_[0-9a-f]{24}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Table(Protocol):
    loaded: asyncio.Event

    def get(self, sub_id: str) -> Subscription | None: ...
    def all(self) -> list[Subscription]: ...
    def api_key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    def api_keys(self) -> list[ApiKey]: ...
    def health(self, sub_id: str) -> Health | None: ...
    async def put(self, record: Subscription | ApiKey) -> None: ...
    async def delete(self, record_id: str) -> None: ...
    async def put_health(self, sub_id: str, health: Health | None) -> None: ...


class LoopState(Protocol):
    started: bool
    last_tick: float


class AdminApi:
    def __init__(
        self,
        *,
        table: Table,
        dead_letters: DeadLetterStore,
        token: str,
        policy: AddressPolicy,
        loop_state: LoopState,
        history: History,
        tester: Tester,
        rotation_grace_seconds: int = 86_400,
    ) -> None:
        self._rotation_grace = rotation_grace_seconds
        self._table = table
        self._dead_letters = DeadLetterRoutes(dead_letters, table.get)
        self._token = token.encode()
        self._policy = policy
        self._loop_state = loop_state
        self._attempts = AttemptRoutes(history, self._find)
        self._tester = tester
        self.shutting_down = False
        metrics.READY.set_function(lambda: 0 if self._not_ready() else 1)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[self._errors, self._auth]
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_post("/v1/subscriptions", self.create)
        app.router.add_get("/v1/subscriptions", self.list)
        app.router.add_get("/v1/subscriptions/{id}", self.get)
        app.router.add_patch("/v1/subscriptions/{id}", self.patch)
        app.router.add_delete("/v1/subscriptions/{id}", self.delete)
        app.router.add_post("/v1/subscriptions/{id}/rotate-secret", self.rotate)
        app.router.add_post("/v1/subscriptions/{id}/test", self.test_send)
        app.router.add_get("/v1/event-types", self.event_types)
        app.router.add_get("/v1/event-types/{type}", self.event_type)
        self._attempts.add_to(app)
        self._dead_letters.add_to(app)
        app.router.add_post("/v1/api-keys", self.create_key)
        app.router.add_get("/v1/api-keys", self.list_keys)
        app.router.add_delete("/v1/api-keys/{id}", self.delete_key)
        return app

    # Middlewares

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Sets SCOPE: None for the operator token, else the API key's tenant."""
        if request.path.startswith("/v1"):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return error_response(401, "unauthorized", "a valid bearer token is required")
            # compare_digest takes the same time whatever prefix matches.
            if hmac.compare_digest(token.encode(), self._token):
                request[SCOPE] = None
            elif (key := self._table.api_key_by_hash(hash_key(token))) is not None:
                request[SCOPE] = key.tenant_id
            else:
                return error_response(401, "unauthorized", "a valid bearer token is required")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            return error_response(exc.status, code, exc.reason)
        except TimeoutError:
            return error_response(503, "unavailable", "the subscriptions topic is not answering")
        except Exception:
            log.exception("api_internal_error", path=request.path, method=request.method)
            return error_response(500, "internal", "internal error")

    # Probes and metrics

    async def healthz(self, _request: web.Request) -> web.Response:
        state = self._loop_state
        stalled = state.started and time.monotonic() - state.last_tick > LIVENESS_STALL_SECONDS
        if stalled:
            return json_response({"status": "stalled"}, status=503)
        return json_response({"status": "ok"})

    def _not_ready(self) -> list[str]:
        problems = []
        if not self._table.loaded.is_set():
            problems.append("subscriptions not loaded")
        if not self._loop_state.started:
            problems.append("event consumer not started")
        if self.shutting_down:
            problems.append("shutting down")
        return problems

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = self._not_ready()
        ready = not problems
        return json_response(
            {"status": "ready" if ready else "not_ready", "problems": problems},
            status=200 if ready else 503,
        )

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, _request: web.Request) -> web.Response:
        return json_response(SPEC)

    # Subscriptions

    async def create(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = decode_body(body, SubscriptionCreate)
        if isinstance(req, web.Response):
            return req
        scope = request[SCOPE]
        if scope is not None and req.tenant_id != scope:
            # 404 like every other cross-tenant request: nothing confirms the tenant exists.
            return error_response(404, "not_found", "no such tenant", "tenant_id")
        try:
            sub = new_subscription(req, self._policy)
        except InvalidSubscription as exc:
            return error_response(422, "invalid_field", exc.message, exc.field)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(sub)
        log.info("subscription_created", subscription_id=sub.id, tenant_id=sub.tenant_id)
        # The only response that ever carries the secret.
        return json_response({**self._view(sub), "secret": sub.secret}, status=201)

    async def list(self, request: web.Request) -> web.Response:
        tenant = request.query.get("tenant_id")
        scope = request[SCOPE]
        if scope is not None:
            if tenant not in (None, scope):
                return json_response({"data": [], "next_after": None})
            tenant = scope
        after = request.query.get("after", "")
        limit = page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        subs = sorted(
            (s for s in self._table.all() if tenant is None or s.tenant_id == tenant),
            key=lambda s: s.id,
        )
        page = [s for s in subs if s.id > after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        return json_response(
            {"data": [self._view(s) for s in page], "next_after": page[-1].id if more else None}
        )

    async def get(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return _not_found()
        return json_response(self._view(sub))

    def _view(self, sub: Subscription) -> dict[str, object]:
        health = self._table.health(sub.id)
        return {
            **sub.public(),
            "failing_since": rfc3339(health.failing_since) if health is not None else None,
        }

    async def patch(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return _not_found()
        body = await request.read()
        patch = decode_body(body, SubscriptionPatch)
        if isinstance(patch, web.Response):
            return patch
        try:
            updated = apply_patch(sub, patch, self._policy)
        except InvalidSubscription as exc:
            return error_response(422, "invalid_field", exc.message, exc.field)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(updated)
            if updated.enabled and not sub.enabled and self._table.health(sub.id) is not None:
                # Enabled again: the failing span starts over, or it would be disabled at once.
                await self._table.put_health(sub.id, None)
        log.info("subscription_updated", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return json_response(self._view(updated))

    async def delete(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return _not_found()
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.delete(sub.id)
            if self._table.health(sub.id) is not None:
                await self._table.put_health(sub.id, None)
        log.info("subscription_deleted", subscription_id=sub.id, tenant_id=sub.tenant_id)
        return web.Response(status=204)

    async def rotate(self, request: web.Request) -> web.Response:
        sub = self._find(request)
        if sub is None:
            return _not_found()
        body = await request.read()
        req = decode_body(body or b"{}", RotateSecret)
        if isinstance(req, web.Response):
            return req
        grace = self._rotation_grace if req.grace_seconds is None else req.grace_seconds
        if not 0 <= grace <= MAX_ROTATION_GRACE:
            return error_response(
                422, "invalid_field", f"must be 0..{MAX_ROTATION_GRACE}", "grace_seconds"
            )
        rotated = rotate_secret(sub, grace)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(rotated)
        log.info("subscription_secret_rotated", subscription_id=sub.id, tenant_id=sub.tenant_id,
                 grace_seconds=grace)  # fmt: skip
        # Like creation, the only response that shows the new secret.
        return json_response({**self._view(rotated), "secret": rotated.secret})

    async def test_send(self, request: web.Request) -> web.Response:
        """One real attempt now: signing, auth, shaping and address rules as for a delivery.
        Filters and the subscription's enabled flag do not apply: it is a test."""
        sub = self._find(request)
        if sub is None:
            return _not_found()
        req = decode_body(await request.read() or b"{}", TestSend)
        if isinstance(req, web.Response):
            return req
        event_type = req.event_type
        if event_type is None:
            exact = [t for t in sub.event_types if t in BY_TYPE]
            if req.data is None and not exact:
                return error_response(422, "invalid_field", "give an event type", "event_type")
            event_type = exact[0] if exact else "switchboard.test"
        if len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.fullmatch(event_type):
            return error_response(422, "invalid_field", "dotted lower-case", "event_type")
        data = req.data
        if data is None:
            entry = BY_TYPE.get(event_type)
            if entry is None:
                return error_response(
                    422, "invalid_field", "not in the catalog: give data to send", "event_type"
                )
            data = entry.sample
        now = time.time()
        event = Event(
            id="evt_test_" + secrets.token_hex(8),
            source="switchboard/test",
            type=event_type,
            tenant_id=sub.tenant_id,
            time=rfc3339(now),
            time_unix=now,
            data_raw=msgspec.json.encode(data),
        )
        prepared, result = await self._tester.attempt(event, sub, trigger="test")
        log.info("subscription_test_sent", subscription_id=sub.id, tenant_id=sub.tenant_id,
                 outcome=result.outcome.value, status=result.status)  # fmt: skip
        return json_response(
            {
                "event_id": event.id,
                "request": prepared.shown(),
                "outcome": result.outcome.value,
                "delivered": result.ok,
                "status": result.status,
                "latency_ms": round(result.duration * 1000, 3),
                "error": result.error,
                "response_excerpt": result.body_excerpt.decode("utf-8", "replace"),
            }
        )

    # Event catalog

    async def event_types(self, request: web.Request) -> web.Response:
        group = request.query.get("group")
        entries = [e for e in catalog() if group is None or e.group == group]
        return json_response({"data": [e.describe() for e in entries]})

    async def event_type(self, request: web.Request) -> web.Response:
        entry = BY_TYPE.get(request.match_info["type"])
        if entry is None:
            return error_response(404, "not_found", "no such event type in the catalog")
        return json_response(entry.describe())

    def _find(self, request: web.Request) -> Subscription | None:
        """The subscription named in the path, if it exists and the caller may see it."""
        sub_id = request.match_info["id"]
        sub = self._table.get(sub_id) if _SUB_ID.fullmatch(sub_id) else None
        if sub is None:
            return None
        scope = request[SCOPE]
        return sub if scope is None or sub.tenant_id == scope else None

    # Tenant API keys (operator only: to a tenant key these routes do not exist)

    async def create_key(self, request: web.Request) -> web.Response:
        if request[SCOPE] is not None:
            return error_response(404, "not_found", "no such route")
        req = decode_body(await request.read(), ApiKeyCreate)
        if isinstance(req, web.Response):
            return req
        if not req.tenant_id or len(req.tenant_id) > 256 or not req.tenant_id.isprintable():
            return error_response(422, "invalid_field", "1..256 printable characters", "tenant_id")
        if len(req.name) > 200:
            return error_response(422, "invalid_field", "at most 200 characters", "name")
        record, key = new_api_key(req)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(record)
        log.info("api_key_created", api_key_id=record.id, tenant_id=record.tenant_id)
        # The only response that shows the key.
        return json_response({**record.public(), "key": key}, status=201)

    async def list_keys(self, request: web.Request) -> web.Response:
        if request[SCOPE] is not None:
            return error_response(404, "not_found", "no such route")
        tenant = request.query.get("tenant_id")
        keys = sorted(
            (k for k in self._table.api_keys() if tenant is None or k.tenant_id == tenant),
            key=lambda k: k.id,
        )
        return json_response({"data": [k.public() for k in keys]})

    async def delete_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        known = {k.id for k in self._table.api_keys()}
        if request[SCOPE] is not None or key_id not in known:
            return error_response(404, "not_found", "no such API key")
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.delete(key_id)
        log.info("api_key_deleted", api_key_id=key_id)
        return web.Response(status=204)


def _not_found() -> web.Response:
    return error_response(404, "not_found", "no such subscription")
