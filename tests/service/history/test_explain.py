"""Every query the API sends is served by an index: EXPLAIN with sequential scans disabled
shows no Seq Scan (with them disabled the planner still picks one if no index can serve)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from service.history import queries
from service.history.partitions import TABLES, Partitions, day_of
from service.history.store import HistoryStore

NOW = datetime.now(UTC)
CURSOR = (NOW, "msg_1.1.1")


@pytest.fixture
async def conn(history_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    store = HistoryStore(history_dsn, retention_days=30)
    await store.connect()
    await store.close()
    c = await asyncpg.connect(history_dsn)
    partitions = Partitions()
    for table in TABLES:
        await partitions.ensure(
            c, table, {day_of((NOW - timedelta(days=d)).timestamp()) for d in range(3)}
        )
    await c.execute("SET enable_seqscan = off")
    yield c
    await c.close()


async def plan(conn: asyncpg.Connection, sql: str, args: list[Any]) -> str:
    rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(r[0] for r in rows)


ATTEMPT_QUERIES = [
    queries.AttemptQuery(
        selector,
        "x",
        tenant_id=tenant,
        outcome=outcome,
        before=before,
        since=NOW - timedelta(days=1),
        event_type="call.ended",
    )
    for selector in queries.SELECTORS
    for tenant in (None, "acme")
    for outcome, before in ((None, None), ("failure", CURSOR))
]


@pytest.mark.parametrize(
    "q", ATTEMPT_QUERIES, ids=lambda q: f"{q.selector}-{q.tenant_id}-{q.outcome}"
)
async def test_attempt_listings_are_index_scans(
    conn: asyncpg.Connection, q: queries.AttemptQuery
) -> None:
    sql, args = q.sql()
    explained = await plan(conn, sql, args)
    assert "Seq Scan" not in explained, explained
    # Each day's partition has the parent's index, named after its columns; the webhook-id's
    # attempts are a range of the primary key.
    index = "_pkey" if q.selector == "webhook_id" else f"_{q.selector}_at_idx"
    assert index in explained, explained


# Each listing, and the index serving it (partition indexes are named after their columns).
DEAD_LETTER_QUERIES = [
    (queries.DeadLetterQuery(), "_dead_lettered_at_id_idx"),
    (queries.DeadLetterQuery(tenant_id="acme", replayed=False), "tenant_id_dead_lettered_at"),
    (
        queries.DeadLetterQuery(subscription_id="sub_a", since=NOW - timedelta(days=1)),
        "subscription_id_dead_lettered_at",
    ),
    (
        queries.DeadLetterQuery(tenant_id="acme", subscription_id="sub_a", after=CURSOR),
        "_dead_lettered_at_id_idx",
    ),
    (queries.DeadLetterQuery(reason="gone", until=NOW), "_dead_lettered_at_id_idx"),
    (queries.DeadLetterQuery(ids=["dl_0_1", "dl_0_2"], tenant_id="acme"), "id = ANY"),
]


@pytest.mark.parametrize(("q", "index"), DEAD_LETTER_QUERIES)
async def test_dead_letter_listings_are_index_scans(
    conn: asyncpg.Connection, q: queries.DeadLetterQuery, index: str
) -> None:
    sql, args = q.sql()
    explained = await plan(conn, sql, args)
    assert "Seq Scan" not in explained, explained
    # The index named, or the condition the index scan is given.
    assert any(index in line for line in explained.splitlines() if "Index" in line), explained


async def test_stats_and_replay_claims_are_index_scans(conn: asyncpg.Connection) -> None:
    """Also shows the test can fail: without its index, a listing is a sequential scan."""
    starts = [NOW - timedelta(days=d) for d in (30, 7, 1)]
    explained = await plan(
        conn, queries.stats_sql(len(starts)), queries.stats_args("sub_a", starts)
    )
    assert "Seq Scan" not in explained, explained
    assert "attempt_hours_" in explained, explained
    explained = await plan(conn, queries.DECISION_SQL, ["evt_1"])
    assert "Seq Scan" not in explained, explained
    assert "event_id = 'evt_1'" in explained, explained
    for sql, args in (
        (queries.CLAIM_SQL, [["dl_0_1"], queries.CLAIM_EXPIRY]),
        (queries.MARK_SQL, [["dl_0_1"]]),
        (queries.RELEASE_SQL, [["dl_0_1"]]),
    ):
        explained = await plan(conn, sql, args)
        assert "Seq Scan" not in explained, explained
    await conn.execute("DROP INDEX attempts_by_call")
    sql, args = queries.AttemptQuery("call_id", "CA123").sql()
    assert "Seq Scan" in await plan(conn, sql, args)
