"""The portal as an aiohttp sub-application mounted at /portal/ on the service's own server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
import orjson
import structlog
from aiohttp import web

from service.admin.attempt_routes import AttemptRoutes
from service.admin.dead_letter_routes import DeadLetterRoutes
from service.admin.history_access import StoreUnavailable
from service.admin.responses import ApiError
from service.admin.subscription_routes import SubscriptionRoutes
from service.admin.test_send import TestSendRoutes
from service.config import Settings
from service.history.store import HistoryStore
from service.portal.access import Handler, PortalAccess
from service.portal.endpoint_routes import EndpointScreens
from service.portal.log_routes import LogScreens
from service.portal.pages import error_page

log = structlog.get_logger("switchboard.portal")

PREFIX: Final = "/portal/"
_HERE: Final = Path(__file__).parent
# What a refusal of the API is called on a page.
_TITLES: Final = {404: "Not found", 422: "That cannot be saved", 400: "That cannot be read"}


def portal_app(
    *, key: bytes, settings: Settings, history: HistoryStore | None,
    subs: SubscriptionRoutes, tests: TestSendRoutes, attempts: AttemptRoutes,
    dead: DeadLetterRoutes,
) -> web.Application:  # fmt: skip
    access = PortalAccess(key, settings, history)
    app = web.Application(middlewares=[access.guard, _errors])
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters={"pretty": _pretty, "when": _when},
    )
    app.router.add_get("/start", access.start)
    app.router.add_static("/static/", _HERE / "static")
    endpoints = EndpointScreens(subs, tests, attempts)
    endpoints.add_to(app)
    LogScreens(endpoints, attempts, dead).add_to(app)
    return app


def _when(stamp: str | None) -> str:
    """An RFC 3339 time as people read it: to the second, in UTC."""
    return "" if not stamp else stamp[:19].replace("T", " ") + " UTC"


def _pretty(value: Any) -> str:
    """JSON for reading, indented; also a stored event's data, which is raw JSON."""
    return orjson.dumps(orjson.loads(orjson.dumps(value)), option=orjson.OPT_INDENT_2).decode()


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as pages: the API's message, never a stack trace. Another tenant's id is a
    404 here exactly as a missing one is."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_page(request, _TITLES.get(exc.status, "That did not work"), exc.message,
                          exc.status)  # fmt: skip
    except StoreUnavailable:
        return error_page(request, "The delivery history is not available",
                          "Its store is not answering; try again shortly.", 503)  # fmt: skip
    except web.HTTPNotFound:
        return error_page(request, "Not found", "There is no such page.", 404)
    except TimeoutError:
        return error_page(request, "Not saved", "The service did not confirm the change in "
                          "time; try again (it is safe to repeat).", 503)  # fmt: skip
    except web.HTTPException:
        raise
    except Exception:
        log.exception("portal_internal_error", path=request.path, method=request.method)
        return error_page(request, "Something went wrong", "The error is logged; try again.",
                          500)  # fmt: skip
