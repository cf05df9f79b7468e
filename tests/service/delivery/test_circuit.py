"""The circuit breaker: a failure rate over a window, one probe, a failed delivery as the probe."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from service.delivery.circuit import CircuitBreaker, State, Transition


def breaker(**changes: float) -> CircuitBreaker:
    options = {
        "window_seconds": 60.0,
        "min_calls": 20,
        "failure_rate": 0.8,
        "open_seconds": 10.0,
        "max_open_seconds": 25.0,
        **changes,
    }
    return CircuitBreaker(
        window_seconds=options["window_seconds"],
        min_calls=int(options["min_calls"]),
        failure_rate=options["failure_rate"],
        open_seconds=options["open_seconds"],
        max_open_seconds=options["max_open_seconds"],
    )


def state(b: CircuitBreaker) -> State:
    return b.state  # read through a function: mypy narrows attributes across calls


def test_it_opens_on_the_failure_rate_once_the_window_has_enough_calls() -> None:
    b = breaker()
    for t in range(19):
        assert b.record(False, t) is None  # 19 calls: below the minimum, whatever they are
    assert b.record(False, 19) is Transition.OPENED
    assert state(b) is State.OPEN
    assert b.retry_at == 29
    mixed = breaker()
    results = [False] * 15 + [True] * 5  # 75% failed: under the 80% rate
    assert all(mixed.record(ok, t) is None for t, ok in enumerate(results))
    # Four more failures make 19 of 24 (79%); the fifth, 20 of 25: 80%.
    assert all(mixed.record(False, t) is None for t in range(20, 24))
    assert mixed.record(False, 24) is Transition.OPENED
    assert state(mixed) is State.OPEN


def test_failures_that_left_the_window_do_not_count() -> None:
    b = breaker(window_seconds=10, min_calls=5)
    for t in range(4):
        b.record(False, t)
    # 20 s later the old failures are gone: four new ones are below the minimum again.
    assert all(b.record(False, 20 + t) is None for t in range(4))
    assert b.record(False, 24) is Transition.OPENED


def test_an_endpoint_that_fails_every_first_attempt_never_opens_it() -> None:
    b = breaker()
    for t in range(1000):
        assert b.record(t % 2 == 1, t * 0.1) is None  # fail, succeed, fail, succeed...
    assert state(b) is State.CLOSED


def test_half_open_prefers_a_failed_delivery_as_the_single_probe_and_backs_off_capped() -> None:
    b = breaker(min_calls=1, failure_rate=1.0)
    assert b.record(False, 0) is Transition.OPENED
    assert not b.allow(5)
    # Open time over: a first attempt may not probe yet, a delivery that failed before may.
    assert not b.allow(10, failed_before=False)
    assert b.allow(10, failed_before=True)
    assert state(b) is State.HALF_OPEN
    assert not b.allow(10.5, failed_before=True)  # one probe at a time
    assert b.record(False, 10.8) is None  # sent before it opened: says nothing now
    assert b.retry_at == 10
    assert b.record(False, 11, probe=True) is None  # the probe failed: open twice as long
    assert b.retry_at == 31
    assert b.allow(31)
    b.record(False, 32, probe=True)
    assert b.retry_at == 32 + 25  # capped
    # No failed delivery came to probe for one open period: a first attempt may.
    assert not b.allow(57 + 24.9, failed_before=False)
    assert b.allow(57 + 25.1, failed_before=False)
    assert b.record(True, 83, probe=True) is Transition.CLOSED
    assert state(b) is State.CLOSED
    # Closed again: the window and the open time start over.
    assert b.record(False, 84) is Transition.OPENED
    assert b.retry_at == 94


@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=300),
    st.integers(min_value=1, max_value=10),
)
def test_never_two_probes_out_and_never_open_below_the_rate(
    steps: list[tuple[bool, bool]], min_calls: int
) -> None:
    b = breaker(min_calls=min_calls, window_seconds=5, open_seconds=1, max_open_seconds=8)
    now = 0.0
    for ok, failed_before in steps:
        now += 0.7
        if b.allow(now, failed_before=failed_before):
            probe = state(b) is State.HALF_OPEN
            if probe:
                assert not b.allow(now)  # a second caller while the probe is out
            b.record(ok, now, probe=probe)


def test_a_half_failing_endpoint_keeps_its_circuit_closed_almost_always() -> None:
    rng = random.Random(7)
    b = breaker()
    opened = sum(1 for t in range(10_000) if b.record(rng.random() < 0.5, t * 0.01))
    assert opened == 0


def test_a_busy_endpoints_window_is_kept_by_the_second() -> None:
    b = breaker(window_seconds=60)
    for i in range(120_000):  # 2,000 attempts a second for 60 s, one in ten failed
        assert b.record(i % 10 != 0, i / 2000) is None
    assert len(b._buckets) <= 61
    # ...and it still opens on the rate: 80% of what the window then holds.
    t = 60.0
    while b.record(False, t) is None:
        t += 0.001
    assert b._failures >= 0.8 * b._calls
