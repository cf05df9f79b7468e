"""What the portal's browser tests share: a session link, a page opened with it, a page of
another origin that frames the portal, and waiting for the history store."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page

from tests.conftest import RunningService

# Seconds a page waits for the history store to show what the indexer writes a moment later.
HISTORY_WAIT = 20.0


async def portal_link(svc: RunningService, tenant: str = "acme", **extra: Any) -> str:
    async with svc.http.post(f"{svc.base}/v1/portal-sessions",
                             json={"tenant_id": tenant, **extra}) as resp:  # fmt: skip
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["url"])


async def reload_until(page: Page, text: str, within: float = HISTORY_WAIT) -> None:
    """Reloads until `text` shows: the log answers from the store, written a moment after."""
    deadline = time.monotonic() + within
    while text not in await page.content():
        assert time.monotonic() < deadline, f"{text!r} did not show on {page.url}"
        await page.wait_for_timeout(300)
        await page.reload()


async def open_portal(browser: Browser, svc: RunningService, **extra: Any) -> Page:
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(await portal_link(svc, **extra))
    return page


def framing_page(src: dict[str, str]) -> web.Application:
    """A page of another origin that embeds `src["url"]` in an iframe, as a platform does."""

    async def handle(_request: web.Request) -> web.Response:
        frame = f'<iframe src="{src["url"]}" title="portal"></iframe>'
        return web.Response(text=f"<!doctype html><title>platform</title>{frame}",
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    app.router.add_get("/", handle)
    return app


async def csrf_of(page: Page, svc: RunningService) -> str:
    """The session's CSRF token, as a form of the page carries it."""
    await page.goto(f"{svc.base}/portal/")
    forms = page.locator("input[name=csrf]")
    if await forms.count():
        return str(await forms.first.input_value())
    return ""
