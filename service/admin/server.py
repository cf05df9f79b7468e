"""The HTTP side: admin API under /v1 (bearer token), and /metrics, /healthz, /readyz.

Each resource's routes live in a module of their own; this one composes them and adds the
two middlewares every route goes through: errors as `{"error": ...}`, and the bearer token
resolved to the request's scope (the operator, or one tenant).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import structlog
from aiohttp import web

from service.admin.api_key_routes import ApiKeyRoutes
from service.admin.attempt_routes import AttemptRoutes
from service.admin.catalog_routes import CatalogRoutes
from service.admin.dead_letter_routes import DeadLetterRoutes, Replayer
from service.admin.event_routes import EventRoutes
from service.admin.history_access import HistoryAccess, StoreUnavailable
from service.admin.ordering_routes import OrderingRoutes
from service.admin.portal_session_routes import PortalSessionRoutes
from service.admin.probes import LoopState, Probes
from service.admin.responses import ApiError, error_response
from service.admin.scope import SCOPE
from service.admin.subscription_routes import SubscriptionRoutes
from service.admin.table import Table
from service.admin.test_send import Tester, TestSendRoutes
from service.config import Settings
from service.delivery.netguard import AddressPolicy
from service.history.store import HistoryStore
from service.ordering.control import OrderingControl
from service.portal.app import PREFIX as PORTAL_PREFIX
from service.portal.app import portal_app
from service.portal.tokens import portal_key
from service.subscriptions.api_keys import hash_key

log = structlog.get_logger("switchboard.api")

# A subscription with every field at its limit stays far below this; anything larger is not
# a request body this API takes.
MAX_BODY_BYTES: Final = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    def __init__(
        self,
        *,
        table: Table,
        dead_letters: Replayer | None,
        token: str,
        policy: AddressPolicy,
        loops: Sequence[LoopState],
        history: HistoryStore | None,
        tester: Tester,
        settings: Settings,
        ordering: OrderingControl,
    ) -> None:
        self._table = table
        self._token = token.encode()
        self._probes = Probes(table, loops, history)
        access = HistoryAccess(history)
        subscriptions = SubscriptionRoutes(table, policy, settings.secret_rotation_grace_seconds)
        tests = TestSendRoutes(subscriptions.find, tester)
        attempts = AttemptRoutes(access, subscriptions.find)
        dead = DeadLetterRoutes(access, dead_letters, table.get, subscriptions.find)
        key = portal_key(token)
        self._routes = (
            self._probes,
            subscriptions,
            tests,
            CatalogRoutes(),
            attempts,
            EventRoutes(access),
            dead,
            ApiKeyRoutes(table),
            OrderingRoutes(ordering, subscriptions.find),
            PortalSessionRoutes(key, settings.portal_public_url),
        )
        # The portal calls the same operations as the routes above, for one tenant.
        self._portal = portal_app(
            key=key, settings=settings, history=history, subs=subscriptions, tests=tests,
            attempts=attempts, dead=dead,
        )  # fmt: skip

    @property
    def shutting_down(self) -> bool:
        return self._probes.shutting_down

    @shutting_down.setter
    def shutting_down(self, value: bool) -> None:
        self._probes.shutting_down = value

    @property
    def kafka_problem(self) -> str | None:
        return self._probes.kafka_problem

    @kafka_problem.setter
    def kafka_problem(self, problem: str | None) -> None:
        self._probes.kafka_problem = problem

    def not_ready(self) -> list[str]:
        return self._probes.not_ready()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[self._errors, self._auth]
        )
        for routes in self._routes:
            routes.add_to(app)
        app.add_subapp(PORTAL_PREFIX, self._portal)
        return app

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
            if exc.status == 413:
                return error_response(
                    413, code, f"the body is larger than the limit of {MAX_BODY_BYTES} bytes"
                )
            return error_response(exc.status, code, exc.reason)
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable as exc:
            return exc.response
        except TimeoutError:
            return error_response(503, "unavailable", "the subscriptions topic is not answering")
        except Exception:
            log.exception("api_internal_error", path=request.path, method=request.method)
            return error_response(500, "internal", "internal error")
