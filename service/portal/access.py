"""Who is in the portal: opening a link, the session cookie, CSRF, and the headers every
portal answer carries.

A link (`?token=`) opens once: its id is recorded in the history store, which every replica
shares, so a second opening anywhere is refused. Opening it sets a new session cookie and
redirects, so the token leaves the address bar at once. Every other page needs the cookie;
every POST needs the session's CSRF token too, and a read-only session may not POST at all.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from service.config import Settings
from service.history.store import STORE_ERRORS, HistoryStore
from service.observability import metrics
from service.portal.link_uses import first_opening
from service.portal.pages import CSRF, READ_ONLY, TENANT, error_page
from service.portal.tokens import Grant, csrf_token, new_session, seal, unseal

log = structlog.get_logger("switchboard.portal")

COOKIE: Final = "switchboard_portal"
# The session of the request; set by the guard on every page but the link's and static files.
SESSION: Final = web.RequestKey[Grant]("portal_session")
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
# Paths under the portal that need no session: the link itself, and the stylesheet and script.
OPEN_PATHS: Final = ("/portal/start", "/portal/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PortalAccess:
    def __init__(self, key: bytes, settings: Settings, history: HistoryStore | None) -> None:
        self._key = key
        self._secure = settings.portal_cookie_secure
        self._samesite = settings.portal_cookie_samesite
        self._history = history
        ancestors = " ".join(settings.portal_frame_ancestors) or "'none'"
        self.headers = {
            # Pages show one tenant's data to one session: never kept by a cache or the
            # browser's history, and not shared between cookies.
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Vary": "Cookie",
            "X-Content-Type-Options": "nosniff",
            # The link's token must not leave in a Referer.
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                f"connect-src 'self'; form-action 'self'; base-uri 'none'; "
                f"frame-ancestors {ancestors}"
            ),
        }
        if not settings.portal_frame_ancestors:
            self.headers["X-Frame-Options"] = "DENY"

    def csrf(self, session: Grant) -> str:
        return csrf_token(self._key, session)

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Opens a link: refused when forged, expired or opened before; else a session."""
        link = unseal(self._key, "link", request.query.get("token", ""))
        if link is None:
            return _refused(request, "link_invalid", "This link is not valid",
                            "Ask your platform for a new portal link.", 403)  # fmt: skip
        if link.expires < time.time():
            return _refused(request, "link_expired", "This link has expired",
                            "Portal links work for a few minutes only. Open the portal again "
                            "from your platform.", 403)  # fmt: skip
        if self._history is None or not self._history.ready.is_set():
            return _refused(request, "store_unavailable", "The portal is not available",
                            "Its store is not answering; try again shortly.", 503)  # fmt: skip
        try:
            first = await first_opening(self._history.pool, link.id, link.expires)
        except STORE_ERRORS as exc:
            self._history.failed("portal", exc)
            return _refused(request, "store_unavailable", "The portal is not available",
                            "Its store is not answering; try again shortly.", 503)  # fmt: skip
        if not first:
            return _refused(request, "link_used", "This link has already been used",
                            "Each portal link opens once. Open the portal again from your "
                            "platform.", 403)  # fmt: skip
        session = new_session(link)
        metrics.PORTAL_LINKS.labels("opened").inc()
        log.info("portal_session_opened", tenant_id=session.tenant_id, read_only=session.read_only)
        response = web.Response(status=303, headers={"Location": "/portal/"})
        response.set_cookie(
            COOKIE, seal(self._key, "session", session), path="/portal/",
            max_age=int(session.expires - time.time()), httponly=True, secure=self._secure,
            samesite=self._samesite,
        )  # fmt: skip
        if self._samesite == "None":
            # A cross-site iframe's cookie: partitioned per embedding site (CHIPS), which is
            # what browsers that block third-party cookies still keep.
            response.headers["Set-Cookie"] = response.headers["Set-Cookie"] + "; Partitioned"
        return response

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._checked(request, handler)
        if request.path.startswith("/portal/static/"):
            response.headers["Cache-Control"] = "public, max-age=3600"
        else:
            response.headers.update(self.headers)
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/portal":
            # Without its slash: the cookie is scoped to /portal/, so lead there first.
            return web.Response(status=308, headers={"Location": "/portal/"})
        if request.path.startswith(OPEN_PATHS):
            return await handler(request)
        session = unseal(self._key, "session", request.cookies.get(COOKIE, ""))
        if session is None or session.expires < time.time():
            return _refused(request, "no_session", "Your portal session has ended",
                            "Open the portal again from your platform.", 401)  # fmt: skip
        request[SESSION] = session
        request[TENANT] = session.tenant_id
        request[READ_ONLY] = session.read_only
        request[CSRF] = self.csrf(session)
        if request.method not in ("GET", "HEAD"):
            if session.read_only:
                return _refused(request, "read_only", "This portal session is read-only",
                                "Ask your platform for a portal link that may make changes.",
                                403)  # fmt: skip
            form = await request.post()
            sent = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD, ""))
            if not hmac.compare_digest(sent.encode(), request[CSRF].encode()):
                metrics.PORTAL_LINKS.labels("csrf_refused").inc()
                return _refused(request, "csrf", "This form has expired",
                                "Reload the page and try again.", 403)  # fmt: skip
        return await handler(request)


def _refused(request: web.Request, code: str, title: str, detail: str, status: int) -> web.Response:
    if code.startswith("link_"):
        metrics.PORTAL_LINKS.labels(code.removeprefix("link_")).inc()
    return error_page(request, title, detail, status)
