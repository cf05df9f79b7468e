"""The customers' portal in a real browser (Chromium through Playwright), against the running
service with the real broker and PostgreSQL: the scenarios of issue 15, screen by screen."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from playwright.async_api import Page, expect

from service.catalog.entries import BY_TYPE
from tests.conftest import RunningService
from tests.helpers.browser import accessible, chromium, shot
from tests.helpers.portal import HISTORY_WAIT, framing_page, open_portal, portal_link, reload_until
from tests.helpers.webhooks import Recorder, Seen, send_event

CRM_TOKEN = "crm-token-0123456789"


# A browser takes a core while it renders: these run after the timing-sensitive broker tests
# (`make test`), not beside them.
pytestmark = pytest.mark.browser


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
    platform = await http_server(framing_page(embedded))
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
