"""`python -m tools.receiver` and `python -m tools.produce` as a user runs them."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from standardwebhooks import Webhook

from service.catalog.entries import schema_error
from tests.conftest import create_topic
from tools.tansu import free_port

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_the_receiver_listens_prints_and_verifies_until_interrupted() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.receiver", "--port", str(port), "--secret", f"crm={SECRET}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"http://127.0.0.1:{port}/" in banner.decode()
        body = orjson.dumps({"id": "evt_1", "type": "call.ended", "tenant_id": "acme"})
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/crm", data=body, headers=_signed(body)
            ) as r:
                assert r.status == 204
            query = "source=sb&phone=%2B1555"
            async with http.get(
                f"http://127.0.0.1:{port}/crm?{query}", headers=_signed(query.encode())
            ) as r:
                assert r.status == 204
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        second = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert "call.ended" in first
        assert "evt_1" in first
        assert "signature ok" in first
        assert "signature ok" in second  # a GET: its query string is what is signed
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def _signed(content: bytes) -> dict[str, str]:
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = _sign(headers, content)
    return headers


def _sign(headers: dict[str, str], content: bytes) -> str:
    stamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    return Webhook(SECRET).sign(headers["webhook-id"], stamp, content.decode())


async def test_produce_puts_catalogued_events_on_the_topic(kafka_bootstrap: str) -> None:
    topic = f"voice.events.{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.produce", "call.summary_ready", "--tenant", "acme",
        "--count", "2", "--bootstrap", kafka_bootstrap, "--topic", topic, "--no-idempotence",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    ids = out.decode().split()
    assert len(ids) == 2
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(records) < 2 and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    events = [orjson.loads(r.value) for r in records]
    assert [e["id"] for e in events] == ids
    for event in events:
        assert (event["type"], event["tenantid"]) == ("call.summary_ready", "acme")
        assert schema_error("call.summary_ready", event["data"]) is None
