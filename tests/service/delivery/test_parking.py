"""Parking: an endpoint that cannot keep up holds only what it can take soon."""

from __future__ import annotations

import asyncio

from aiohttp import web

from service.delivery.job import DeliveryJob
from service.delivery.pace import Pace
from tests.service.delivery.harness import StartServer, make_event, make_pool, make_sub


def test_the_pace_is_the_rate_limit_then_what_was_measured() -> None:
    limited = make_sub("https://example.com/", rate_limit={"per_second": 10}, max_in_flight=2)
    pace = Pace()
    assert pace.rate(limited, now=0) == 10
    assert pace.allowance(limited, 5, now=0) == 50  # known from the start: its limit
    unlimited = make_sub("https://example.com/", max_in_flight=20, timeout_seconds=10)
    assert pace.rate(unlimited, now=0) == 2  # unknown: the slowest it can be
    assert pace.allowance(unlimited, 5, now=0) is None  # nothing parked on a guess
    pace.started(0)
    for i in range(300):
        pace.completed(i / 100)  # 100 per second for 3 s
    assert pace.measured(3.0) is not None
    assert 90 <= pace.rate(unlimited, now=3.0) <= 110
    assert 450 <= (pace.allowance(unlimited, 5, now=3.0) or 0) <= 550
    stuck = Pace()
    stuck.started(0)  # attempted for a second, nothing came back: the slowest it can be
    assert stuck.allowance(unlimited, 5, now=1.5) == 80  # four rounds of its concurrency


def test_parked_deliveries_are_booked_one_slot_apart_after_the_queue() -> None:
    sub = make_sub("https://example.com/", rate_limit={"per_second": 4})
    pace = Pace()
    first = pace.book(sub, queued=8, now=100.0)  # 8 ahead at 4/s: 2 s of queue
    second = pace.book(sub, queued=8, now=100.0)
    assert first == 102.25
    assert second == 102.5
    assert pace.book(sub, queued=0, now=110.0) == 110.25  # the booking caught up with time


async def test_a_slow_endpoint_parks_what_it_cannot_take_and_a_fast_one_parks_nothing(
    http_server: StartServer,
) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(status=204)

    async def fast(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/fast", fast)
    base = await http_server(app)
    pool = await make_pool(park_horizon_seconds=0.5)
    try:
        # The slow one takes 2 at a time, 0.2 s each: about 10 a second.
        slow_sub = make_sub(base + "/slow", max_in_flight=2)
        fast_sub = make_sub(base + "/fast", max_in_flight=20)
        done: list[asyncio.Event] = []
        for i in range(60):
            for sub in (slow_sub, fast_sub):
                finished = asyncio.Event()
                done.append(finished)
                pool.pool.submit(
                    DeliveryJob(make_event(f"{sub.id}-{i}"), sub.id, sub, finished.set)
                )
            await asyncio.sleep(0.02)  # 60 events over 1.2 s
        await asyncio.wait_for(asyncio.gather(*(d.wait() for d in done)), 10)
        parked = [c for c in pool.followup.calls if c[0] == "park"]
        assert parked, "the slow endpoint parked nothing"
        assert all(str(c[1]).startswith(slow_sub.id) for c in parked)
        # Booked at its pace: one slot (at most 1/10 s here) after another, in order.
        dues = [float(c[2]) for c in parked]  # type: ignore[arg-type]
        assert dues == sorted(dues)
        # What it kept in memory it could take within about the horizon.
        attempted = [c for c in pool.followup.calls if c[0] == "attempted"]
        slow_attempted = [c for c in attempted if str(c[1]).startswith(slow_sub.id)]
        assert len(slow_attempted) + len(parked) == 60
        assert len([c for c in attempted if str(c[1]).startswith(fast_sub.id)]) == 60
    finally:
        await pool.close()
