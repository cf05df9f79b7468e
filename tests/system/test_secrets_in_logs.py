"""Secrets never reach a log line: admin token, signing secrets, endpoint auth, Kafka password."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.conftest import ADMIN_TOKEN, RunningService, produce_events, wait_until


async def test_no_secret_is_ever_logged(
    service_factory: Any,
    producer: AIOKafkaProducer,
    http_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    attempts = 0

    async def flaky(_request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        return web.Response(status=500 if attempts == 2 else 200)

    app = web.Application()
    app.router.add_post("/hook", flaky)
    base = await http_server(app)
    svc: RunningService = await service_factory(log_level="debug")
    created = await svc.create_subscription(
        tenant_id="acme", name="n", url=base + "/hook", event_types=["*"],
        headers={"X-Api-Key": "customer-api-key-value"},
    )  # fmt: skip
    # Endpoint auth secrets, and a test send that echoes the request.
    bearer = await svc.create_subscription(
        tenant_id="acme", name="b", url=base + "/hook", event_types=["call.started"],
        auth={"type": "bearer", "token": "customer-bearer-token-value"},
    )  # fmt: skip
    async with svc.http.post(f"{svc.base}/v1/subscriptions/{bearer['id']}/test", json={}) as r:
        assert "customer-bearer-token-value" not in await r.text()
    url = f"{svc.base}/v1/subscriptions/{created['id']}/rotate-secret"
    async with svc.http.post(url, json={"grace_seconds": 60}) as r:
        rotated = (await r.json())["secret"]
    await produce_events(producer, svc.topic, types=["call.ended"])
    assert await wait_until(lambda: attempts == 3, within=20)  # test, failed attempt, success
    await svc.stop()
    out = capsys.readouterr()
    logs = out.out + out.err
    # The lines are there: start-up settings, the failed attempt, the rotation, the delivery.
    for line in ("starting", "delivery_attempt_failed", "subscription_secret_rotated", "delivered"):
        assert line in logs, line
    for secret in (ADMIN_TOKEN, created["secret"], rotated, "customer-api-key-value",
                   "customer-bearer-token-value", bearer["secret"]):  # fmt: skip
        assert secret not in logs
        assert secret.removeprefix("whsec_") not in logs
