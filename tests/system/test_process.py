"""The service as a process: SIGKILL mid-stream loses nothing, SIGTERM drains and exits 0,
a bad configuration is refused with a clear message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.conftest import create_topic, produce_events, service_env, wait_until
from tests.helpers.kafka import wait_committed
from tools.faults.fleet import ROOT, create_subscription, service_process, wait_ready
from tools.receiver import start_site
from tools.tansu import TansuBroker, free_port


class SlowReceiver:
    """Counts deliveries per event id; each response takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.webhook_ids: dict[str, set[str]] = defaultdict(set)
        self.deliveries = 0
        self.started = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.started += 1
        body = await request.json()
        await asyncio.sleep(self.delay)
        self.webhook_ids[body["id"]].add(request.headers["webhook-id"])
        self.deliveries += 1
        return web.Response(status=200)


@asynccontextmanager
async def receiver_site(receiver: SlowReceiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner, port = await start_site(app)
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    kafka_bootstrap: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(kafka_bootstrap, http_port=port, log_level="info")
    topic = env["SWITCHBOARD_EVENT_TOPICS"]
    await create_topic(kafka_bootstrap, topic, partitions=3)
    receiver = SlowReceiver(delay=0.01)
    total = 300
    async with receiver_site(receiver) as url:
        with service_process(env, tmp_path / "first.log") as first:
            await wait_ready(port, first)
            await create_subscription(
                port, tenant_id="acme", name="crm", url=url, event_types=["*"], max_in_flight=4
            )
            ids: list[str] = []
            for partition in range(3):
                ids += await produce_events(
                    producer,
                    topic,
                    types=["call.ended"] * (total // 3),
                    seed=partition,
                    partition=partition,
                )
            assert await wait_until(lambda: receiver.deliveries >= total // 5, within=60)
            first.send_signal(signal.SIGKILL)
            first.wait()
        delivered_before_restart = len(receiver.webhook_ids)
        assert delivered_before_restart < total, "the kill came too late to prove anything"
        with service_process(env, tmp_path / "second.log") as second:
            await wait_ready(port, second)
            ok = await wait_until(lambda: len(receiver.webhook_ids) == total, within=90)
            assert ok, f"{len(receiver.webhook_ids)} of {total} delivered after restart"
    assert set(receiver.webhook_ids) == set(ids)
    # A redelivered event carries the webhook-id the receiver saw the first time.
    assert all(len(v) == 1 for v in receiver.webhook_ids.values())


class DownReceiver:
    """Answers 503 until `up`; notes every webhook-id per event and the 2xx count."""

    def __init__(self) -> None:
        self.up = False
        self.failed = 0
        self.webhook_ids: dict[str, set[str]] = defaultdict(set)
        self.delivered: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.webhook_ids[body["id"]].add(request.headers["webhook-id"])
        if not self.up:
            self.failed += 1
            return web.Response(status=503)
        self.delivered.add(body["id"])
        return web.Response(status=200)


async def test_sigkill_with_retries_pending_then_restart_loses_none_of_them(
    kafka_bootstrap: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    port = free_port()
    # One retry, due 3 s after the first attempt: the kill lands while every one is waiting.
    env = service_env(kafka_bootstrap, http_port=port, log_level="info", retry_schedule="3")
    topic, group = env["SWITCHBOARD_EVENT_TOPICS"], env["SWITCHBOARD_GROUP_ID"]
    await create_topic(kafka_bootstrap, topic)
    receiver = DownReceiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner, receiver_port = await start_site(app)
    try:
        with service_process(env, tmp_path / "first.log") as first:
            await wait_ready(port, first)
            await create_subscription(port, tenant_id="acme", name="crm",
                                      url=f"http://127.0.0.1:{receiver_port}/hook",
                                      event_types=["*"])  # fmt: skip
            ids = await produce_events(producer, topic, types=["call.ended"] * 30)
            assert await wait_until(lambda: receiver.failed == 30, within=60)
            # The source records are committed: from here on the events exist only as retry
            # records, so what the restart delivers came from the retry topic.
            assert await wait_committed(kafka_bootstrap, group, topic, 30) == 30
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert receiver.delivered == set()
        receiver.up = True
        with service_process(env, tmp_path / "second.log") as second:
            await wait_ready(port, second)
            ok = await wait_until(lambda: receiver.delivered == set(ids), within=60)
            assert ok, f"{len(receiver.delivered)} of 30 delivered after restart"
    finally:
        await runner.cleanup()
    assert all(len(v) == 1 for v in receiver.webhook_ids.values())


async def test_sigterm_drains_in_flight_work_commits_and_exits_zero(
    kafka_bootstrap: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(kafka_bootstrap, http_port=port, shutdown_grace_seconds=20)
    topic, group = env["SWITCHBOARD_EVENT_TOPICS"], env["SWITCHBOARD_GROUP_ID"]
    await create_topic(kafka_bootstrap, topic)
    receiver = SlowReceiver(delay=0.3)
    async with receiver_site(receiver) as url:
        with service_process(env, tmp_path / "svc.log") as proc:
            await wait_ready(port, proc)
            await create_subscription(
                port, tenant_id="acme", name="crm", url=url, event_types=["*"], max_in_flight=2
            )
            await produce_events(producer, topic, tenant="acme", types=["call.ended"] * 10)
            assert await wait_until(lambda: receiver.started >= 2, within=30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
    # Everything consumed before SIGTERM was finished, not cut off, and its offsets committed.
    assert receiver.started == receiver.deliveries
    # The events were all handed off; the deliveries topic is committed as far as delivered.
    deliveries, delivery_group = env["SWITCHBOARD_DELIVERIES_TOPIC"], f"{group}.retry"
    committed = await wait_committed(
        kafka_bootstrap, delivery_group, deliveries, receiver.deliveries, within=5
    )
    assert committed == receiver.deliveries


def test_bad_configuration_is_refused_with_the_variable_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update({"SWITCHBOARD_ADMIN_TOKEN": "x" * 20, "SWITCHBOARD_HTTP_PORT": "http"})
    result = subprocess.run(
        [sys.executable, "-m", "service.cli"], env=env, cwd=ROOT, capture_output=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"SWITCHBOARD_HTTP_PORT" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "service.cli", "check-config"],
        env={**env, "SWITCHBOARD_HTTP_PORT": "8080"}, cwd=ROOT, capture_output=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


async def test_sigterm_with_the_brokers_gone_still_exits(tmp_path: Path) -> None:
    """Kafka clients wait out request timeouts (or for ever) to commit, flush and leave their
    group when no broker answers; SIGTERM must still end the process, in Kubernetes' grace."""
    with (tmp_path / "tansu.log").open("wb") as broker_log, TansuBroker(log=broker_log) as broker:
        port = free_port()
        env = service_env(broker.bootstrap, http_port=port, shutdown_grace_seconds=1)
        await create_topic(broker.bootstrap, env["SWITCHBOARD_EVENT_TOPICS"])
        receiver = SlowReceiver(delay=0)
        async with receiver_site(receiver) as url:
            with service_process(env, tmp_path / "svc.log") as proc:
                await wait_ready(port, proc)
                await create_subscription(port, tenant_id="acme", name="crm", url=url,
                                          event_types=["*"])  # fmt: skip
                producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                            enable_idempotence=False)  # fmt: skip
                await producer.start()
                try:
                    await produce_events(producer, env["SWITCHBOARD_EVENT_TOPICS"],
                                         types=["call.ended"] * 20)  # fmt: skip
                finally:
                    await producer.stop()
                assert await wait_until(lambda: receiver.deliveries == 20, within=30)
                broker.stop()
                started = asyncio.get_running_loop().time()
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 60)
                took = asyncio.get_running_loop().time() - started
    assert code == 0, (tmp_path / "svc.log").read_text()[-3000:]
    # Drain grace (1 s) + the stop margin (10 s) + bounded client stops (5 s each).
    assert took < 45, took
