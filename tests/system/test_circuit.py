"""The circuit breaker with its default settings, against real receivers and the test broker."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from service.delivery.circuit import State
from tests.conftest import RunningService, produce_events, wait_until
from tests.helpers.history import dead_letters
from tests.system.test_retries import Endpoint, status

# The service's defaults (the suite's other tests keep circuits out of their way).
DEFAULT_CIRCUIT = {"circuit_min_calls": 20, "circuit_failure_rate": 0.8}


async def test_a_receiver_that_fails_every_first_attempt_gets_every_event_on_the_second(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    schedule = (0.3, 0.5, 1, 1, 1, 2)
    svc: RunningService = await service_factory(
        retry_schedule=",".join(map(str, schedule)), circuit_open_seconds=1, **DEFAULT_CIRCUIT
    )
    endpoint = Endpoint()
    # A receiver that cold-starts or deduplicates with a lock: refuses the first try of each.
    endpoint.answer = lambda a: status(503 if len(endpoint.by_event()[a.event_id]) == 0 else 204)
    base = await http_server(endpoint.app())
    await svc.create_subscription(tenant_id="acme", name="c", url=base + "/h", event_types=["*"])
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 30)
    # A burst of failed first requests looks like a dead endpoint, and opens the circuit.
    assert await wait_until(lambda: svc.app.pool.circuits_in(State.OPEN) == 1, within=10)
    # Events that come while it is open have their first attempts counted without a request.
    # Timed so that their second attempts fall due once it is half-open, while none of the
    # first batch's are (those come at 0.3 + 0.5 s and 1.8 s after it opened). The receiver
    # has never seen them, so they must not be the probe: they would fail it, and the circuit
    # would stay open, doubling its open time, until every attempt ran out.
    await asyncio.sleep(0.9)
    ids += await produce_events(producer, svc.topic, types=["call.ended"] * 30, seed=1)
    # A delivery the receiver has seen fail is the probe, it succeeds, and the circuit
    # closes. Every event arrives, each after exactly one refused request: attempts counted
    # while the circuit was open sent nothing, and no event ran out of attempts.
    assert await wait_until(lambda: endpoint.delivered() == set(ids), within=25)
    arrivals = endpoint.arrivals
    assert max(a.at for a in arrivals) - min(a.at for a in arrivals) < sum(schedule) * 1.5 + 2
    assert all(len(a) == 2 for a in endpoint.by_event().values())
    assert svc.app.pool.circuits_in(State.OPEN) == 0


async def test_a_dead_endpoint_gets_few_requests_and_its_deliveries_dead_letter_on_schedule(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    svc: RunningService = await service_factory(
        retry_schedule="0.2,0.4", circuit_open_seconds=60, **DEFAULT_CIRCUIT
    )
    dead = Endpoint(lambda _a: status(503))
    base = await http_server(dead.app())
    sub = await svc.create_subscription(
        tenant_id="acme", name="d", url=base + "/h", event_types=["*"], max_attempts=3,
        max_in_flight=1,
    )  # fmt: skip
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 40)

    # Three attempts each, about 0.6 s: counted as failed without a request once the circuit
    # opened, so max_attempts still means what it says and nothing waits for days.
    letters = await dead_letters(
        svc, f"&subscription_id={sub['id']}", within=20,
        until=lambda d: {x["event"]["id"] for x in d} == set(ids),
    )  # fmt: skip
    assert {d["reason"] for d in letters} == {"exhausted"}
    # The circuit's minimum of calls reached the endpoint, not 40 events times 3 attempts.
    assert len(dead.arrivals) <= 20 + 1
    assert svc.app.pool.circuits_in(State.OPEN) == 1


async def test_an_endpoint_failing_half_at_random_keeps_most_of_its_throughput(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # Both endpoints at the same rate limit, so that throughput is the limiter's, not the
    # machine's: a flaky endpoint spends about two requests per delivery, and no circuit
    # opens on it (its failure rate is under the threshold).
    svc: RunningService = await service_factory(circuit_open_seconds=1, **DEFAULT_CIRCUIT)
    rng = random.Random(7)
    healthy = Endpoint()
    flaky = Endpoint(lambda _a: status(503 if rng.random() < 0.5 else 204))
    for name, endpoint in (("healthy", healthy), ("flaky", flaky)):
        await svc.create_subscription(
            tenant_id="acme", name=name, url=await http_server(endpoint.app()) + "/h",
            event_types=["*"], rate_limit={"per_second": 50}, max_attempts=20,
        )  # fmt: skip
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 200)
    assert await wait_until(lambda: healthy.delivered() == set(ids), within=60)
    # Throughput while both have a backlog: by the time the healthy endpoint has all 200, the
    # flaky one has at least 40% as many (it spends about two requests on each).
    assert len(flaky.delivered()) >= 0.4 * len(ids), len(flaky.delivered())
    assert await wait_until(lambda: flaky.delivered() == set(ids), within=120)
    assert svc.app.pool.circuits_in(State.OPEN) == 0


async def test_a_recovered_endpoint_is_back_within_the_open_time_cap(
    service_factory: Any, http_server: Any, producer: AIOKafkaProducer
) -> None:
    # The defaults scaled down 15 times (15 s doubling to 60 s: 1 s doubling to 4 s).
    svc: RunningService = await service_factory(
        retry_schedule="0.5,1,2", circuit_open_seconds=1, circuit_max_open_seconds=4,
        **DEFAULT_CIRCUIT,
    )  # fmt: skip
    down = True
    endpoint = Endpoint(lambda _a: status(503 if down else 204))
    await svc.create_subscription(
        tenant_id="acme", name="r", url=await http_server(endpoint.app()) + "/h",
        event_types=["*"], max_attempts=50, retry_window_seconds=600,
    )  # fmt: skip
    ids = await produce_events(producer, svc.topic, types=["call.ended"] * 60)
    assert await wait_until(lambda: svc.app.pool.circuits_in(State.OPEN) == 1, within=20)
    await asyncio.sleep(6)  # long enough for failed probes to reach the cap
    down = False
    recovered_at = time.monotonic()
    assert await wait_until(lambda: endpoint.delivered() == set(ids), within=30)
    # Back within the cap plus the longest retry wait it can be parked in, with room for a
    # loaded machine: not after the next doubling, and not minutes later.
    assert time.monotonic() - recovered_at < 4 + 2 * 1.2 + 3
    assert svc.app.pool.circuits_in(State.OPEN) == 0
