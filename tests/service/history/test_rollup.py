"""Roll-up buckets and quantiles, retention arithmetic, correlation keys: pure logic."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from service.catalog.correlation import Correlation, parse_overrides
from service.catalog.entries import BY_TYPE
from service.events.envelope import Event
from service.history.partitions import expired, partition_name, retention_start
from service.history.queries import clean, cursor_of, parse_cursor
from service.history.rollup import BOUNDS_MS, BUCKETS, bucket, minute_of, quantile


def test_bucket_bounds_are_inclusive_and_the_last_is_open() -> None:
    assert bucket(0) == 0
    assert bucket(5.0) == 0
    assert bucket(5.001) == 1
    assert bucket(BOUNDS_MS[-1]) == len(BOUNDS_MS) - 1
    assert bucket(10**9) == BUCKETS - 1


def test_quantile_interpolates_within_the_bucket_holding_the_rank() -> None:
    counts = [0] * BUCKETS
    assert quantile(counts, 0.5) is None
    counts[bucket(40)] = 10  # all in (25, 50]
    assert quantile(counts, 0.5) == 37.5
    assert quantile(counts, 1.0) == 50.0
    counts[bucket(700)] = 10  # half in (500, 1000]
    assert quantile(counts, 0.5) == 50.0
    assert quantile(counts, 0.95) == 950.0
    only_slow = [0] * BUCKETS
    only_slow[-1] = 3
    assert quantile(only_slow, 0.99) == BOUNDS_MS[-1]


def test_minutes_and_retention_are_whole_utc_units() -> None:
    at = datetime(2026, 11, 28, 18, 30, 45, tzinfo=UTC).timestamp()
    assert minute_of(at) == datetime(2026, 11, 28, 18, 30, tzinfo=UTC).timestamp()
    assert retention_start(at, 30) == datetime(2026, 10, 29, tzinfo=UTC)


def test_only_partitions_wholly_before_retention_expire() -> None:
    keep_from = datetime(2026, 10, 29, tzinfo=UTC)
    names = [partition_name("attempts", date(2026, 10, d)) for d in (27, 28, 29, 30)]
    names += ["attempts_default", "attempt_minutes_20261001", "attempts_2026102x"]
    assert expired(names, "attempts", keep_from) == ["attempts_20261027", "attempts_20261028"]
    assert expired(names, "attempt_minutes", keep_from) == ["attempt_minutes_20261001"]


def _event(data: bytes) -> Event:
    return Event(
        id="evt_1",
        source="s",
        type="call.ended",
        tenant_id="acme",
        time="2026-11-28T00:00:00Z",
        time_unix=0.0,
        data_raw=data,
    )


def test_correlation_keys_come_from_the_catalogs_shapes() -> None:
    keys = Correlation()
    ended = BY_TYPE["call.ended"].sample
    assert keys(_event(orjson.dumps(ended))) == {
        "call_id": ended["call"]["id"],
        "agent_id": ended["agent"]["id"],
        "contact_id": ended["contact"]["id"],
    }
    campaign = orjson.dumps(BY_TYPE["campaign.started"].sample)
    assert keys(_event(campaign)) == {"campaign_id": "camp_spring24"}
    assert keys(_event(b'{"call": {"id": true}, "agent_id": 42}')) == {"agent_id": "42"}
    assert keys(_event(b"{}")) == {}


def test_correlation_paths_can_be_replaced_per_key() -> None:
    keys = Correlation(["call_id=data.call.sid|data.sid"])
    assert keys(_event(b'{"call": {"id": "c1", "sid": "CA123"}}')) == {"call_id": "CA123"}
    assert keys(_event(b'{"sid": "CA9"}')) == {"call_id": "CA9"}
    with pytest.raises(ValueError, match="KEY=PATH"):
        parse_overrides(["ticket_id=data.ticket"])
    with pytest.raises(ValueError, match="segments"):
        parse_overrides(["call_id=data..x"])


def test_cursors_round_trip_exactly_and_reject_garbage() -> None:
    at = datetime(2026, 11, 28, 18, 30, 45, 123456, tzinfo=UTC)
    cursor = cursor_of(at, "msg_1.2.3:4")
    assert parse_cursor(cursor) == (at, "msg_1.2.3:4")
    for bad in ("", "msg_1", "12:", "x:msg_1", "-5:msg_1"):
        assert parse_cursor(bad) is None


def test_request_values_are_cleaned_as_stored_values_are() -> None:
    assert clean("CA\x00123") == "CA123"
    assert clean(["a\x00", "b"]) == ["a", "b"]
    assert clean("\udc41x") == "?x"  # a lone surrogate cannot be sent as UTF-8
    assert clean(7) == 7
