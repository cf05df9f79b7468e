"""The delivery pool: queues, limits, re-reads and the circuit, against real loopback servers."""

from __future__ import annotations

import asyncio
import functools
import time

import msgspec
import orjson
from aiohttp import web
from standardwebhooks import Webhook

from service import __version__
from service.delivery.circuit import State, Transition
from service.delivery.job import DeliveryJob
from service.delivery.outcomes import Outcome
from service.delivery.signing import message_id
from service.subscriptions.model import Subscription
from tests.service.delivery.harness import (
    Circuit,
    Harness,
    Recorder,
    StartServer,
    delivered,
    make_event,
    make_pool,
    make_sub,
)


async def test_request_is_signed_and_shaped(pool: Harness, http_server: StartServer) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    sub = make_sub(base + "/crm", headers={"X-Api-Key": "k1"}, method="PUT")
    event = make_event()
    assert await delivered(pool, event, sub)
    path, headers, body = rec.requests[0]
    assert path == "/crm"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"switchboard/{__version__}"
    assert headers["X-Api-Key"] == "k1"
    assert headers["webhook-id"] == message_id(sub.id, event.id)
    Webhook(sub.secret).verify(body, headers)
    assert orjson.loads(body) == {
        "id": "evt_1",
        "type": "call.ended",
        "timestamp": "2026-11-22T10:00:00Z",
        "tenant_id": "acme",
        "data": {"call": {"duration": 125}},
    }


async def test_a_deleted_or_disabled_subscription_is_not_attempted(
    http_server: StartServer,
) -> None:
    table: dict[str, Subscription] = {}
    pool = await make_pool(find=table.get)
    followup = pool.followup
    try:
        rec = Recorder()
        base = await http_server(rec.app())
        sub = make_sub(base + "/gone")
        table[sub.id] = msgspec.structs.replace(sub, enabled=False)
        await pool.deliver(make_event("e1"), sub)
        del table[sub.id]
        await pool.deliver(make_event("e2"), sub)
        assert rec.requests == []
        assert followup.calls == [
            ("give_up", "e1", "subscription_disabled"),
            ("give_up", "e2", "subscription_deleted"),
        ]
        assert pool.pool.in_flight == 0
    finally:
        await pool.close()


async def test_an_edit_applies_to_queued_deliveries(http_server: StartServer) -> None:
    table: dict[str, Subscription] = {}
    pool = await make_pool(find=table.get)
    try:
        old, new = Recorder(), Recorder()
        old_base, new_base = await http_server(old.app()), await http_server(new.app())
        sub = make_sub(old_base + "/a")
        # The job carries the subscription as it was when the event was routed; the attempt
        # reads it again and goes to the URL it has now.
        table[sub.id] = msgspec.structs.replace(sub, url=new_base + "/b")
        assert await delivered(pool, make_event(), sub)
        assert old.requests == []
        assert [p for p, _, _ in new.requests] == ["/b"]
    finally:
        await pool.close()


async def test_an_open_circuit_counts_attempts_without_sending_and_a_probe_closes_it(
    http_server: StartServer,
) -> None:
    healthy = False
    requests = 0

    async def handle(_request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=200 if healthy else 503)

    app = web.Application()
    app.router.add_post("/c", handle)
    base = await http_server(app)
    pool = await make_pool(circuit=Circuit())
    followup = pool.followup
    sub = make_sub(base + "/c")
    try:
        for i in range(3):
            await pool.deliver(make_event(f"f{i}"), sub)
        assert [c[2] for c in followup.calls] == [None, None, Transition.OPENED]
        assert pool.pool.circuits_in(State.OPEN) == 1
        # Open: the attempt that falls due is counted as failed, and no request is made.
        off = await pool.deliver(make_event("off"), sub)
        assert off is not None
        assert off.outcome is Outcome.CIRCUIT_OPEN
        assert "circuit is open" in (off.error or "")
        assert requests == 3
        healthy = True
        await asyncio.sleep(Circuit.circuit_open_seconds)
        # Half-open: a first attempt does not probe for one open period...
        first = await pool.deliver(make_event("first"), sub)
        assert first is not None
        assert first.outcome is Outcome.CIRCUIT_OPEN
        # ...nor does one whose earlier attempts were all counted while the circuit was open
        # (the receiver has never seen it)...
        refused = asyncio.Event()
        unseen = DeliveryJob(make_event("unseen"), sub.id, sub, refused.set, attempts=2, sent=0)
        pool.pool.submit(unseen)
        await refused.wait()
        assert followup.results["unseen"].outcome is Outcome.CIRCUIT_OPEN
        assert unseen.attempts == 3
        assert unseen.sent == 0
        # ...a delivery the receiver has seen fail does, and closes the circuit.
        done = asyncio.Event()
        retry = DeliveryJob(make_event("retry"), sub.id, sub, done.set, attempts=1)
        pool.pool.submit(retry)
        await done.wait()
        assert followup.calls[-1] == ("attempted", "retry", Transition.CLOSED)
        assert pool.pool.circuits_in(State.CLOSED) == 1
        assert requests == 4
    finally:
        await pool.close()


