"""The history store end to end, with the real broker and a real PostgreSQL: indexed once per
fleet, deliveries independent of the store, correlation search, replay across replicas."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.observability import metrics
from tests.conftest import RunningService, start_service
from tests.helpers.history import dead_letters, poll
from tests.helpers.webhooks import Recorder, send_event
from tools.postgres import EmbeddedPostgres


async def rows(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def get(svc: RunningService, path: str, **headers: str) -> tuple[int, Any]:
    async with svc.http.get(svc.base + path, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_without_a_store_the_service_delivers_and_history_routes_say_why(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(history_dsn=None)
    recorder = Recorder()
    sub = await svc.create_subscription(
        tenant_id="acme",
        name="crm",
        url=await http_server(recorder.app()) + "/h",
        event_types=["*"],
    )
    await send_event(producer, svc.topic, "call.ended", {"call": {"id": "c1"}})
    await poll(svc, "/healthz", lambda _b: len(recorder.seen) == 1)
    paths = (
        f"/v1/subscriptions/{sub['id']}/attempts",
        f"/v1/subscriptions/{sub['id']}/stats",
        "/v1/attempts?call_id=c1",
        "/v1/events/evt_1/attempts",
        "/v1/dead-letters",
    )
    for path in paths:
        status, body = await get(svc, path)
        assert (status, body["error"]["code"]) == (503, "history_not_configured"), path
    async with svc.http.post(f"{svc.base}/v1/dead-letters/replay", json={"ids": ["x"]}) as resp:
        assert resp.status == 503
    status, ready = await get(svc, "/readyz")
    assert status == 200
    assert any("SWITCHBOARD_HISTORY_DSN" in p for p in ready["problems"])


async def test_two_replicas_index_each_attempt_once_and_answer_alike(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer, history_dsn: str
) -> None:
    # Two partitions of every topic: each replica's indexer gets one of the attempts topic.
    one: RunningService = await service_factory(partitions=2, topic_partitions=2)
    two = await start_service(one.settings, partitions=2)
    try:
        recorder = Recorder()
        sub = await one.create_subscription(
            tenant_id="acme",
            name="crm",
            url=await http_server(recorder.app()) + "/h",
            event_types=["*"],
        )
        # Both replicas route by the subscription before any event can reach either.
        await poll(two, f"/v1/subscriptions/{sub['id']}", lambda b: b["id"] == sub["id"])
        for i in range(40):
            await send_event(producer, one.topic, "call.ended", {"call": {"id": f"c{i}"}})
        path = f"/v1/subscriptions/{sub['id']}/attempts?limit=1000"
        await poll(one, path, lambda b: len(b["data"]) == 40, within=30)
        assert len(recorder.seen) == 40
        assert await rows(history_dsn, "SELECT count(*) FROM attempts") == 40
        assert await rows(history_dsn, "SELECT count(DISTINCT webhook_id) FROM attempts") == 40
        assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_minutes") == 40
        assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_hours") == 40
        # A webhook-id's attempts are found through the primary key (their ids start with it).
        webhook = recorder.seen[0].headers["webhook-id"]
        status, found = await get(one, f"/v1/attempts?webhook_id={webhook}&tenant_id=acme")
        assert status == 200, found
        assert [a["webhook_id"] for a in found["data"]] == [webhook]
        for route in (path, f"/v1/subscriptions/{sub['id']}/stats", "/v1/attempts?call_id=c7"):
            assert await get(one, route) == await get(two, route)
    finally:
        await two.stop()
        await two.http.close()


async def test_the_store_going_away_stops_no_delivery_and_nothing_is_lost_or_doubled(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    with EmbeddedPostgres() as pg:
        svc: RunningService = await service_factory(history_dsn=pg.dsn)
        recorder = Recorder()
        sub = await svc.create_subscription(
            tenant_id="acme",
            name="crm",
            url=await http_server(recorder.app()) + "/h",
            event_types=["*"],
        )
        path = f"/v1/subscriptions/{sub['id']}/attempts?limit=1000"
        for i in range(10):
            await send_event(producer, svc.topic, "call.ended", {"call": {"id": f"c{i}"}})
        await poll(svc, path, lambda b: len(b["data"]) == 10)
        await asyncio.to_thread(pg.stop)
        for i in range(10, 40):
            await send_event(producer, svc.topic, "call.ended", {"call": {"id": f"c{i}"}})
        # Deliveries go on without the store.
        await poll(svc, "/healthz", lambda _b: len(recorder.seen) == 40)
        status, body = await get(svc, path)
        assert (status, body["error"]["code"]) == (503, "history_unavailable")
        lag = "switchboard_history_indexer_lag_seconds"
        await poll(svc, "/healthz", lambda _b: (metrics.REGISTRY.get_sample_value(lag) or 0) > 1)
        status, ready = await get(svc, "/readyz")
        assert status == 200
        assert any(p.startswith("history store unavailable") for p in ready["problems"])
        await asyncio.to_thread(pg.restart)
        # It catches up: every attempt indexed, none twice.
        await poll(svc, path, lambda b: len(b["data"]) == 40, within=60)
        assert await rows(pg.dsn, "SELECT count(*) FROM attempts") == 40
        assert await rows(pg.dsn, "SELECT sum(attempts) FROM attempt_minutes") == 40
        await poll(svc, "/healthz", lambda _b: metrics.REGISTRY.get_sample_value(lag) == 0)
        await svc.stop()


async def test_correlation_search_finds_a_calls_attempts_and_no_other_tenants(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory()
    fails_once: set[str] = set()

    def answer(seen: Any) -> web.Response:
        event = seen.json()["id"]
        if event in fails_once:
            return web.Response(status=204)
        fails_once.add(event)
        return web.Response(status=500)  # each event's first attempt fails: two attempts

    base = await http_server(Recorder(answer).app())
    for tenant in ("acme", "globex"):
        await svc.create_subscription(
            tenant_id=tenant, name="crm", url=base + "/h", event_types=["call.*"]
        )
    for event_type in ("call.started", "call.ended"):
        await send_event(
            producer, svc.topic, event_type, {"call": {"id": "CA123"}, "agent": {"id": "ag_1"}}
        )
    await send_event(producer, svc.topic, "call.ended", {"call": {"id": "CA999"}})
    await send_event(producer, svc.topic, "call.ended", {"call": {"id": "CA123"}}, tenant="globex")
    everything = await poll(svc, "/v1/attempts?call_id=CA123", lambda b: len(b["data"]) == 6)
    assert {a["tenant_id"] for a in everything["data"]} == {"acme", "globex"}
    assert sorted(a["attempt"] for a in everything["data"]) == [1, 1, 1, 2, 2, 2]
    by_agent = (await get(svc, "/v1/attempts?agent_id=ag_1"))[1]["data"]
    assert len(by_agent) == 4
    assert {a["call_id"] for a in by_agent} == {"CA123"}
    async with svc.http.post(f"{svc.base}/v1/api-keys", json={"tenant_id": "acme"}) as resp:
        acme = {"Authorization": f"Bearer {(await resp.json())['key']}"}
    _, mine = await get(svc, "/v1/attempts?call_id=CA123&limit=1", **acme)
    seen = mine["data"]
    while mine["next_before"]:  # keyset paging, one at a time
        _, mine = await get(
            svc, f"/v1/attempts?call_id=CA123&limit=1&before={mine['next_before']}", **acme
        )
        seen += mine["data"]
    assert len(seen) == 4
    assert {a["tenant_id"] for a in seen} == {"acme"}
    assert seen == [a for a in everything["data"] if a["tenant_id"] == "acme"]
    assert (await get(svc, "/v1/attempts?call_id=CA123&tenant_id=globex", **acme))[1]["data"] == []
    operator_globex = (await get(svc, "/v1/attempts?call_id=CA123&tenant_id=globex"))[1]["data"]
    assert {a["tenant_id"] for a in operator_globex} == {"globex"}
    # A NUL in a query value (PostgreSQL refuses it in text) is dropped, as when stored.
    status, body = await get(svc, "/v1/attempts?call_id=CA%00123")
    assert (status, len(body["data"])) == (200, 6)
    status, body = await get(svc, "/v1/attempts?call_id=CA123&agent_id=ag_1")
    assert (status, body["error"]["field"]) == (400, "call_id")


async def test_dead_letter_replay_is_at_most_once_across_two_replicas(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    one: RunningService = await service_factory()
    two = await start_service(one.settings)
    try:
        healthy = False
        recorder = Recorder(lambda _s: web.Response(status=204 if healthy else 500))
        sub = await one.create_subscription(
            tenant_id="acme",
            name="crm",
            max_attempts=1,
            url=await http_server(recorder.app()) + "/h",
            event_types=["*"],
        )
        # Both replicas route by the subscription before any event can reach either.
        await poll(two, f"/v1/subscriptions/{sub['id']}", lambda b: b["id"] == sub["id"])
        for i in range(20):
            await send_event(producer, one.topic, "call.ended", {"call": {"id": f"c{i}"}})
        letters = await dead_letters(one, until=lambda d: len(d) == 20)
        healthy = True
        replay = {"subscription_id": sub["id"]}

        async def ask(svc: RunningService) -> Any:
            async with svc.http.post(f"{svc.base}/v1/dead-letters/replay", json=replay) as resp:
                assert resp.status == 200
                return await resp.json()

        first, second = await asyncio.gather(ask(one), ask(two))
        assert set(first["replayed"]) | set(second["replayed"]) == {d["id"] for d in letters}
        assert not set(first["replayed"]) & set(second["replayed"])
        assert (await ask(two))["replayed"] == []
        await poll(one, "/healthz", lambda _b: len(recorder.seen) == 40)
        await asyncio.sleep(1)  # a duplicate replay would arrive within this
        assert len(recorder.seen) == 40
        assert len({s.headers["webhook-id"] for s in recorder.seen}) == 20
        replayed = await dead_letters(one, "&replayed=true", until=lambda d: len(d) == 20)
        assert all(d["replayed_at"] for d in replayed)
    finally:
        await two.stop()
        await two.http.close()
