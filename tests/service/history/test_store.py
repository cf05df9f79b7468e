"""The history store against a real PostgreSQL: idempotent batches, roll-ups that equal the
raw rows, retention by dropping partitions, replay claims, concurrent migrations."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from service.attempt_log.record import DECODER, ENCODER, AttemptRecord
from service.history import queries
from service.history.chunks import check
from service.history.conn import Conn
from service.history.migrations import MIGRATIONS
from service.history.partitions import Partitions
from service.history.rollup import BUCKETS, bucket, hour_of, minute_of
from service.history.store import HistoryStore
from service.history.writes import DeadLetterRow, insert_dead_letters, utc
from service.history.writes import insert_attempts as insert_chunks
from tests.conftest import ADMIN_TOKEN


@pytest.fixture
async def store(history_dsn: str) -> AsyncIterator[HistoryStore]:
    s = HistoryStore(history_dsn, retention_days=30)
    await s.connect()
    yield s
    await s.close()


def attempt(
    i: int,
    at: float,
    *,
    sub: str = "sub_a",
    outcome: str = "success",
    trigger: str = "delivery",
    latency: float = 12.0,
    **keys: str,
) -> AttemptRecord:
    return AttemptRecord(
        id=f"msg_{i}.1.{int(at * 1000)}",
        at=at,
        subscription_id=sub,
        tenant_id="acme",
        event_id=f"evt_{i}",
        event_type="call.ended",
        webhook_id=f"msg_{i}",
        attempt=1,
        trigger=trigger,
        method="POST",
        url="https://x.example/h",
        outcome=outcome,
        status=200,
        latency_ms=latency,
        **keys,
    )


async def insert_attempts(conn: Conn, partitions: Partitions, records: list[AttemptRecord]) -> int:
    """The records as one record of the attempts topic, every one kept whatever its age."""
    chunk = check(ENCODER.encode(records), DECODER).chunk
    return await insert_chunks(conn, partitions, [chunk], queries.EPOCH)


async def test_a_batch_written_twice_is_stored_and_rolled_up_once(store: HistoryStore) -> None:
    now = time.time()
    batch = [attempt(i, now - i) for i in range(50)]
    async with store.pool.acquire() as conn:
        assert await insert_attempts(conn, store.partitions, batch) == 50
        assert await insert_attempts(conn, store.partitions, [*batch[10:], attempt(99, now)]) == 1
        # The same attempt twice in one batch (a record read twice before a flush).
        twice = attempt(100, now)
        assert await insert_attempts(conn, store.partitions, [twice, twice]) == 1
        assert await conn.fetchval("SELECT count(*) FROM attempts") == 52
        assert await conn.fetchval("SELECT sum(attempts) FROM attempt_minutes") == 52
        assert await conn.fetchval("SELECT sum(attempts) FROM attempt_hours") == 52


async def test_text_postgresql_refuses_is_cleaned_not_fatal(store: HistoryStore) -> None:
    """A NUL in an endpoint's answer or an event's id field would make the batch fail for
    good (text columns refuse it): it is dropped from the value instead."""
    odd = msgspec.structs.replace(
        attempt(1, time.time(), call_id="CA\x001"), response_excerpt="ok\x00", error="e\x00"
    )
    async with store.pool.acquire() as conn:
        assert await insert_attempts(conn, store.partitions, [odd]) == 1
        row = await conn.fetchrow("SELECT response_excerpt, error, call_id FROM attempts")
    assert row is not None
    assert tuple(row) == ("ok", "e", "CA1")


async def test_roll_ups_equal_what_the_raw_rows_say(store: HistoryStore) -> None:
    rng = random.Random(7)
    now = time.time()
    records = [
        attempt(
            i,
            now - rng.uniform(0, 10 * 86_400),
            sub=rng.choice(["sub_a", "sub_b", "sub_c"]),
            outcome=rng.choice(["success", "success", "server_error", "timeout"]),
            trigger=rng.choice(["delivery", "delivery", "lookup", "test"]),
            latency=rng.expovariate(1 / 200),
        )
        for i in range(3000)
    ]

    async def write(batch: list[AttemptRecord]) -> None:
        async with store.pool.acquire() as conn:
            await insert_attempts(conn, store.partitions, batch)

    # Overlapping batches written at once, as two indexers after a rebalance would.
    await asyncio.gather(*(write(records[i : i + 700]) for i in range(0, 3000, 500)))
    async with store.pool.acquire() as conn:
        raw = await conn.fetch("SELECT * FROM attempts WHERE trigger <> 'test'")
        assert await conn.fetchval("SELECT count(*) FROM attempts") == 3000
        for table, column, unit in (
            ("attempt_minutes", "minute", 60),
            ("attempt_hours", "hour", 3600),
        ):
            stored = {
                (r["subscription_id"], r[column].timestamp()): [r["attempts"], r["succeeded"],
                                                                *r["buckets"]]
                for r in await conn.fetch(f"SELECT * FROM {table}")
            }  # fmt: skip
            assert stored == recount(raw, unit), table
    # The stats query sums them per window: minutes before a window's first whole hour, hours
    # after it. The route's windows (ending now), a window starting on a whole hour, one
    # starting a minute before one, and retention's start.
    hour = hour_of(now) - 5 * 3600
    starts = [minute_of(now - s) for s in (300, 3600, 86_400, 7 * 86_400, 30 * 86_400)]
    starts += [hour, hour - 60, minute_of(now - 36 * 3600 - 17 * 60)]
    starts.append(store.history_from(now).timestamp())
    windows = await queries.stats(store.pool, "sub_a", [utc(s) for s in starts])
    for start, counted in zip(starts, windows, strict=True):
        in_window = [r for r in raw if r["at"].timestamp() >= start]
        expected = recount(in_window, 10**10).get(("sub_a", 0.0), [0, 0] + [0] * BUCKETS)
        assert [counted.attempts, counted.succeeded, *counted.buckets] == expected, start


def recount(rows: list[asyncpg.Record], unit: int) -> dict[tuple[str, float], list[int]]:
    """Attempts, succeeded and bucket counts per subscription and `unit` seconds, from raw rows."""
    out: dict[tuple[str, float], list[int]] = {}
    for row in rows:
        key = (row["subscription_id"], float(row["at"].timestamp() // unit * unit))
        counts = out.setdefault(key, [0, 0] + [0] * BUCKETS)
        counts[0] += 1
        counts[1] += row["outcome"] == "success"
        counts[2 + bucket(row["latency_ms"])] += 1
    return out


async def test_retention_drops_whole_days_and_keeps_the_rest(store: HistoryStore) -> None:
    now = time.time()
    old, edge, recent = now - 40 * 86_400, now - 31 * 86_400, now - 86_400
    async with store.pool.acquire() as conn:
        await insert_attempts(
            conn,
            store.partitions,
            [attempt(1, old), attempt(2, edge), attempt(3, recent), attempt(4, now)],
        )
        await insert_dead_letters(
            conn,
            store.partitions,
            [
                DeadLetterRow("dl_0_1", old, "sub_a", "acme", "exhausted", "evt_1", b"{}"),
                DeadLetterRow("dl_0_2", now, "sub_a", "acme", "exhausted", "evt_2", b"{}"),
            ],
        )
    dropped = await store.apply_retention(now)
    assert {name.rsplit("_", 1)[0] for name in dropped} == {
        "attempts",
        "attempt_minutes",
        "attempt_hours",
        "dead_letters",
    }
    assert len(dropped) == 2 + 2 + 2 + 1  # the 40- and 31-day-old days; one old dead letter
    async with store.pool.acquire() as conn:
        kept = await conn.fetch("SELECT at FROM attempts ORDER BY at")
        assert [r["at"].timestamp() for r in kept] == pytest.approx([recent, now])
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 1
        assert await conn.fetchval("SELECT sum(attempts) FROM attempt_minutes") == 2
        assert await conn.fetchval("SELECT sum(attempts) FROM attempt_hours") == 2
    assert await store.apply_retention(now) == []
    # A day written again after its partition was dropped is created again.
    async with store.pool.acquire() as conn:
        assert await insert_attempts(conn, store.partitions, [attempt(5, recent - 3600)]) == 1


async def test_two_replays_at_once_claim_each_dead_letter_once(store: HistoryStore) -> None:
    now = time.time()
    ids = [f"dl_0_{i}" for i in range(40)]
    async with store.pool.acquire() as conn:
        await insert_dead_letters(
            conn,
            store.partitions,
            [DeadLetterRow(i, now, "sub_a", "acme", "exhausted", "evt", b"{}") for i in ids],
        )

    async def claim() -> set[str]:
        rows = await store.pool.fetch(queries.CLAIM_SQL, ids, queries.CLAIM_EXPIRY)
        return {r["id"] for r in rows}

    first, second = await asyncio.gather(claim(), claim())
    assert first | second == set(ids)
    assert not first & second
    assert await claim() == set()
    # A released claim (the broker refused) may be claimed again; a replayed one never.
    await store.pool.execute(queries.RELEASE_SQL, ids[:5])
    await store.pool.execute(queries.MARK_SQL, ids[5:])
    assert await claim() == set(ids[:5])
    await store.pool.execute(queries.MARK_SQL, ids[:5])
    await store.pool.execute(queries.RELEASE_SQL, ids)
    assert await claim() == set()


async def test_migrations_run_at_once_from_two_processes(history_dsn: str) -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_HISTORY_DSN": history_dsn,
        "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
        "SWITCHBOARD_LOG_LEVEL": "warning",
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.cli",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out.decode().strip() for out, _ in outputs)
    assert said == [
        f"history schema up to date (applied: {[v for v, _, _ in MIGRATIONS]})",
        "history schema up to date (applied: none)",
    ]
    conn = await asyncpg.connect(history_dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        assert Counter(r["version"] for r in rows) == Counter(v for v, _, _ in MIGRATIONS)
    finally:
        await conn.close()
