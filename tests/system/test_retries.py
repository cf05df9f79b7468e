"""Durable retries, dead letters, replay and endpoint health, against the real test broker."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer, ConsumerRecord

from service.delivery.circuit import State
from service.delivery.record import DUE_HEADER, decode
from tests.conftest import RunningService, produce_events, wait_until
from tests.helpers.history import dead_letters, poll
from tests.helpers.kafka import read_all, wait_committed


@dataclass
class Arrival:
    at: float
    webhook_id: str
    event_id: str
    status: int


@dataclass
class Endpoint:
    """A receiver whose answer the test decides, recording when each attempt arrived."""

    answer: Callable[[Arrival], web.Response] = lambda _a: web.Response(status=204)
    arrivals: list[Arrival] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        arrival = Arrival(time.time(), request.headers["webhook-id"], body["id"], 0)
        response = self.answer(arrival)
        arrival.status = response.status
        self.arrivals.append(arrival)
        return response

    def by_event(self) -> dict[str, list[Arrival]]:
        out: dict[str, list[Arrival]] = defaultdict(list)
        for a in self.arrivals:
            out[a.event_id].append(a)
        return out

    def delivered(self) -> set[str]:
        return {a.event_id for a in self.arrivals if 200 <= a.status < 300}


def status(code: int, **headers: str) -> web.Response:
    return web.Response(status=code, headers=headers)


def headers_of(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def ops_events(svc: RunningService, expected: int) -> list[dict[str, Any]]:
    records = await read_all(svc.settings.kafka_bootstrap_servers, svc.settings.ops_topic,
                             expected, within=10)  # fmt: skip
    return [orjson.loads(r.value) for r in records]


async def test_an_endpoint_down_then_back_gets_every_event_never_early_same_webhook_id(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(retry_schedule="0.3,0.6,1,1,1,1,1")
    endpoint = Endpoint()
    # Down for each event's first three attempts (0.9 s of retries, ±20%), then back.
    endpoint.answer = lambda a: status(204 if len(endpoint.by_event()[a.event_id]) >= 3 else 503)
    base = await http_server(endpoint.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["call.*"]
    )
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 20)
    assert await wait_until(lambda: endpoint.delivered() == set(ids), within=30)
    for event_id, arrivals in endpoint.by_event().items():
        assert [a.status for a in arrivals] == [503, 503, 503, 204]
        assert len({a.webhook_id for a in arrivals}) == 1, event_id
    # The source partition is committed although the deliveries finished in retry tiers.
    bootstrap = svc.settings.kafka_bootstrap_servers
    assert await wait_committed(bootstrap, svc.settings.group_id, svc.topic, 20) == 20
    # No attempt before its due time: each retry record's due time against the arrival of
    # the attempt it scheduled (attempt n+1 of the event after n failed).
    retry_records = []
    for topic in svc.app.schedule.topics()[:3]:  # tiers 0.3 s, 0.6 s and 1 s: one each
        retry_records += await read_all(bootstrap, topic, 20)
    assert len(retry_records) == 60
    by_event = endpoint.by_event()
    for record in retry_records:
        pending = decode(record.value)
        assert pending.subscription_id == sub["id"]
        due = int(headers_of(record)[DUE_HEADER]) / 1000
        assert abs(due - pending.due_at) < 0.002
        nth = by_event[pending.event.id][pending.attempts]  # the attempt after `attempts`
        assert nth.at >= due, (pending.event.id, pending.attempts, nth.at - due)
        assert pending.last_error is not None
        assert pending.last_error.status == 503


async def test_exhausted_deliveries_become_dead_letters_and_replay_delivers_them_once(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(retry_schedule="0.05,0.1")
    healthy = False
    endpoint = Endpoint(lambda _a: status(204 if healthy else 500))
    base = await http_server(endpoint.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["*"]
    )
    ids = await produce_events(producer, svc.topic, types=["call.ended", "call.started"])
    bootstrap = svc.settings.kafka_bootstrap_servers
    dead = await read_all(bootstrap, svc.settings.dead_letter_topic, 2)
    assert len(dead) == 2
    assert {len(a) for a in endpoint.by_event().values()} == {3}  # 1 + len(schedule)
    for record in dead:
        headers = headers_of(record)
        pending = decode(record.value)
        assert headers["switchboard.reason"] == "exhausted"
        assert headers["switchboard.subscription-id"] == sub["id"]
        assert headers["switchboard.origin.topic"] == svc.topic
        assert headers["switchboard.origin.partition"] == "0"
        assert int(headers["switchboard.origin.offset"]) == ids.index(pending.event.id)
        assert headers["switchboard.consumer-group"] == svc.settings.group_id
        assert headers["switchboard.attempts"] == "3"
        assert headers["switchboard.last-status"] == "500"
        assert headers["switchboard.last-error-class"] == "server_error"
        assert sub["secret"] not in record.value.decode()
        assert not any(sub["secret"].encode() in v for _, v in record.headers)
    listing_url = f"{svc.base}/v1/dead-letters?subscription_id={sub['id']}&limit=1"
    # The history store has them a moment after the topic.
    await dead_letters(svc, f"&subscription_id={sub['id']}", until=lambda d: len(d) == 2)
    async with svc.http.get(listing_url) as resp:
        page = await resp.json()
    assert resp.status == 200
    assert len(page["data"]) == 1
    assert page["next_after"] is not None
    first = page["data"][0]
    assert first["reason"] == "exhausted"
    assert first["last_error"]["status"] == 500
    assert first["event"]["id"] in ids
    async with svc.http.get(listing_url + f"&after={page['next_after']}") as resp:
        rest = await resp.json()
    assert len(rest["data"]) == 1
    assert rest["next_after"] is None
    # Another tenant's key sees none of them and can replay none of them.
    async with svc.http.post(f"{svc.base}/v1/api-keys", json={"tenant_id": "globex"}) as resp:
        other = {"Authorization": f"Bearer {(await resp.json())['key']}"}
    async with svc.http.get(f"{svc.base}/v1/dead-letters", headers=other) as resp:
        assert (await resp.json())["data"] == []
    async with svc.http.post(f"{svc.base}/v1/dead-letters/replay", headers=other,
                             json={"ids": [first["id"]]}) as resp:  # fmt: skip
        assert (await resp.json()) == {
            "replayed": [],
            "skipped": [{"id": first["id"], "reason": "not_found"}],  # as if it did not exist
            "more": False,
        }
    recover = f"{svc.base}/v1/subscriptions/{sub['id']}/recover?since=2020-01-01T00:00:00Z"
    async with svc.http.post(recover, headers=other) as resp:
        assert resp.status == 404
    healthy = True
    replay_url = f"{svc.base}/v1/dead-letters/replay"
    async with svc.http.post(replay_url, json={"ids": [first["id"]]}) as resp:
        assert resp.status == 200
        assert (await resp.json())["replayed"] == [first["id"]]
    assert await wait_until(lambda: endpoint.delivered() == {first["event"]["id"]}, within=15)
    # The delivery log marks the replay and links it to its dead letter.
    replayed = await poll(svc, f"/v1/events/{first['event']['id']}/attempts?trigger=replay",
                          lambda b: len(b["data"]) >= 1, within=10)  # fmt: skip
    assert [(a["attempt"], a["replay_of"]) for a in replayed["data"]] == [(1, first["id"])]
    # An id that names no dead letter is answered for.
    async with svc.http.post(replay_url, json={"ids": ["dl_9_9"]}) as resp:
        assert (await resp.json())["skipped"] == [{"id": "dl_9_9", "reason": "not_found"}]
    # Idempotent: the same dead letter is not sent again.
    async with svc.http.post(replay_url, json={"ids": [first["id"]]}) as resp:
        body = await resp.json()
    assert body["replayed"] == []
    assert body["skipped"] == [{"id": first["id"], "reason": "already_replayed"}]
    # Recover: everything that failed for the subscription since a time, here the other one.
    since = "2020-01-01T00:00:00Z"
    async with svc.http.post(f"{svc.base}/v1/subscriptions/{sub['id']}/recover?since={since}") as r:
        recovered = await r.json()
    assert recovered["replayed"] == [rest["data"][0]["id"]]
    assert await wait_until(lambda: endpoint.delivered() == set(ids), within=15)
    for arrivals in endpoint.by_event().values():  # replays keep the webhook-id
        assert len({a.webhook_id for a in arrivals}) == 1
    assert sum(1 for a in endpoint.arrivals if a.status == 204) == 2
    ops = await ops_events(svc, 2)
    assert sorted(
        o["data"]["event_id"] for o in ops if o["type"] == "delivery.exhausted"
    ) == sorted(ids)


async def test_410_disables_and_later_events_wait_as_dead_letters(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory()
    gone = True
    endpoint = Endpoint(lambda _a: status(410 if gone else 204))
    base = await http_server(endpoint.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["*"]
    )
    [first] = await produce_events(producer, svc.topic, types=["call.ended"], seed=1)
    assert await wait_until(lambda: not svc.app.table.get(sub["id"]).enabled, within=15)  # type: ignore[union-attr]
    async with svc.http.get(f"{svc.base}/v1/subscriptions/{sub['id']}") as resp:
        view = await resp.json()
    assert view["enabled"] is False
    assert view["disabled_reason"] == "endpoint answered 410 Gone"
    assert view["disabled_at"]
    [later] = await produce_events(producer, svc.topic, types=["call.started"], seed=2)
    letters = await dead_letters(svc, until=lambda d: len(d) == 2)
    reasons = {d["event"]["id"]: d["reason"] for d in letters}
    assert reasons == {first: "gone", later: "subscription_disabled"}
    assert len(endpoint.arrivals) == 1  # no retry after 410, nothing sent while disabled
    ops = await ops_events(svc, 1)
    assert [o["type"] for o in ops] == ["endpoint.disabled"]
    # The customer fixes the endpoint and enables it: the reason goes, recover sends both.
    gone = False
    async with svc.http.patch(
        f"{svc.base}/v1/subscriptions/{sub['id']}", json={"enabled": True}
    ) as resp:
        assert (await resp.json())["disabled_reason"] is None
    async with svc.http.post(
        f"{svc.base}/v1/subscriptions/{sub['id']}/recover?since=2020-01-01T00:00:00Z"
    ) as resp:
        assert len((await resp.json())["replayed"]) == 2
    assert await wait_until(lambda: endpoint.delivered() == {first, later}, within=15)


async def test_retry_after_is_honoured(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # The schedule's own wait is 0.05 s; the receiver asks for 1 s.
    svc: RunningService = await service_factory(retry_schedule="0.05,2")
    endpoint = Endpoint(
        lambda a: status(204) if endpoint.arrivals else status(429, **{"Retry-After": "1"})
    )
    base = await http_server(endpoint.app())
    await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["*"]
    )
    await produce_events(producer, svc.topic, types=["call.ended"])
    assert await wait_until(lambda: len(endpoint.delivered()) == 1, within=15)
    first, second = endpoint.arrivals
    assert second.at - first.at >= 1.0


async def test_an_open_circuit_holds_back_neither_other_endpoints_nor_commits(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(
        # One retry, far off: the test ends while the broken endpoint's deliveries wait in it.
        retry_schedule="30",
        circuit_min_calls=3,
        circuit_failure_rate=1.0,
        circuit_open_seconds=30,
    )
    broken, healthy = Endpoint(lambda _a: status(503)), Endpoint()
    broken_base, healthy_base = await http_server(broken.app()), await http_server(healthy.app())
    bad = await svc.create_subscription(tenant_id="acme", name="bad", url=broken_base + "/h",
                                        event_types=["*"], max_in_flight=1)  # fmt: skip
    await svc.create_subscription(tenant_id="acme", name="good", url=healthy_base + "/h",
                                  event_types=["*"])  # fmt: skip
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 200)
    assert await wait_until(lambda: healthy.delivered() == set(ids), within=30)
    bootstrap = svc.settings.kafka_bootstrap_servers
    # Every record is committed: the broken endpoint's deliveries wait in a retry tier.
    assert await wait_committed(bootstrap, svc.settings.group_id, svc.topic, 200) == 200
    # The broken endpoint saw the circuit's minimum of calls (plus what was already in
    # flight); the other first attempts were counted as failed without a request.
    assert len(broken.arrivals) <= 3 + 1
    assert svc.app.pool.circuits_in(State.OPEN) == 1
    ops = await ops_events(svc, 1)
    assert [o["type"] for o in ops] == ["endpoint.failing"]
    # The history store has them a moment after they are made.
    await poll(svc, f"/v1/subscriptions/{bad['id']}/attempts?outcome=circuit_open&limit=1000",
               lambda b: len(b["data"]) >= 190)  # fmt: skip
    async with svc.http.get(f"{svc.base}/v1/subscriptions/{bad['id']}") as resp:
        assert (await resp.json())["failing_since"] is not None


async def test_failing_for_too_long_disables_and_success_after_a_probe_recovers(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(
        # Attempts counted while the circuit is open use this schedule up too: it must last
        # past the auto-disable span (3 s) and the flaky endpoint's recovery.
        retry_schedule=",".join(["0.3"] * 20),
        circuit_min_calls=2,
        circuit_failure_rate=1.0,
        circuit_open_seconds=0.2,
        circuit_max_open_seconds=0.2,
        auto_disable_after_seconds=3,
    )
    flaky, dead = Endpoint(), Endpoint(lambda _a: status(500))
    flaky_fails = True
    flaky.answer = lambda _a: status(500 if flaky_fails else 204)
    flaky_base, dead_base = await http_server(flaky.app()), await http_server(dead.app())
    recovering = await svc.create_subscription(
        tenant_id="acme", name="f", url=flaky_base + "/h", event_types=["call.*"]
    )
    dying = await svc.create_subscription(
        tenant_id="acme", name="d", url=dead_base + "/h", event_types=["agent.*"]
    )
    await produce_events(producer, svc.topic, types=["call.ended", "agent.status_changed"] * 3)
    assert await wait_until(lambda: svc.app.table.health(recovering["id"]) is not None, within=15)
    flaky_fails = False
    assert await wait_until(lambda: len(flaky.delivered()) == 3, within=15)
    assert await wait_until(lambda: svc.app.table.health(recovering["id"]) is None, within=10)
    # The other one never succeeds: disabled once failing longer than the span.
    assert await wait_until(lambda: not svc.app.table.get(dying["id"]).enabled, within=20)  # type: ignore[union-attr]
    reason = svc.app.table.get(dying["id"]).disabled_reason  # type: ignore[union-attr]
    assert reason is not None
    assert reason.startswith("failing without a success since")
    await dead_letters(svc, f"&subscription_id={dying['id']}", until=lambda d: len(d) == 3)
    ops = await ops_events(svc, 4)
    kinds = {(o["type"], o["data"]["subscription_id"]) for o in ops}
    assert ("endpoint.failing", recovering["id"]) in kinds
    assert ("endpoint.recovered", recovering["id"]) in kinds
    assert ("endpoint.failing", dying["id"]) in kinds
    assert ("endpoint.disabled", dying["id"]) in kinds


async def test_pending_retries_follow_an_edit_and_end_as_dead_letters_when_deleted(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(retry_schedule="1,1,1")
    old, new = Endpoint(lambda _a: status(503)), Endpoint(lambda _a: status(503))
    old_base, new_base = await http_server(old.app()), await http_server(new.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="crm", url=old_base + "/h", event_types=["*"]
    )
    [event_id] = await produce_events(producer, svc.topic, types=["call.ended"])
    assert await wait_until(lambda: len(old.arrivals) == 1, within=15)
    async with svc.http.patch(
        f"{svc.base}/v1/subscriptions/{sub['id']}", json={"url": new_base + "/h"}
    ) as resp:
        assert resp.status == 200
    assert await wait_until(lambda: len(new.arrivals) == 1, within=10)
    assert len(old.arrivals) == 1
    async with svc.http.delete(f"{svc.base}/v1/subscriptions/{sub['id']}") as resp:
        assert resp.status == 204
    [letter] = await dead_letters(svc, until=lambda d: len(d) == 1)
    assert letter["event"]["id"] == event_id
    assert letter["reason"] == "subscription_deleted"
    assert letter["attempts"] == 2
    assert len(new.arrivals) == 1


async def test_a_410_for_two_events_in_flight_disables_once(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    """One transition, one ops event: a platform notifying its customers from the ops topic
    notifies them once."""
    svc: RunningService = await service_factory()
    arrived: list[str] = []
    both_in = asyncio.Event()

    async def gone_when_both_arrived(request: web.Request) -> web.Response:
        arrived.append(orjson.loads(await request.read())["id"])
        if len(arrived) == 2:
            both_in.set()
        await both_in.wait()  # both requests are in flight before either answer leaves
        return web.Response(status=410)

    app = web.Application()
    app.router.add_post("/hook", gone_when_both_arrived)
    base = await http_server(app)
    sub = await svc.create_subscription(
        tenant_id="acme", name="crm", url=base + "/hook", event_types=["*"]
    )
    ids = await produce_events(producer, svc.topic, types=["call.ended", "call.started"])
    letters = await dead_letters(svc, until=lambda d: len(d) == 2)
    assert sorted(arrived) == sorted(ids)
    assert {d["reason"] for d in letters} == {"gone"}
    # Read past where a second ops event would be: exactly one arrives.
    ops = await read_all(svc.settings.kafka_bootstrap_servers, svc.settings.ops_topic, 2,
                         within=3)  # fmt: skip
    assert [orjson.loads(o.value)["type"] for o in ops] == ["endpoint.disabled"]
    assert orjson.loads(ops[0].value)["data"]["subscription_id"] == sub["id"]
