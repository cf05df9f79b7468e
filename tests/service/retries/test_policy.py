"""The retry schedule, Retry-After and the circuit breaker: pure logic, fast."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.delivery.circuit import CircuitBreaker, State
from service.retries.policy import (
    DEFAULT_SCHEDULE,
    JITTER,
    GiveUp,
    Retry,
    RetrySchedule,
    parse_retry_after,
)


def state(b: CircuitBreaker) -> State:
    return b.state  # read through a call, so each check sees the breaker as it is now


SCHEDULE = RetrySchedule(DEFAULT_SCHEDULE, topic_prefix="switchboard.retry")


def test_default_schedule_tiers_and_topics() -> None:
    assert SCHEDULE.default_max_attempts == 9
    assert SCHEDULE.tiers == (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)
    assert SCHEDULE.topic(5.0) == "switchboard.retry.5s"
    assert SCHEDULE.topic(0.25) == "switchboard.retry.0.25s"
    assert SCHEDULE.tier_of_topic("switchboard.retry.300s") == "300s"


@given(
    failed=st.integers(min_value=1, max_value=30),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e7),
)
def test_a_retry_waits_its_jittered_schedule_in_a_tier_that_covers_it(
    failed: int, retry_after: float | None
) -> None:
    step = SCHEDULE.after_failure(failed_attempts=failed, first_attempt_at=0.0, now=0.0,
                                  max_attempts=100, window=1e9, retry_after=retry_after,
                                  retry_after_cap=3600.0)  # fmt: skip
    assert isinstance(step, Retry)
    nominal = DEFAULT_SCHEDULE[min(failed, len(DEFAULT_SCHEDULE)) - 1]
    assert nominal * (1 - JITTER) <= step.wait
    if retry_after is None:
        assert step.wait <= nominal * (1 + JITTER)
    else:
        assert step.wait >= min(retry_after, 3600.0)  # at least what the receiver asked
        assert step.wait <= max(nominal * (1 + JITTER), 3600.0)
    # The tier never holds the record longer than its own longest wait, so a record does not
    # sit at the head of a tier blocking the ones behind it.
    assert step.wait <= step.tier * (1 + JITTER) + 1e-9
    assert step.tier in SCHEDULE.tiers


def test_attempts_and_window_end_a_delivery() -> None:
    assert SCHEDULE.after_failure(failed_attempts=9, first_attempt_at=0, now=0, max_attempts=9,
                                  window=1e9) == GiveUp("exhausted")  # fmt: skip
    assert SCHEDULE.after_failure(failed_attempts=3, first_attempt_at=0, now=100, max_attempts=9,
                                  window=200) == GiveUp("retry_window")  # fmt: skip
    assert isinstance(
        SCHEDULE.after_failure(failed_attempts=2, first_attempt_at=0, now=0, max_attempts=9,
                               window=1e9),
        Retry,
    )  # fmt: skip


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now=now) == 120
    later = format_datetime(datetime(2026, 11, 22, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now) == 90
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0  # past
    for junk in (None, "", "soon", "-5", "1.5", "\x00"):
        assert parse_retry_after(junk, now=now) is None


@given(st.text(max_size=60))
def test_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, now=0.0)
    assert result is None or result >= 0


@pytest.mark.parametrize("bad", [(), (-1.0,)])
def test_a_schedule_needs_waits(bad: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="retry schedule"):
        RetrySchedule(bad, topic_prefix="p")
