"""The customers' portal in a real browser (Chromium through Playwright), against the running
service with the real broker and PostgreSQL: the scenarios of issue 15 and the refusals."""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, expect

from service.catalog.entries import BY_TYPE
from service.portal.tokens import Grant, portal_key, seal
from tests.conftest import ADMIN_TOKEN, RunningService
from tests.helpers.browser import accessible, chromium, shot
from tests.helpers.webhooks import Recorder, Seen, send_event

CRM_TOKEN = "crm-token-0123456789"
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


async def add_endpoint(
    page: Page, name: str, url: str, types: list[str], preview: str | None = None, **fields: str
) -> str:
    """Fills the add form and saves; returns the secret the answer shows. With `preview`,
    first checks that the live preview of the request shows it."""
    await page.goto(page.url.split("/portal/")[0] + "/portal/")
    await page.get_by_role("link", name="Add endpoint").click()
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_label("URL", exact=True).fill(url)
    for event_type in types:
        await page.locator(f"input[value='{event_type}']").check()
    for label, value in fields.items():
        field = page.locator(f"#{label}")
        if await field.evaluate("el => el.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    if preview is not None:
        await page.get_by_role("button", name="Preview the request").click()
        await expect(page.locator("#preview pre")).to_contain_text(preview)
        await shot(page, "template-preview")
    await page.get_by_role("button", name="Add endpoint").click()
    await expect(page.get_by_text("It is shown only once")).to_be_visible()
    return await page.get_by_label("Signing secret").input_value()


async def test_portal_scenarios(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # The platform's page, allowed to embed the portal.
    embedded: dict[str, str] = {}
    platform = await http_server(_framing_page(embedded))
    svc: RunningService = await service_factory(
        portal_cookie_secure="false", portal_frame_ancestors=platform
    )
    failing = {"on": True}

    def answer(seen: Seen) -> web.Response:
        if seen.path == "/flaky" and failing["on"]:
            return web.Response(status=500, text="down for maintenance")
        return web.json_response({"ok": True})

    recorder = Recorder(answer)
    base = await http_server(recorder.app())
    async with chromium() as browser:
        # 1. The session link opens the portal; the token leaves the address bar.
        page = await open_portal(browser, svc)
        assert page.url.endswith("/portal/")
        await expect(page.get_by_role("heading", name="Endpoints")).to_be_visible()
        await accessible(page)

        # 2-3. Add an endpoint through the form; the secret shows once.
        await page.get_by_role("link", name="Add endpoint").click()
        await expect(page.get_by_text("call.ended", exact=True)).to_be_visible()
        await accessible(page)
        await shot(page, "endpoint-form")
        types = ["call.ended", "call.summary_ready"]
        secret = await add_endpoint(page, "CRM", base + "/crm", types, auth_type="bearer",
                                    auth_token=CRM_TOKEN)  # fmt: skip
        assert secret.startswith("whsec_")
        await accessible(page)
        await shot(page, "secret")
        await page.get_by_role("link", name="Continue to the endpoint").click()
        await expect(page.get_by_role("heading", name="CRM")).to_be_visible()
        assert secret not in await page.content()
        sub_id = page.url.rsplit("/", 1)[1]
        await accessible(page)

        # 4. A test event: the request as sent, the answer; in the receiver and the log.
        await page.get_by_label("Event type", exact=True).select_option("call.ended")
        await page.get_by_role("button", name="Send test event").click()
        await expect(page.get_by_text("Delivered", exact=True)).to_be_visible()
        sent = await page.locator("pre.request").inner_text()
        assert "webhook-signature: v1," in sent
        # The endpoint's credential went out, and is masked where the request is shown.
        assert "Authorization: ********" in sent
        assert CRM_TOKEN not in await page.content()
        assert recorder.at("/crm")[0].headers["Authorization"] == f"Bearer {CRM_TOKEN}"
        await accessible(page)
        await shot(page, "test-event")
        assert [s.json()["type"] for s in recorder.at("/crm")] == ["call.ended"]
        await page.get_by_role("link", name="See it in the delivery log").click()
        await reload_until(page, "call.ended")
        await expect(page.locator(".attempt .badge").first).to_have_text("success")

        # 5. Real events; one found by its call id.
        sample = BY_TYPE["call.ended"].sample
        for n in range(3):
            call = {**sample["call"], "id": f"call_portal_{n}"}
            await send_event(producer, svc.topic, "call.ended", {**sample, "call": call})
        await page.goto(f"{svc.base}/portal/search")
        await page.get_by_label("Id", exact=True).fill("call_portal_1")
        await page.get_by_role("button", name="Search").click()
        await reload_until(page, "call_portal_1</dd>")
        await expect(page.locator(".attempt")).to_have_count(1)
        await page.locator(".attempt summary").click()
        await accessible(page)
        await shot(page, "search")
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}/log")
        await reload_until(page, "call_portal_2")
        await page.locator(".attempt summary").first.click()
        await accessible(page)
        await shot(page, "log")

        # 6. An endpoint that fails: its dead letter replayed from the page.
        # Its body is a template, previewed live from the catalog's sample before saving.
        await add_endpoint(page, "Flaky", base + "/flaky", ["call.started"],
                           preview='"phone":"+14155550123"', max_attempts="1",
                           body_template='{"phone": "{{data.contact.phoneNumber}}"}')  # fmt: skip
        await send_event(producer, svc.topic, "call.started", BY_TYPE["call.started"].sample)
        await page.goto(f"{svc.base}/portal/dead-letters")
        await reload_until(page, "call.started")
        await accessible(page)
        await shot(page, "dead-letters")
        assert recorder.at("/flaky")[0].json() == {"phone": "+14155550123"}
        failing["on"] = False
        await page.locator("input[name=ids]").check()
        await page.get_by_role("button", name="Replay selected").click()
        await expect(page.get_by_text("1 sent again")).to_be_visible()
        deadline = time.monotonic() + HISTORY_WAIT
        while len(recorder.at("/flaky")) < 2:
            assert time.monotonic() < deadline, "the replay did not arrive"
            await page.wait_for_timeout(100)

        # An endpoint that keeps failing, recovered from a time on.
        failing["on"] = True
        await send_event(producer, svc.topic, "call.started", BY_TYPE["call.started"].sample)
        await page.goto(f"{svc.base}/portal/")
        flaky = await page.get_by_role("link", name="Flaky").get_attribute("href")
        assert flaky is not None
        await page.goto(f"{svc.base}/portal/dead-letters?subscription_id={flaky.rsplit('/')[-1]}")
        await reload_until(page, "call.started")
        failing["on"] = False
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
        await page.get_by_label("Send again everything that failed since (UTC)").fill(since)
        await page.get_by_role("button", name="Recover").click()
        await expect(page.get_by_text("1 sent again")).to_be_visible()

        # Edit: the saved form comes back as it was, and a change shows.
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}/edit")
        await expect(page.locator("input[value='call.summary_ready']")).to_be_checked()
        await page.get_by_label("Timeout (seconds)").fill("5")
        await page.get_by_role("button", name="Save changes").click()
        await expect(page.get_by_text("Saved.")).to_be_visible()
        await expect(page.get_by_text("5 s", exact=True)).to_be_visible()
        # The form showed the credential masked; saving the mask kept the saved one.
        await page.get_by_role("button", name="Send test event").click()
        await expect(page.get_by_text("Delivered", exact=True)).to_be_visible()
        assert recorder.at("/crm")[-1].headers["Authorization"] == f"Bearer {CRM_TOKEN}"

        # 7. Rotate the secret: a new one, shown once; the old one still signs for the grace.
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}")
        await page.get_by_label("Keep the old secret signing for").select_option("3600")
        await page.get_by_role("button", name="Rotate secret").click()
        rotated = await page.get_by_label("Signing secret").input_value()
        assert rotated.startswith("whsec_")
        assert rotated != secret
        await expect(page.get_by_text("The previous secret keeps signing until")).to_be_visible()

        # Stats as a chart (test sends are not counted), and the list at phone width.
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}")
        await reload_until(page, "last 24 hours: 3 attempts")
        await expect(page.locator("svg.chart")).to_contain_text("100.0%")
        await shot(page, "endpoint")
        await page.goto(f"{svc.base}/portal/")
        await expect(page.get_by_role("link", name="Flaky")).to_be_visible()
        await shot(page, "endpoints")
        await page.set_viewport_size({"width": 390, "height": 844})
        await accessible(page)
        await shot(page, "endpoints-phone")
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}/log")
        await shot(page, "log-phone")
        await page.goto(f"{svc.base}/portal/endpoints/{sub_id}/edit")
        await accessible(page)
        await shot(page, "endpoint-form-phone")

        # Embedded in the platform's page, the one origin the setting allows.
        embedded["url"] = await portal_link(svc)
        await page.goto(platform)
        frame = page.frame_locator("iframe")
        await expect(frame.get_by_role("heading", name="Endpoints")).to_be_visible()


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
        csrf = await _csrf(page, svc)
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
        for token in ("", await _csrf(other, svc)):
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
            form={"enabled": "true", "csrf": await _csrf(viewer, svc)},
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
        framing = await http_server(_framing_page({"url": svc.base + "/portal/"}))
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


def _framing_page(src: dict[str, str]) -> web.Application:
    """A page of another origin that embeds `src["url"]` in an iframe, as a platform does."""

    async def handle(_request: web.Request) -> web.Response:
        frame = f'<iframe src="{src["url"]}" title="portal"></iframe>'
        return web.Response(text=f"<!doctype html><title>platform</title>{frame}",
                            content_type="text/html")  # fmt: skip

    app = web.Application()
    app.router.add_get("/", handle)
    return app


async def _csrf(page: Page, svc: RunningService) -> str:
    """The session's CSRF token, as a form of the page carries it."""
    await page.goto(f"{svc.base}/portal/")
    forms = page.locator("input[name=csrf]")
    if await forms.count():
        return str(await forms.first.input_value())
    return ""
