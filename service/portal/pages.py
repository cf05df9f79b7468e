"""Rendering a portal page: the template, and what every page knows (tenant, CSRF token)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

# The CSRF token of the request's session, set by the guard; read by every form.
CSRF: Final = web.RequestKey[str]("portal_csrf")
TENANT: Final = web.RequestKey[str]("portal_tenant")
READ_ONLY: Final = web.RequestKey[bool]("portal_read_only")


def page(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            "csrf": request.get(CSRF, ""),
            "tenant": request.get(TENANT),
            "read_only": request.get(READ_ONLY, True),
            **context,
        },
        status=status,
    )


def error_page(request: web.Request, title: str, detail: str, status: int) -> web.Response:
    return page(request, "error.html", {"title": title, "detail": detail}, status)
