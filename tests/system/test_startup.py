"""Start-up against brokers that cannot serve the settings: the problem named, with its fix."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from service.app import Switchboard
from service.config import load_settings
from tests.conftest import service_env, wait_until


async def test_a_broker_without_idempotent_producers_is_named_once_with_the_fix(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test broker has no idempotent producers; the production default asks for one.
    settings = load_settings(service_env(kafka_bootstrap, kafka_enable_idempotence="true"))
    app = Switchboard(settings)
    task = asyncio.create_task(app.run())
    try:
        assert await wait_until(lambda: app.port is not None, within=10)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{app.port}/readyz"

            async def problems() -> list[str]:
                async with http.get(url) as resp:
                    assert resp.status == 503
                    found: list[str] = (await resp.json())["problems"]
                    return found

            deadline = asyncio.get_running_loop().time() + 15
            while not any("IDEMPOTENCE" in p for p in await problems()):
                assert asyncio.get_running_loop().time() < deadline, await problems()
                await asyncio.sleep(0.1)
        # Retried with backoff (0.5 s, 1 s, ...), said once.
        await asyncio.sleep(2)
    finally:
        app.request_stop()
        await asyncio.wait_for(task, 30)
    logs = capsys.readouterr().err
    assert logs.count("kafka_idempotence_refused") == 1
    assert "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE=false" in logs
