"""How much of an endpoint's backlog is queued in memory: pure decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.delivery.horizon import (
    HORIZON_SECONDS,
    MAX_WAIT,
    MIN_QUEUED_PER_WORKER,
    MIN_WAIT,
    PACE_WINDOW_SECONDS,
    Pace,
    horizon_of,
    refill,
    wait_before_more,
)
from service.subscriptions.model import Subscription
from tests.service.delivery.harness import make_sub


def sub(*, per_second: float | None = None, max_in_flight: int = 4) -> Subscription:
    limit = {"rate_limit": {"per_second": per_second}} if per_second is not None else {}
    return make_sub("https://example.com/hook", max_in_flight=max_in_flight, **limit)


def test_a_rate_limited_endpoint_queues_a_horizon_of_its_rate() -> None:
    limited, pace = sub(per_second=10), Pace(0.0)
    assert wait_before_more(limited, pace, queued=49) is None
    # At 50 (5 s at 10/s) it waits until the queue is back at half: 2.5 s, offered within 1 s.
    assert wait_before_more(limited, pace, queued=50) == MAX_WAIT
    fast = sub(per_second=1000)
    assert wait_before_more(fast, pace, queued=4999) is None
    assert wait_before_more(fast, pace, queued=5000) == MAX_WAIT  # 2.5 s to half


def test_an_endpoint_without_a_limit_follows_its_measured_pace() -> None:
    endpoint, pace = sub(max_in_flight=4), Pace(0.0)
    floor = MIN_QUEUED_PER_WORKER * 4
    assert wait_before_more(endpoint, pace, queued=floor - 1) is None
    assert wait_before_more(endpoint, pace, queued=floor) == MIN_WAIT  # pace unknown yet
    for i in range(100):  # 100 attempts finished over one window: 100/s
        pace.finished(PACE_WINDOW_SECONDS * (i + 1) / 100)
    assert pace.per_second == 100
    assert wait_before_more(endpoint, pace, queued=int(100 * HORIZON_SECONDS) - 1) is None
    assert wait_before_more(endpoint, pace, queued=int(100 * HORIZON_SECONDS)) is not None


@given(
    per_second=st.one_of(st.none(), st.floats(0.01, 10_000)),
    max_in_flight=st.integers(1, 1000),
    queued=st.integers(0, 1_000_000),
)
def test_the_wait_is_bounded_and_only_at_the_horizon(
    per_second: float | None, max_in_flight: int, queued: int
) -> None:
    endpoint = sub(per_second=per_second, max_in_flight=max_in_flight)
    wait = wait_before_more(endpoint, Pace(0.0), queued)
    # Workers always have work queued, and the horizon holds at least one per worker.
    if queued < MIN_QUEUED_PER_WORKER * max_in_flight:
        assert wait is None
    if wait is not None:
        assert MIN_WAIT <= wait <= MAX_WAIT


@given(
    per_second=st.one_of(st.none(), st.floats(0.01, 10_000)),
    max_in_flight=st.integers(1, 1000),
    queued=st.integers(0, 1_000_000),
)
def test_what_is_read_back_comes_in_chunks_and_stays_within_the_horizon(
    per_second: float | None, max_in_flight: int, queued: int
) -> None:
    endpoint, pace = sub(per_second=per_second, max_in_flight=max_in_flight), Pace(0.0)
    horizon = horizon_of(endpoint, pace)
    n = refill(endpoint, pace, queued)
    assert 0 <= n <= horizon
    assert queued + n <= max(horizon, queued)
    # None while more than half the horizon is queued; the rest of the way up once it is not.
    assert n == (horizon - queued if queued <= horizon // 2 else 0)


def test_a_slow_endpoint_is_read_back_for_half_its_horizon_at_a_time() -> None:
    limited, pace = sub(per_second=10), Pace(0.0)  # a horizon of 50
    assert refill(limited, pace, queued=49) == 0  # one has gone: not worth a read
    assert refill(limited, pace, queued=26) == 0
    assert refill(limited, pace, queued=25) == 25
    assert refill(limited, pace, queued=0) == 50
