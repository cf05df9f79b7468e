"""Pre-call lookups: a request event, a synchronous call, the answer on the reply topic."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.catalog.entries import BY_TYPE
from service.config import load_settings
from service.lookups.protocol import CORRELATION_HEADER, REPLY_TOPIC_HEADER
from service.observability import metrics
from tests.conftest import RunningService, create_topic, service_env, start_service, wait_until
from tests.helpers.history import poll
from tests.helpers.kafka import read_all, wait_committed
from tests.helpers.webhooks import Recorder, json_answer, send_event
from tools.faults.fleet import service_process, wait_ready
from tools.faults.load import LookupCaller, Lookups
from tools.tansu import free_port


def request_headers(reply_topic: str, correlation: str) -> list[tuple[str, bytes]]:
    return [(REPLY_TOPIC_HEADER, reply_topic.encode()), (CORRELATION_HEADER, correlation.encode())]


async def test_pre_call_lookup_answers_times_out_and_says_why(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(lookup_deadline_seconds=0.5)
    bootstrap = svc.settings.kafka_bootstrap_servers
    replies = f"calls.lookup-replies.{uuid.uuid4().hex[:8]}"

    async def answer(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if body["number"] == "+15550000000":  # a CRM that hangs
            await asyncio.sleep(3)
        return json_answer({"name": "Jane Doe", "vip": True, "number": body["number"]})

    app = web.Application()
    app.router.add_post("/who", answer)
    base = await http_server(app)
    sub = await svc.create_subscription(
        tenant_id="acme", name="caller id", url=base + "/who", event_types=["call.inbound"],
        body_template={"number": "{{data.call.from}}"},
    )  # fmt: skip
    # The deadline counts from when a request is produced: wait until it can be read at once.
    assert await wait_until(lambda: svc.app.events.partitions_assigned > 0, within=15)
    sample = BY_TYPE["call.inbound"].sample
    slow = {**sample, "call": {**sample["call"], "from": "+15550000000"}}
    topic = svc.topic
    # Refused, and quarantined: a reply topic that is one of the service's own, and a missing
    # correlation id. (Before the reply topic exists: the test broker answers a producer that
    # has just learned of a new topic with NotLeaderForPartition on others for a while.)
    await send_event(producer, topic, "call.inbound", sample,
                     headers=request_headers(svc.settings.subscriptions_topic, "c-5"))  # fmt: skip
    await send_event(producer, topic, "call.inbound", sample,
                     headers=[(REPLY_TOPIC_HEADER, b"calls.replies")])  # fmt: skip
    quarantined = await read_all(bootstrap, svc.settings.invalid_topic, 2)
    reasons = [dict(r.headers)["switchboard.reason"] for r in quarantined]
    assert reasons == [b"bad_reply_headers", b"bad_reply_headers"]
    await create_topic(bootstrap, replies)
    old = int((time.time() - 60) * 1000)
    ask = request_headers
    await send_event(producer, topic, "call.inbound", sample, headers=ask(replies, "c-1"))
    await send_event(producer, topic, "call.inbound", slow, headers=ask(replies, "c-2"))
    await send_event(producer, topic, "call.inbound", sample, tenant="nobody",
                     headers=request_headers(replies, "c-3"))  # fmt: skip
    await send_event(producer, topic, "call.inbound", sample, timestamp_ms=old,
                     headers=request_headers(replies, "c-4"))  # fmt: skip
    records = await read_all(bootstrap, replies, 4)
    by_id = {r.key.decode(): (orjson.loads(r.value), dict(r.headers)) for r in records}
    assert set(by_id) == {"c-1", "c-2", "c-3", "c-4"}
    answered, headers = by_id["c-1"]
    assert headers[CORRELATION_HEADER] == b"c-1"
    assert answered["status"] == "answered"
    assert answered["answer"] == {"name": "Jane Doe", "vip": True, "number": "+14155550123"}
    assert answered["subscription_id"] == sub["id"]
    assert answered["http_status"] == 200
    timed_out = by_id["c-2"][0]
    assert timed_out["status"] == "timeout"
    assert timed_out["latency_ms"] < 1500  # cut at the deadline, not the endpoint's 3 s
    assert by_id["c-3"][0]["status"] == "no_subscription"
    assert by_id["c-4"][0]["status"] == "expired"
    # Nothing was written to the subscriptions topic by the refused request...
    table = await read_all(bootstrap, svc.settings.subscriptions_topic, 2, within=2)
    assert len(table) == 1
    # ...and every request is committed once answered or quarantined.
    assert await wait_committed(bootstrap, svc.settings.group_id, topic, 6) == 6
    # Lookups are in the delivery log.
    log = await poll(svc, f"/v1/subscriptions/{sub['id']}/attempts?trigger=lookup",
                     lambda b: len(b["data"]) >= 2)  # fmt: skip
    assert sorted(a["outcome"] for a in log["data"]) == ["success", "timeout"]


async def test_a_lookup_is_not_queued_behind_slow_deliveries(
    service: RunningService, http_server: Any, producer: AIOKafkaProducer
) -> None:
    """A caller waits on the line: the lookup bypasses the endpoint's delivery queue."""
    release = asyncio.Event()
    recorder = Recorder(lambda _s: json_answer({"ok": True}))
    app = recorder.app()
    gate = web.Application()

    async def held(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    gate.router.add_post("/crm", held)
    base = await http_server(gate)
    lookup_base = await http_server(app)
    await service.create_subscription(
        tenant_id="acme", name="crm", url=base + "/crm", event_types=["call.ended"],
        max_in_flight=1,
    )  # fmt: skip
    await service.create_subscription(
        tenant_id="acme", name="who", url=lookup_base + "/who", event_types=["call.inbound"]
    )
    assert await wait_until(lambda: service.app.events.partitions_assigned > 0, within=15)
    replies = f"calls.replies.{uuid.uuid4().hex[:8]}"
    await create_topic(service.settings.kafka_bootstrap_servers, replies)
    for _ in range(5):
        await send_event(producer, service.topic, "call.ended", BY_TYPE["call.ended"].sample)
    await send_event(producer, service.topic, "call.inbound", BY_TYPE["call.inbound"].sample,
                     headers=request_headers(replies, "c-1"))  # fmt: skip
    consumer = AIOKafkaConsumer(replies, bootstrap_servers=service.settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
        release.set()
    assert orjson.loads(record.value)["status"] == "answered"


async def test_lookups_on_a_topic_of_their_own_are_answered_by_their_own_group(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    lookups = f"calls.lookups.{uuid.uuid4().hex[:8]}"
    svc: RunningService = await service_factory(lookup_topics=lookups)
    bootstrap = svc.settings.kafka_bootstrap_servers
    await create_topic(bootstrap, lookups)
    replies = f"calls.lookup-replies.{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, replies)
    recorder = Recorder(answer=lambda _: json_answer({"name": "Jane Doe"}))
    base = await http_server(recorder.app())
    await svc.create_subscription(
        tenant_id="acme", name="caller id", url=base + "/who", event_types=["call.inbound"]
    )
    (own,) = [loop for loop in svc.app.loops if loop.role == "lookups"]
    assert await wait_until(lambda: own.partitions_assigned > 0, within=15)
    sample = BY_TYPE["call.inbound"].sample
    refused = metrics.EVENTS_INVALID.labels("not_a_lookup")
    refused_before = refused._value.get()
    await send_event(producer, lookups, "call.inbound", sample,
                     headers=request_headers(replies, "c-own"))  # fmt: skip
    # Not a lookup: refused (and quarantined with that reason), never delivered as an event.
    await send_event(producer, lookups, "call.inbound", sample)
    (reply,) = await read_all(bootstrap, replies, 1)
    assert orjson.loads(reply.value)["status"] == "answered"
    assert await wait_until(lambda: refused._value.get() == refused_before + 1, within=10)
    await asyncio.sleep(0.5)
    assert len(recorder.seen) == 1  # the lookup's call, and no delivery of the other


# Lookups without a consumer group (consumers/lookups/reader.py): every replica reads the
# lookup topic, a partition is answered by the live member that owns it, and a new owner
# starts from the position its last owner reported.
LOOKUP_PARTITIONS = 12
# One lookup every 50 ms over 12 partitions: each partition gets one every 0.6 s, so a
# takeover that skipped anything, or waited out a timeout, shows.
LOOKUP_EVERY = 0.05


class Lookup:
    """The lookup topic, the reply topic, the caller's endpoint, and a fleet's settings."""

    def __init__(self, bootstrap: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.requests = f"calls.lookups.{run}"
        self.replies = f"calls.lookup-replies.{run}"
        self.env = service_env(bootstrap, lookup_topics=self.requests)
        # Counts each request's calls, by the event id the caller gave it.
        self.calls: Counter[str] = Counter()

    async def answer(self, request: web.Request) -> web.Response:
        self.calls[(await request.json())["id"]] += 1
        return json_answer({"name": "Jane Doe"})

    async def start(self, http_server: Any, replicas: int) -> list[RunningService]:
        await create_topic(self.bootstrap, self.requests, LOOKUP_PARTITIONS)
        await create_topic(self.bootstrap, self.replies)
        app = web.Application()
        app.router.add_post("/who", self.answer)
        base = await http_server(app)
        settings = load_settings(self.env)
        fleet = [await start_service(settings)]
        await fleet[0].create_subscription(
            tenant_id="acme", name="caller id", url=base + "/who", event_types=["call.inbound"]
        )
        fleet += [await start_service(settings) for _ in range(replicas - 1)]
        # Every replica a member, then every partition owned once. (A replica may own none:
        # rendezvous hashing of random member ids leaves one of three without any of 12
        # partitions about once in 40 fleets.)
        assert await wait_until(lambda: all(joined(svc) for svc in fleet), within=20)
        await asyncio.sleep(2)  # each member's heartbeat read by the others
        assert await wait_until(lambda: sum(shares(fleet)) == LOOKUP_PARTITIONS, within=20), (
            "the lookup partitions were not shared out"
        )
        return fleet

    def caller(self) -> LookupCaller:
        return LookupCaller(self.bootstrap, self.requests, self.replies, every=LOOKUP_EVERY)


def owned(svc: RunningService) -> int:
    (loop,) = [loop for loop in svc.app.loops if loop.role == "lookups"]
    return loop.partitions_assigned


def shares(fleet: list[RunningService]) -> list[int]:
    """Per running replica, how many lookup partitions it owns."""
    return [owned(svc) for svc in fleet if not svc.task.done()]


def joined(svc: RunningService) -> bool:
    (loop,) = [loop for loop in svc.app.loops if loop.role == "lookups"]
    return loop.joined.is_set()


@contextlib.asynccontextmanager
async def stopped_at_end(fleet: list[RunningService]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for svc in fleet:
            if not svc.task.done():
                await svc.stop()
            await svc.http.close()


def all_answered(result: Lookups) -> None:
    assert result.sent > 20, result
    assert result.replies == {"answered": result.sent}, result
    assert result.unanswered == 0, result


async def test_lookups_without_a_group_are_answered_once_by_the_owner_of_their_partition(
    kafka_bootstrap: str, http_server: Any
) -> None:
    lookup = Lookup(kafka_bootstrap)
    fleet = await lookup.start(http_server, replicas=3)
    async with stopped_at_end(fleet):
        caller = lookup.caller()
        await caller.start()
        await asyncio.sleep(3)
        all_answered(await caller.stop())
    # In a steady state each request is answered by one replica: the endpoint is called once.
    assert len(lookup.calls) == caller.result.sent
    assert set(lookup.calls.values()) == {1}, lookup.calls.most_common(3)


async def test_a_replica_stopped_mid_stream_hands_its_partitions_over_at_once(
    kafka_bootstrap: str, http_server: Any
) -> None:
    lookup = Lookup(kafka_bootstrap)
    fleet = await lookup.start(http_server, replicas=3)
    async with stopped_at_end(fleet):
        caller = lookup.caller()
        await caller.start()
        await asyncio.sleep(1.5)
        leaving = max(fleet, key=owned)  # one that answers some of them
        staying = [svc for svc in fleet if svc is not leaving]
        had = owned(leaving)
        asked = time.monotonic()
        stopping = asyncio.create_task(leaving.stop())  # drain, final positions, tombstone
        # Taken over on the tombstone, not after the member timeout (3 s).
        assert await wait_until(
            lambda: sum(owned(svc) for svc in staying) == LOOKUP_PARTITIONS, within=10
        )
        took = time.monotonic() - asked
        await stopping
        await asyncio.sleep(2)
        result = await caller.stop()
    assert had > 0
    print(f"taken over {took:.2f} s after the stop was asked")
    assert took < load_settings(lookup.env).lookup_member_timeout_seconds, took
    # Every lookup made meanwhile is answered in time: none waited for the takeover.
    all_answered(result)


async def test_a_replica_killed_mid_stream_loses_no_lookup(
    kafka_bootstrap: str, http_server: Any, tmp_path: Path
) -> None:
    lookup = Lookup(kafka_bootstrap)
    (survivor,) = fleet = await lookup.start(http_server, replicas=1)
    port = free_port()
    async with stopped_at_end(fleet):
        with service_process({**lookup.env, "SWITCHBOARD_HTTP_PORT": str(port),
                              "SWITCHBOARD_LOG_LEVEL": "info"},
                             tmp_path / "killed.log") as killed:  # fmt: skip
            await wait_ready(port, killed)
            assert await wait_until(lambda: 0 < owned(survivor) < LOOKUP_PARTITIONS, within=20)
            caller = lookup.caller()
            await caller.start()
            await asyncio.sleep(1.5)
            killed.send_signal(signal.SIGKILL)  # no final positions, no tombstone
            killed.wait()
            # Its partitions move once its heartbeats have not been read for the timeout.
            assert await wait_until(lambda: owned(survivor) == LOOKUP_PARTITIONS, within=10)
            await asyncio.sleep(1.5)
            result = await caller.stop()
    # Lookups made to the killed replica's partitions waited for the timeout: some answered
    # `expired`, some after the caller gave up, but every one of them is answered.
    assert result.sent > 20, result
    assert result.missing == 0, result
    assert sum(result.replies.values()) + result.late == result.sent, result
