"""Upgrading a store that holds data: version 3 derives the hourly roll-ups from the minutes
stored before it, and keeps the attempts readable through the new indexes."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from service.history import queries
from service.history.migrations import migrate
from service.history.partitions import Partitions
from service.history.rollup import BUCKETS

START = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)


@pytest.fixture
async def conn(history_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(history_dsn)
    yield c
    await c.close()


async def test_version_3_derives_hours_from_the_minutes_stored_before_it(
    conn: asyncpg.Connection,
) -> None:
    assert await migrate(conn, until=2) == [1, 2]
    rng = random.Random(3)
    # Minutes across midnight (two day partitions), several per hour, two subscriptions.
    subs = ["sub_a", "sub_b"]
    minutes = sorted({(rng.choice(subs), START + timedelta(minutes=rng.randrange(180)))
                      for _ in range(200)})  # fmt: skip
    rows = [(sub, at, rng.randrange(50), [rng.randrange(9) for _ in range(BUCKETS)])
            for sub, at in minutes]  # fmt: skip
    partitions = Partitions()
    await partitions.ensure(conn, "attempt_minutes", {START.date(), START.date() + timedelta(1)})
    await partitions.ensure(conn, "attempts", {START.date()})
    await conn.executemany(
        "INSERT INTO attempt_minutes (subscription_id, minute, attempts, succeeded, buckets) "
        "VALUES ($1, $2, $3, $4, $5)",
        [(sub, at, sum(b), min(ok, sum(b)), b) for sub, at, ok, b in rows],
    )
    await conn.execute(
        "INSERT INTO attempts (at, id, subscription_id, tenant_id, event_id, event_type, "
        "webhook_id, attempt, trigger, method, url, outcome, latency_ms, response_excerpt, "
        "call_id) VALUES ($1, 'msg_1.1.1', 'sub_a', 'acme', 'evt_1', 'call.ended', 'msg_1', 1, "
        "'delivery', 'POST', 'https://x.example', 'success', 12.0, '', 'CA1')",
        START,
    )

    assert await migrate(conn) == [3]

    expected: dict[tuple[str, datetime], list[int]] = defaultdict(lambda: [0] * (BUCKETS + 2))
    for sub, at, ok, b in rows:
        sums = expected[(sub, at.replace(minute=0))]
        for i, n in enumerate([sum(b), min(ok, sum(b)), *b]):
            sums[i] += n
    stored = {(r["subscription_id"], r["hour"]): [r["attempts"], r["succeeded"], *r["buckets"]]
              for r in await conn.fetch("SELECT * FROM attempt_hours")}  # fmt: skip
    assert stored == expected
    for selector, value in (("call_id", "CA1"), ("webhook_id", "msg_1"), ("event_id", "evt_1")):
        sql, args = queries.AttemptQuery(selector, value).sql()
        assert [r["id"] for r in await conn.fetch(sql, *args)] == ["msg_1.1.1"], selector
