"""The portal's refusals in a real browser, one test per threat of docs/security.md ("The
portal"): tenant crossing and CSRF; links, session fixation, caching and framing."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.async_api import expect

from service.portal.tokens import Grant, portal_key, seal
from tests.conftest import ADMIN_TOKEN, RunningService
from tests.helpers.browser import accessible, chromium, shot
from tests.helpers.portal import csrf_of, framing_page, open_portal, portal_link
from tests.helpers.webhooks import Recorder

# A browser takes a core while it renders: these run after the timing-sensitive broker tests
# (`make test`), not beside them.
pytestmark = pytest.mark.browser


async def _two_tenants(svc: RunningService, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    theirs = await svc.create_subscription(tenant_id="globex", name="theirs", url=base + "/x",
                                           event_types=["call.ended"])  # fmt: skip
    ours = await svc.create_subscription(tenant_id="acme", name="ours", url=base + "/y",
                                         event_types=["call.ended"])  # fmt: skip
    return theirs, ours


async def test_portal_tenant_crossing_and_csrf(service_factory: Any, http_server: Any) -> None:
    svc: RunningService = await service_factory(portal_cookie_secure="false")
    theirs, ours = await _two_tenants(svc, await http_server(Recorder().app()))
    async with chromium() as browser:
        page = await open_portal(browser, svc)
        assert "theirs" not in await page.content()
        # Another tenant's ids answer exactly as missing ones, on every screen of an endpoint.
        missing = "sub_" + "0" * 24
        paths = ("/portal/endpoints/{}", "/portal/endpoints/{}/log", "/portal/endpoints/{}/edit",
                 "/portal/dead-letters?subscription_id={}")  # fmt: skip
        for path in paths:
            answers = []
            for sub_id in (theirs["id"], missing):
                response = await page.goto(svc.base + path.format(sub_id))
                assert response is not None
                answers.append((response.status, await page.locator("main").inner_text()))
            assert answers[0] == answers[1]
            assert answers[0][0] == 404
        await accessible(page)
        await shot(page, "not-found")
        csrf = await csrf_of(page, svc)
        for action in ("enabled", "rotate", "test"):
            result = await page.request.post(
                f"{svc.base}/portal/endpoints/{theirs['id']}/{action}",
                form={"enabled": "false", "grace_seconds": "0", "csrf": csrf},
            )
            assert result.status == 404, action
        # Another tenant's dead letter is "not found" to a replay, as a missing one.
        result = await page.request.post(f"{svc.base}/portal/dead-letters/replay",
                                         form={"ids": "dl_0_0", "csrf": csrf})  # fmt: skip
        assert "dl_0_0: not_found" in await result.text()

        # A write without the CSRF token, or with another session's, is refused and changes
        # nothing.
        other = await open_portal(browser, svc)
        for token in ("", await csrf_of(other, svc)):
            result = await page.request.post(
                f"{svc.base}/portal/endpoints/{ours['id']}/enabled",
                form={"enabled": "false", "csrf": token},
            )
            assert result.status == 403
            assert "This form has expired" in await result.text()
        async with svc.http.get(f"{svc.base}/v1/subscriptions/{ours['id']}") as resp:
            assert (await resp.json())["enabled"] is True
        # With it, the same write works.
        result = await page.request.post(
            f"{svc.base}/portal/endpoints/{ours['id']}/enabled",
            form={"enabled": "false", "csrf": csrf},
        )
        assert result.status == 200
        async with svc.http.get(f"{svc.base}/v1/subscriptions/{ours['id']}") as resp:
            assert (await resp.json())["enabled"] is False

        # A read-only session sees, and may not change.
        viewer = await open_portal(browser, svc, read_only=True)
        await expect(viewer.get_by_role("link", name="ours")).to_be_visible()
        assert await viewer.get_by_role("button", name=re.compile("able")).count() == 0
        result = await viewer.request.post(
            f"{svc.base}/portal/endpoints/{ours['id']}/enabled",
            form={"enabled": "true", "csrf": await csrf_of(viewer, svc)},
        )
        assert result.status == 403


async def test_portal_links_sessions_and_framing(service_factory: Any, http_server: Any) -> None:
    svc: RunningService = await service_factory(portal_cookie_secure="false")
    async with chromium() as browser:
        # Session fixation: a cookie planted before the link opens is replaced by a new one.
        context = await browser.new_context()
        await context.add_cookies([{"name": "switchboard_portal", "value": "planted",
                                    "url": svc.base + "/portal/"}])  # fmt: skip
        page = await context.new_page()
        await page.goto(await portal_link(svc))
        await expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
        (cookie,) = await context.cookies()
        assert cookie["value"] != "planted"
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/portal/"
        # Session-bound pages: never cached, never framed (no origin is configured here).
        response = await page.goto(f"{svc.base}/portal/")
        assert response is not None
        headers = response.headers
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        framing = await http_server(framing_page({"url": svc.base + "/portal/"}))
        await page.goto(framing)
        await page.wait_for_timeout(500)
        frame = page.frames[1]
        assert "Endpoints" not in await frame.content()

        # A link opens once, never after it expires, and only as signed.
        link = await portal_link(svc)
        fresh = await browser.new_page()
        assert (await fresh.goto(link)) is not None
        again = await browser.new_page()
        response = await again.goto(link)
        assert response is not None
        assert response.status == 403
        await expect(again.get_by_role("heading")).to_have_text("This link has already been used")
        await accessible(again)
        await shot(again, "link-used")
        key = portal_key(ADMIN_TOKEN)
        old = Grant(id="expired-link", tenant_id="acme", read_only=False, expires=time.time() - 1)
        response = await again.goto(f"{svc.base}/portal/start?token={seal(key, 'link', old)}")
        assert response is not None
        assert response.status == 403
        await expect(again.get_by_role("heading")).to_have_text("This link has expired")
        wanted = Grant(id="forged", tenant_id="globex", read_only=False, expires=time.time() + 60)
        forged = seal(b"not the key" * 3, "link", wanted)
        response = await again.goto(f"{svc.base}/portal/start?token={forged}")
        assert response is not None
        assert response.status == 403
        await expect(again.get_by_role("heading")).to_have_text("This link is not valid")
        # A session cookie is not a link.
        response = await again.goto(f"{svc.base}/portal/start?token={cookie['value']}")
        assert response is not None
        assert response.status == 403
        # The portal's address without its slash leads to it.
        response = await again.goto(f"{svc.base}/portal")
        assert response is not None
        assert response.url == f"{svc.base}/portal/"
        # Without a session, no page.
        response = await again.goto(f"{svc.base}/portal/")
        assert response is not None
        assert response.status == 401

    # The API: a tenant key asks for its own tenant only; the operator must name one.
    async with svc.http.post(f"{svc.base}/v1/api-keys", json={"tenant_id": "globex"}) as resp:
        key_header = {"Authorization": f"Bearer {(await resp.json())['key']}"}
    async with svc.http.post(f"{svc.base}/v1/portal-sessions", json={"tenant_id": "acme"},
                             headers=key_header) as resp:  # fmt: skip
        assert resp.status == 404
    async with svc.http.post(f"{svc.base}/v1/portal-sessions", headers=key_header) as resp:
        assert resp.status == 201
        assert (await resp.json())["tenant_id"] == "globex"
    async with svc.http.post(f"{svc.base}/v1/portal-sessions", json={}) as resp:
        assert resp.status == 422
