"""Fixtures: a real Kafka-protocol broker (Tansu) for the session, the service in-process,
and webhook receivers as real aiohttp servers on loopback.

Set SWITCHBOARD_TEST_KAFKA=host:port to run the suite against another Kafka instead, and
SWITCHBOARD_TEST_HISTORY_DSN=postgresql://... against another PostgreSQL than the embedded
one (each test gets a schema of its own there, dropped after it).
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, settings

from service.app import Switchboard
from service.config import Settings, load_settings
from service.observability.logs import configure_logging
from tools.postgres import EmbeddedPostgres, with_settings
from tools.receiver import Receiver, start_site, wait_until
from tools.service_env import ADMIN_TOKEN, create_topic, service_env
from tools.tansu import TansuBroker
from tools.voice_events import cloud_event

# The machines that run the suite are shared and noisy: a slow first draw or a slow example is
# the machine, not the code under test. Example counts stay at hypothesis' defaults.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

# Logs as in production (JSON, every line at debug), written to the current stderr so that a
# test can capture and inspect them.
configure_logging("debug", "json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker, so `pytest -m 'not kafka'` runs in seconds:
    the system tests, and any test using the broker fixture, however indirectly."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in fixtures or "system" in item.path.parts:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("SWITCHBOARD_TEST_KAFKA")
    if external:
        yield external
        return
    with TansuBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL server for the session (one per xdist worker)."""
    external = os.environ.get("SWITCHBOARD_TEST_HISTORY_DSN")
    if external:
        yield external
        return
    with EmbeddedPostgres() as pg:
        yield pg.dsn


async def create_schema(server_dsn: str) -> tuple[str, str]:
    """A fresh schema on the server: its name, and a DSN whose search_path is it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema, with_settings(server_dsn, search_path=schema)


async def drop_schema(server_dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def history_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN on a fresh schema of the session's server: tests never see each other's rows."""
    schema, dsn = await create_schema(postgres_dsn)
    yield dsn
    await drop_schema(postgres_dsn, schema)


@dataclass
class RunningService:
    app: Switchboard
    task: asyncio.Task[None]
    http: aiohttp.ClientSession
    settings: Settings

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    @property
    def topic(self) -> str:
        return self.settings.event_topics[0]

    async def create_subscription(self, **fields: Any) -> dict[str, Any]:
        async with self.http.post(f"{self.base}/v1/subscriptions", json=fields) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 201, body
            return body

    async def stop(self) -> None:
        self.app.request_stop()
        await asyncio.wait_for(self.task, 30)


async def start_service(settings: Settings, partitions: int = 1) -> RunningService:
    await create_topic(settings.kafka_bootstrap_servers, settings.event_topics[0], partitions)
    app = Switchboard(settings)
    task = asyncio.create_task(app.run())
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    service = RunningService(app, task, http, settings)

    async def ready() -> bool:
        if app.port is None:
            return False
        async with http.get(f"{service.base}/readyz") as resp:
            return resp.status == 200

    deadline = asyncio.get_running_loop().time() + 60
    while not (task.done() or await ready()):
        assert asyncio.get_running_loop().time() < deadline, "service not ready in 60 s"
        await asyncio.sleep(0.05)
    if task.done():
        task.result()  # raises what made it stop
    return service


@pytest.fixture
async def service_factory(kafka_bootstrap: str, history_dsn: str) -> AsyncIterator[Any]:
    """Start services with the test's own topics and history schema; `history_dsn=None`
    starts one without a history store. `otel_env` adds OTEL_* variables (tracing) to this
    service's settings only: the process environment, shared by other tests, is not touched."""
    started: list[RunningService] = []

    async def factory(
        partitions: int = 1, otel_env: dict[str, str] | None = None, **overrides: Any
    ) -> RunningService:
        overrides.setdefault("history_dsn", history_dsn)
        env = service_env(kafka_bootstrap, **overrides)
        settings = load_settings({**env, **(otel_env or {})})
        svc = await start_service(settings, partitions)
        started.append(svc)
        return svc

    yield factory
    for svc in started:
        if not svc.task.done():
            await svc.stop()
        await svc.http.close()


@pytest.fixture
async def service(service_factory: Any) -> RunningService:
    svc: RunningService = await service_factory()
    return svc


@dataclass
class ReceiverServer:
    receiver: Receiver
    port: int

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[ReceiverServer]:
    rcv = Receiver()
    runner, port = await start_site(rcv.app())
    yield ReceiverServer(rcv, port)
    await runner.cleanup()


@pytest.fixture
async def http_server() -> AsyncIterator[Any]:
    """Start any aiohttp app on loopback; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, port = await start_site(app)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False, linger_ms=2)
    await p.start()
    yield p
    await p.stop()


async def produce_events(
    producer: AIOKafkaProducer,
    topic: str,
    *,
    tenant: str = "acme",
    types: list[str],
    seed: int = 0,
    partition: int | None = None,
) -> list[str]:
    """Produce one realistic event per type; returns their ids."""
    rng = random.Random(seed)
    ids = []
    for event_type in types:
        event_id = f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        await producer.send(
            topic, cloud_event(event_type, tenant, rng, event_id), partition=partition
        )
        ids.append(event_id)
    await producer.flush()
    return ids


__all__ = ["ADMIN_TOKEN", "create_topic", "produce_events", "service_env", "wait_until"]