async def test_an_open_circuit_counts_its_failed_attempts_at_its_pace_and_loses_none(
    http_server: StartServer,
) -> None:
    """A dead endpoint's backlog is worked through at CIRCUIT_OPEN_PACE, not as fast as the
    CPU allows: the queue waits in the pool (and, in the service, in Kafka behind it)."""

    async def down(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/dead", down)
    base = await http_server(app)
    pace = 20.0
    backlog = 3 * int(pace)
    pool = await make_pool(circuit=Circuit(circuit_open_pace=pace, circuit_open_seconds=60))
    sub = make_sub(base + "/dead", max_in_flight=4)
    done: list[str] = []
    all_done = asyncio.Event()

    def finished(event_id: str) -> None:
        done.append(event_id)
        if len(done) == backlog:
            all_done.set()

    try:
        for i in range(3):  # opens the circuit (min_calls 3, every call failed)
            await pool.deliver(make_event(f"open{i}"), sub)
        assert pool.pool.circuits_in(State.OPEN) == 1
        # The pace's one-second burst goes at once; the rest at the pace, however long a
        # busy machine takes to run them: at most pace * elapsed + burst by any time.
        started = time.monotonic()
        for i in range(backlog):
            pool.pool.submit(DeliveryJob(
                make_event(f"e{i}"), sub.id, sub, functools.partial(finished, f"e{i}")
            ))  # fmt: skip
        await asyncio.sleep(0.5)
        assert len(done) <= pace * (time.monotonic() - started) + pace
        assert len(done) < backlog
        await all_done.wait()
        outcomes = {pool.followup.results[f"e{i}"].outcome for i in range(backlog)}
        assert outcomes == {Outcome.CIRCUIT_OPEN}
    finally:
        await pool.close()


async def test_rate_limit_spaces_requests(pool: Harness, http_server: StartServer) -> None:
    arrivals: list[float] = []

    async def handle(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response()

    app = web.Application()
    app.router.add_post("/r", handle)
    base = await http_server(app)
    sub = make_sub(base + "/r", rate_limit={"per_second": 20, "burst": 1})
    await asyncio.gather(*(delivered(pool, make_event(f"e{i}"), sub) for i in range(10)))
    assert len(arrivals) == 10
    # 10 requests at 20/s with no burst need at least 9 intervals of 50 ms. A slow machine
    # only makes the span longer, so this lower bound cannot flake.
    assert arrivals[-1] - arrivals[0] >= 9 * 0.05 * 0.9


async def test_max_in_flight_caps_concurrency(pool: Harness, http_server: StartServer) -> None:
    current = peak = 0

    async def handle(_request: web.Request) -> web.Response:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.02)
        current -= 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/c", handle)
    base = await http_server(app)
    sub = make_sub(base + "/c", max_in_flight=3)
    results = await asyncio.gather(*(delivered(pool, make_event(f"e{i}"), sub) for i in range(30)))
    assert all(results)
    assert peak == 3


async def test_a_hanging_endpoint_does_not_hold_back_a_healthy_one(
    pool: Harness, http_server: StartServer
) -> None:
    release = asyncio.Event()
    hanging = 0

    async def hang(_request: web.Request) -> web.Response:
        nonlocal hanging
        hanging += 1
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hang", hang)
    rec = Recorder()
    slow_base, fast_base = await http_server(app), await http_server(rec.app())
    slow, fast = make_sub(slow_base + "/hang", max_in_flight=2), make_sub(fast_base + "/ok")
    slow_tasks = [asyncio.create_task(pool.deliver(make_event(f"s{i}"), slow)) for i in range(50)]
    try:
        fast_results = await asyncio.gather(
            *(delivered(pool, make_event(f"f{i}"), fast) for i in range(50))
        )
        assert all(fast_results)
        assert len(rec.requests) == 50
        assert hanging == 2  # the slow endpoint is held at its own cap, still waiting
        assert not any(t.done() for t in slow_tasks)
    finally:
        release.set()
        await asyncio.gather(*slow_tasks)
