"""The pipeline end to end: real broker, the service in-process, real receivers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from typing import Any

import msgspec
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.app import Switchboard
from service.observability import metrics
from tests.conftest import ReceiverServer, RunningService, produce_events, wait_until
from tests.helpers.history import dead_letters
from tests.helpers.kafka import read_all, wait_committed
from tools.voice_events import cloud_event


async def test_routing_by_tenant_and_type(
    service: RunningService, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    subs = {
        "a-ended": ("tenant-a", ["call.ended"]),
        "a-calls": ("tenant-a", ["call.*"]),
        "a-all": ("tenant-a", ["*"]),
        "b-calls": ("tenant-b", ["call.*"]),
        "b-disabled": ("tenant-b", ["*"]),
    }
    for path, (tenant, types) in subs.items():
        created = await service.create_subscription(
            tenant_id=tenant, name=path, url=receiver.url(path), event_types=types,
            enabled=path != "b-disabled",
        )  # fmt: skip
        receiver.receiver.secrets[path] = created["secret"]
    types = ["call.ended", "call.started", "contact.created"]
    a_ids = await produce_events(producer, service.topic, tenant="tenant-a", types=types, seed=1)
    b_ids = await produce_events(producer, service.topic, tenant="tenant-b", types=types, seed=2)
    c_ids = await produce_events(producer, service.topic, tenant="tenant-c", types=types, seed=3)
    assert (
        await wait_committed(
            service.settings.kafka_bootstrap_servers, service.settings.group_id, service.topic, 9
        )
        == 9
    )
    # Committed by the events group means handed off; the deliveries follow. Eight are due:
    # a-ended 1, a-calls 2, a-all 3, b-calls 2.
    assert await wait_until(lambda: len(receiver.receiver.received) >= 8, within=15)
    await asyncio.sleep(0.5)  # time for a wrong extra delivery to show
    got: dict[str, set[str]] = {path: set() for path in subs}
    per_path: Counter[str] = Counter()
    for item in receiver.receiver.received:
        assert item.verified
        assert item.event_id not in c_ids
        got[item.path].add(item.event_id)
        per_path[item.path] += 1
    assert sum(per_path.values()) == sum(len(ids) for ids in got.values())  # no duplicates
    assert got["a-ended"] == {a_ids[0]}
    assert got["a-calls"] == {a_ids[0], a_ids[1]}
    assert got["a-all"] == set(a_ids)
    assert got["b-calls"] == {b_ids[0], b_ids[1]}
    assert got["b-disabled"] == set()


async def test_invalid_records_are_quarantined_while_valid_ones_flow(
    service: RunningService, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    await service.create_subscription(
        tenant_id="acme", name="all", url=receiver.url("all"), event_types=["*"]
    )
    before = metrics.EVENTS_INVALID.labels("malformed_json")._value.get()
    rng = random.Random(5)
    bad = [b"{not json", orjson.dumps({"specversion": "1.0", "id": "x"}), b"",
           orjson.dumps({"specversion": "1.0", "id": "e", "source": "s", "type": "Bad Type",
                         "tenantid": "acme"})]  # fmt: skip
    valid_ids = []
    for i in range(8):
        if i % 2:
            await producer.send(service.topic, bad[i // 2], headers=[("trace", b"t%d" % i)])
        else:
            event_id = f"evt_valid_{i}"
            valid_ids.append(event_id)
            await producer.send(service.topic, cloud_event("call.ended", "acme", rng, event_id))
    await producer.flush()
    assert await wait_until(lambda: len(receiver.receiver.received) == 4, within=20)
    assert {r.event_id for r in receiver.receiver.received} == set(valid_ids)
    bootstrap = service.settings.kafka_bootstrap_servers
    assert await wait_committed(bootstrap, service.settings.group_id, service.topic, 8) == 8
    quarantined = await read_all(bootstrap, service.settings.invalid_topic, 4)
    assert len(quarantined) == 4
    reasons = []
    for record in quarantined:
        headers = dict(record.headers)
        reasons.append(headers["switchboard.reason"].decode())
        assert headers["switchboard.origin.topic"].decode() == service.topic
        assert headers["switchboard.origin.partition"] == b"0"
        assert int(headers["switchboard.origin.offset"]) % 2 == 1
        assert headers["trace"].startswith(b"t")  # the producer's own headers are kept
        assert headers["switchboard.error"]
    assert reasons == ["malformed_json", "missing_field", "malformed_json", "bad_type"]
    assert [r.value for r in quarantined] == bad
    assert metrics.EVENTS_INVALID.labels("malformed_json")._value.get() - before == 2


async def test_binary_mode_event(
    service: RunningService, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    sub = await service.create_subscription(
        tenant_id="acme", name="b", url=receiver.url("b"), event_types=["call.started"]
    )
    receiver.receiver.secrets["b"] = sub["secret"]
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"evt_binary_1"),
        ("ce_source", b"/voice/call"),
        ("ce_type", b"call.started"),
        ("ce_time", b"2026-11-22T10:00:00Z"),
        ("ce_tenantid", b"acme"),
    ]
    await producer.send_and_wait(service.topic, b'{"call": {"id": "call_1"}}', headers=headers)
    assert await wait_until(lambda: len(receiver.receiver.received) == 1, within=20)
    assert receiver.receiver.received[0].event_id == "evt_binary_1"
    assert receiver.receiver.received[0].verified


async def test_out_of_order_completion_commits_only_contiguous_offsets(
    service: RunningService, producer: AIOKafkaProducer, http_server: Any
) -> None:
    release = asyncio.Event()
    slow_count = fast_count = 0

    async def slow(_request: web.Request) -> web.Response:
        nonlocal slow_count
        slow_count += 1
        await release.wait()
        return web.Response()

    async def fast(_request: web.Request) -> web.Response:
        nonlocal fast_count
        fast_count += 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/fast", fast)
    base = await http_server(app)
    await service.create_subscription(
        tenant_id="slow", name="s", url=base + "/slow", event_types=["*"], timeout_seconds=30
    )
    await service.create_subscription(
        tenant_id="fast", name="f", url=base + "/fast", event_types=["*"]
    )
    # The slow delivery is offset 0 of the deliveries topic; the fast ones 1..9.
    await produce_events(producer, service.topic, tenant="slow", types=["call.ended"])
    assert await wait_until(lambda: slow_count == 1, within=20)
    await produce_events(producer, service.topic, tenant="fast", types=["call.ended"] * 9, seed=9)
    assert await wait_until(lambda: fast_count == 9, within=20)
    settings = service.settings
    bootstrap, group = settings.kafka_bootstrap_servers, f"{settings.group_id}.retry"
    # The events are all handed off: a slow endpoint holds back none of them.
    assert await wait_committed(bootstrap, settings.group_id, service.topic, 10) == 10
    # Deliveries 1..9 are finished, 0 is not: nothing may be committed past 0.
    await asyncio.sleep(3 * settings.commit_interval_seconds)
    held = await wait_committed(bootstrap, group, settings.deliveries_topic, 1, within=0.5)
    assert held is None or held == 0
    release.set()
    assert await wait_committed(bootstrap, group, settings.deliveries_topic, 10) == 10


async def test_backpressure_pauses_and_resumes(
    service_factory: Any, producer: AIOKafkaProducer, http_server: Any
) -> None:
    svc: RunningService = await service_factory(max_records_in_flight=5, max_poll_records=2)
    release = asyncio.Event()
    started = 0

    async def hold(_request: web.Request) -> web.Response:
        nonlocal started
        started += 1
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hold", hold)
    base = await http_server(app)
    await svc.create_subscription(
        tenant_id="acme", name="h", url=base + "/hold", event_types=["*"], max_in_flight=100,
        timeout_seconds=30,
    )  # fmt: skip
    await produce_events(producer, svc.topic, tenant="acme", types=["call.ended"] * 30)
    assert await wait_until(
        lambda: metrics.PARTITIONS_PAUSED.labels("events")._value.get() == 1, within=20
    )
    await asyncio.sleep(1)  # polling goes on while paused; nothing more may be taken
    assert started <= 5 + 2
    assert svc.app.events.records_in_flight <= 5 + 2
    release.set()
    assert await wait_until(lambda: started == 30, within=20)
    assert await wait_until(
        lambda: metrics.PARTITIONS_PAUSED.labels("events")._value.get() == 0, within=10
    )


async def test_a_second_replica_follows_subscription_changes(
    service: RunningService, receiver: ReceiverServer, kafka_bootstrap: str
) -> None:
    replica = Switchboard(msgspec.structs.replace(service.settings, http_port=0))
    task = asyncio.create_task(replica.run())
    try:
        assert await wait_until(replica.table.loaded.is_set, within=20)
        created = await service.create_subscription(
            tenant_id="acme", name="x", url=receiver.url("x"), event_types=["*"]
        )
        assert await wait_until(lambda: replica.table.get(created["id"]) is not None, within=10)
        async with service.http.delete(f"{service.base}/v1/subscriptions/{created['id']}") as r:
            assert r.status == 204
        assert await wait_until(lambda: replica.table.get(created["id"]) is None, within=10)
    finally:
        replica.request_stop()
        await asyncio.wait_for(task, 30)


async def test_metrics_are_exported(service: RunningService) -> None:
    async with service.http.get(f"{service.base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for name in (
        "switchboard_events_consumed_total",
        "switchboard_events_invalid_total",
        "switchboard_delivery_attempts_total",
        "switchboard_deliveries_total",
        "switchboard_delivery_duration_seconds",
        "switchboard_end_to_end_latency_seconds",
        "switchboard_deliveries_in_flight",
        "switchboard_records_in_flight",
        "switchboard_subscriptions",
        "switchboard_consumer_lag",
        "switchboard_oldest_incomplete_record_age_seconds",
        "switchboard_commits_total",
        "switchboard_partitions_paused",
        "switchboard_retries_scheduled_total",
        "switchboard_dead_letters_total",
        "switchboard_circuits",
        "switchboard_retry_oldest_pending_age_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_a_replica_leaving_mid_stream_hands_its_partitions_over_without_loss(
    service_factory: Any, producer: AIOKafkaProducer, http_server: Any
) -> None:
    seen: Counter[str] = Counter()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen[body["id"]] += 1
        await asyncio.sleep(0.01)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    base = await http_server(app)
    first: RunningService = await service_factory(partitions=4, rebalance_grace_seconds=1)
    second = Switchboard(msgspec.structs.replace(first.settings, http_port=0))
    second_task = asyncio.create_task(second.run())
    await first.create_subscription(
        tenant_id="acme", name="h", url=base + "/hook", event_types=["*"], max_in_flight=4
    )
    # Both replicas in the group, each with some of the four partitions.
    assert await wait_until(
        lambda: second.events.partitions_assigned > 0 and first.app.events.partitions_assigned > 0,
        within=40,
    )
    ids: list[str] = []
    for partition in range(4):
        ids += await produce_events(producer, first.topic, types=["call.ended"] * 50,
                                    seed=partition, partition=partition)  # fmt: skip
    assert await wait_until(lambda: len(seen) >= 40, within=30)
    second.request_stop()  # leaves mid-stream: its partitions move to the first replica
    await asyncio.wait_for(second_task, 30)
    assert await wait_until(lambda: len(seen) == len(ids), within=60), f"{len(seen)}/{len(ids)}"
    assert set(seen) == set(ids)
    bootstrap, group = first.settings.kafka_bootstrap_servers, first.settings.group_id
    for partition in range(4):
        assert await wait_committed(bootstrap, group, first.topic, 50, partition=partition) == 50


async def test_a_broken_subscription_record_neither_crashes_nor_stalls_the_partition(
    service: RunningService, receiver: ReceiverServer, producer: AIOKafkaProducer
) -> None:
    """A record written to the table by another tool with an unusable secret and URL."""
    good = await service.create_subscription(
        tenant_id="acme", name="ok", url=receiver.url("ok"), event_types=["*"]
    )
    broken = {**good, "id": "sub_" + "b" * 24, "secret": "not-a-secret", "url": "http://[::1"}
    await producer.send_and_wait(
        service.settings.subscriptions_topic, key=broken["id"].encode(), value=orjson.dumps(broken)
    )
    assert await wait_until(lambda: service.app.table.get(broken["id"]) is not None, within=10)
    before = float(metrics.DELIVERY_ATTEMPTS.labels("internal_error", "none")._value.get())
    ids = await produce_events(producer, service.topic, types=["call.ended"] * 5)
    assert await wait_until(lambda: len(receiver.receiver.received) == 5, within=20)
    assert {r.event_id for r in receiver.receiver.received} == set(ids)
    bootstrap, group = service.settings.kafka_bootstrap_servers, service.settings.group_id
    assert await wait_committed(bootstrap, group, service.topic, 5) == 5
    assert not service.task.done()
    # Every attempt the schedule allows is made (and fails with a reason), then each of the
    # five ends as a dead letter.
    attempts = 1 + len(service.settings.retry_schedule)

    def attempted() -> float:
        return (
            float(metrics.DELIVERY_ATTEMPTS.labels("internal_error", "none")._value.get()) - before
        )

    assert await wait_until(lambda: attempted() == 5 * attempts, within=20)
    await dead_letters(service, f"&subscription_id={broken['id']}", within=20,
                       until=lambda d: len(d) == 5)  # fmt: skip


async def test_the_process_fails_when_the_subscriptions_reader_dies(
    service: RunningService,
) -> None:
    async def boom() -> None:
        raise RuntimeError("reader broke")

    task = asyncio.create_task(boom())
    with contextlib.suppress(RuntimeError):
        await task
    service.app._on_reader_done(task)
    assert service.app.failed
    await asyncio.wait_for(service.task, 30)  # it stops on its own


async def test_secret_rotation_signs_with_both_secrets_during_the_grace_period(
    service: RunningService, producer: AIOKafkaProducer, http_server: Any
) -> None:
    got: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    base = await http_server(app)
    created = await service.create_subscription(
        tenant_id="acme", name="r", url=base + "/hook", event_types=["*"]
    )
    rotate = f"{service.base}/v1/subscriptions/{created['id']}/rotate-secret"
    async with service.http.post(rotate, json={"grace_seconds": 3600}) as r:
        assert r.status == 200
        rotated = await r.json()
    old, new = created["secret"], rotated["secret"]
    assert new != old
    assert new.startswith("whsec_")
    assert "previous_secret" not in rotated
    await produce_events(producer, service.topic, types=["call.ended"])
    assert await wait_until(lambda: len(got) == 1, within=20)
    body, headers = got[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)  # receivers not yet updated still verify
    Webhook(new).verify(body, headers)  # updated receivers verify too
    # A rotation without grace retires the old secret at once.
    async with service.http.post(rotate, json={"grace_seconds": 0}) as r:
        newest = (await r.json())["secret"]
    async with service.http.get(f"{service.base}/v1/subscriptions/{created['id']}") as r:
        shown = await r.json()
    assert "secret" not in shown
    assert "previous_secret" not in shown
    await produce_events(producer, service.topic, types=["call.ended"], seed=1)
    assert await wait_until(lambda: len(got) == 2, within=20)
    body, headers = got[1]
    Webhook(newest).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, headers)
    async with service.http.post(rotate, json={"grace_seconds": -1}) as r:
        assert r.status == 422
