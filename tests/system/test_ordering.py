"""Ordered delivery per key, against real receivers and a real broker.

The receiver notes, per subscription and key, the order in which events were first accepted
and the `webhook-sequence` they came with. An inversion is an event first accepted before an
earlier event of its key.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.conftest import RunningService, create_topic, service_env, wait_until
from tools.faults.fleet import Fleet, Replica
from tools.partitions import partition_of
from tools.receiver import start_site
from tools.service_env import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class OrderedReceiver:
    """Accepts deliveries, failing the first attempt of the events `refuse_first` picks and
    every attempt of the keys in `dead`."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.refuse_first = refuse_first  # one event in this many: its first attempt fails
        self.dead: set[str] = set()
        # (path, key) -> [(n, sequence)] in order of first acceptance
        self.accepted: dict[tuple[str, str], list[tuple[int, int | None]]] = defaultdict(list)
        self.accepted_ids: set[tuple[str, str]] = set()
        self.attempts: dict[str, int] = defaultdict(int)  # event id -> requests
        self.keys: dict[str, tuple[str, int]] = {}  # event id -> (key, n)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        path, event_id = request.match_info["path"], body["id"]
        key, n = body["data"]["call"]["id"], body["data"]["n"]
        self.attempts[event_id] += 1
        self.keys[event_id] = (key, n)
        if key in self.dead:
            return web.Response(status=503)
        picked = self.refuse_first and int(hashlib.sha256(event_id.encode()).hexdigest(), 16)
        if picked and picked % self.refuse_first == 0 and self.attempts[event_id] == 1:
            return web.Response(status=500)
        if (path, event_id) not in self.accepted_ids:
            self.accepted_ids.add((path, event_id))
            sequence = request.headers.get("webhook-sequence")
            self.accepted[(path, key)].append((n, int(sequence) if sequence else None))
        return web.Response(status=204)

    def inversions(self) -> list[tuple[tuple[str, str], list[int]]]:
        return [
            (k, [n for n, _ in got])
            for k, got in self.accepted.items()
            if [n for n, _ in got] != sorted(n for n, _ in got)
        ]


def call_event(key: str, n: int) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": f"evt_{uuid.uuid4().hex}", "source": "/voice/call",
        "type": "call.ended", "tenantid": "acme", "time": "2026-11-28T10:00:00Z",
        "data": {"call": {"id": key}, "n": n},
    })  # fmt: skip


async def produce_rounds(
    producer: AIOKafkaProducer, topic: str, keys: list[str], rounds: range
) -> None:
    """Round by round, every key's n-th event; keyed by the call, as the platform keys them,
    so that a call's events are in one partition, in order."""
    for n in rounds:
        for key in keys:
            await producer.send(topic, call_event(key, n), key=key.encode())
    await producer.flush()


async def ordered_subscription(
    http: aiohttp.ClientSession, base: str, url: str, **ordering: Any
) -> dict[str, Any]:
    fields = {
        "tenant_id": "acme", "name": "crm", "url": url, "event_types": ["call.*"],
        "ordering": {"key": "data.call.id", **ordering},
    }  # fmt: skip
    async with http.post(f"{base}/v1/subscriptions", json=fields, headers=AUTH) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return body


async def test_three_replicas_keep_each_keys_order_through_retries_a_sigkill_and_a_rebalance(
    kafka_bootstrap: str, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    partitions, keys, rounds = 3, [f"CA{i:03d}" for i in range(40)], 6
    env = service_env(kafka_bootstrap, topic_partitions=partitions, log_level="info")
    topic = env["SWITCHBOARD_EVENT_TOPICS"]
    await create_topic(kafka_bootstrap, topic, partitions=partitions)
    receiver = OrderedReceiver(refuse_first=4)
    runner, port = await start_site(receiver.app())
    fleet = Fleet([Replica(f"r{i}", env, tmp_path) for i in range(3)])
    try:
        await fleet.start()
        base = fleet.replicas[0].base
        # One ordered subscription in each partition of the deliveries topic: each replica
        # owns one of them, so the replica killed below owns one.
        paths: list[str] = []
        taken: set[int] = set()
        for i in range(30):
            url = f"http://127.0.0.1:{port}/s{i}"
            sub = await ordered_subscription(fleet.http, base, url)
            partition = partition_of(sub["id"], partitions)
            if partition in taken:
                async with fleet.http.delete(f"{base}/v1/subscriptions/{sub['id']}",
                                             headers=AUTH) as r:  # fmt: skip
                    assert r.status == 204
                continue
            taken.add(partition)
            paths.append(f"s{i}")
            if len(paths) == partitions:
                break
        assert len(paths) == partitions
        await asyncio.sleep(1)  # every replica has read the subscriptions
        total = len(paths) * len(keys) * rounds
        await produce_rounds(producer, topic, keys, range(rounds // 2))
        assert await wait_until(lambda: len(receiver.accepted_ids) >= total // 6, within=90)
        # A SIGKILL mid-stream: its partitions move after the session timeout (a rebalance),
        # and back when it is started again (another).
        victim = fleet.replicas[1]
        victim.kill()
        await produce_rounds(producer, topic, keys, range(rounds // 2, rounds))
        await asyncio.sleep(4)
        victim.start()
        all_in = await wait_until(lambda: len(receiver.accepted_ids) >= total, within=120)
        assert all_in, f"{len(receiver.accepted_ids)} of {total} accepted"
        assert fleet.unexpected_exits == 0
    finally:
        await fleet.close()
        await fleet.http.close()
        await runner.cleanup()
    assert receiver.inversions() == []
    # Every key of every subscription got its events in order, numbered 1, 2, 3...
    for path in paths:
        for key in keys:
            assert receiver.accepted[(path, key)] == [(n, n + 1) for n in range(rounds)], key
    # The retries happened: about one event in four failed its first attempt.
    assert sum(1 for n in receiver.attempts.values() if n > 1) >= total // 8


async def test_a_dead_key_holds_only_itself_until_an_operator_releases_it(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory()
    receiver = OrderedReceiver()
    receiver.dead.add("DEAD")
    url = await http_server(receiver.app()) + "/hook"
    async with aiohttp.ClientSession() as http:
        sub = await ordered_subscription(http, svc.base, url, after_dead_letter="hold")
        async with http.patch(f"{svc.base}/v1/subscriptions/{sub['id']}",
                              json={"max_attempts": 2}, headers=AUTH) as r:  # fmt: skip
            assert r.status == 200
        live = [f"LIVE{i}" for i in range(5)]
        await produce_rounds(producer, svc.topic, ["DEAD", *live], range(4))
        # Every other key is delivered in full while the dead one fails.
        assert await wait_until(
            lambda: all(len(receiver.accepted[("hook", k)]) == 4 for k in live), within=30
        )

        # Its first event is tried max_attempts times, then a dead letter; the key stops,
        # and its later events are never tried.
        def tried() -> dict[int, int]:
            return {n: receiver.attempts[e] for e, (k, n) in receiver.keys.items() if k == "DEAD"}

        assert await wait_until(lambda: tried() == {0: 2}, within=10), tried()
        await asyncio.sleep(1)
        assert tried() == {0: 2}
        # The receiver is fixed and an operator releases the key: the held events follow, in
        # order, numbered after the dead letter's.
        receiver.dead.clear()
        release = f"{svc.base}/v1/subscriptions/{sub['id']}/ordering/release"
        async with http.post(release, json={"key": "DEAD"}, headers=AUTH) as r:
            assert r.status == 202, await r.text()
        assert await wait_until(lambda: len(receiver.accepted[("hook", "DEAD")]) == 3, 15)
        assert receiver.accepted[("hook", "DEAD")] == [(1, 2), (2, 3), (3, 4)]


async def test_ordering_is_validated_and_release_needs_an_ordered_subscription(
    service_factory: Any,
) -> None:
    svc: RunningService = await service_factory()
    async with aiohttp.ClientSession() as http:
        bad = {"tenant_id": "acme", "name": "x", "url": "http://127.0.0.1:9/h",
               "event_types": ["*"], "ordering": {"key": "data.call id"}}  # fmt: skip
        async with http.post(f"{svc.base}/v1/subscriptions", json=bad, headers=AUTH) as r:
            body = await r.json()
            assert r.status == 422, body
            assert body["error"]["field"] == "ordering.key"
        plain = await svc.create_subscription(
            tenant_id="acme", name="x", url="http://127.0.0.1:9/h", event_types=["*"]
        )
        release = f"{svc.base}/v1/subscriptions/{plain['id']}/ordering/release"
        async with http.post(release, json={"key": "CA1"}, headers=AUTH) as r:
            assert r.status == 409
            assert (await r.json())["error"]["code"] == "not_ordered"
