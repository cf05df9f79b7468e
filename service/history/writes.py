"""Batched, idempotent writes of the indexer: attempts with their roll-ups, dead letters.

One statement per table per batch (`INSERT ... SELECT FROM unnest(...)`), keyed by the
attempt id or the dead letter id with `ON CONFLICT DO NOTHING`: a batch read again after a
crash or a rebalance changes nothing. The roll-ups (per minute and per hour) count only the
rows the insert actually added (its RETURNING), in the same transaction, so they never count
an attempt twice.

Batches may be written concurrently (the indexer keeps more than one in flight). Every writer
takes its row locks in one order, attempts by id, then minutes, then hours, each by key, so two
batches that share rows (a rebalance's overlap) or roll-up keys wait for each other and never
deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import msgspec

from service.attempt_log.record import AttemptRecord
from service.history.conn import Conn
from service.history.partitions import Partitions, day_of
from service.history.rollup import BUCKETS, bucket, hour_of, minute_of
from service.routing.decision import RoutingDecision

# The rows go as one array of a composite type (migration 5, service/history/migrations.py),
# not as an array per column: asyncpg checks every element of an array parameter against three
# abstract base classes in Python, which for 22 columns was about a third of the indexer's
# CPU (docs/performance.md); a row of a composite array costs four such checks, its fields none.
_INSERT_ATTEMPTS: Final = """
INSERT INTO attempts (at, id, subscription_id, tenant_id, event_id, event_type, webhook_id,
    attempt, trigger, method, url, outcome, status, latency_ms, error, response_excerpt,
    call_id, conversation_id, contact_id, campaign_id, agent_id, replay_of)
SELECT * FROM unnest($1::attempt_row[])
ON CONFLICT DO NOTHING
RETURNING id
"""


def _upsert_rollup(table: str, column: str) -> str:
    # Table and column names are the two roll-up tables'; every value is a parameter.
    return f"""
INSERT INTO {table} AS m (subscription_id, {column}, attempts, succeeded, buckets)
SELECT s, t, a, ok, string_to_array(b, ',')::int[]
FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[], $5::text[]) AS r(s, t, a, ok, b)
ON CONFLICT (subscription_id, {column}) DO UPDATE SET
    attempts = m.attempts + EXCLUDED.attempts,
    succeeded = m.succeeded + EXCLUDED.succeeded,
    buckets = ARRAY(SELECT x + y FROM unnest(m.buckets, EXCLUDED.buckets) AS u(x, y))
"""  # noqa: S608


_UPSERT_MINUTES: Final = _upsert_rollup("attempt_minutes", "minute")
_UPSERT_HOURS: Final = _upsert_rollup("attempt_hours", "hour")
_DECISION: Final = msgspec.json.Encoder()
_INSERT_DECISIONS: Final = """
INSERT INTO routing_decisions (at, event_id, tenant_id, decision)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bytea[])
ON CONFLICT DO NOTHING
"""
_INSERT_DEAD_LETTERS: Final = """
INSERT INTO dead_letters (dead_lettered_at, id, subscription_id, tenant_id, reason, event_id,
    record)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
    $6::text[], $7::bytea[])
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    at: float
    subscription_id: str
    tenant_id: str
    reason: str | None
    event_id: str
    record: bytes


def text(value: str | None) -> str | None:
    """`value` as PostgreSQL text takes it: without NUL characters, which a response excerpt
    or an event's field may hold and which text columns refuse."""
    return value.replace("\x00", "") if value and "\x00" in value else value


def utc(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


async def insert_attempts(
    conn: Conn, partitions: Partitions, records: Sequence[AttemptRecord]
) -> int:
    """Insert the attempts not stored yet and roll them up; returns how many were new."""
    if not records:
        return 0
    days = {day_of(r.at) for r in records}
    for table in ("attempts", "attempt_minutes", "attempt_hours"):
        await partitions.ensure(conn, table, days)
    ordered = sorted(records, key=_by_id)
    stamps = [utc(r.at) for r in ordered]
    # In the order of attempt_row's fields.
    rows = [
        (at, r.id, r.subscription_id, r.tenant_id, r.event_id, text(r.event_type), r.webhook_id,
         r.attempt, r.trigger, r.method, text(r.url), r.outcome, r.status, r.latency_ms,
         text(r.error), text(r.response_excerpt), text(r.call_id), text(r.conversation_id),
         text(r.contact_id), text(r.campaign_id), text(r.agent_id), r.replay_of)
        for r, at in zip(ordered, stamps, strict=True)
    ]  # fmt: skip
    async with conn.transaction():
        added = {row[0] for row in await conn.fetch(_INSERT_ATTEMPTS, rows)}
        count = len(added)
        minutes: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0] * (BUCKETS + 1))
        # The time as stored (microseconds, as utc() rounds it), so that a roll-up's minute is
        # the one its row is in; an id twice in the batch was added once and counts once.
        for r, at in zip(ordered, stamps, strict=True):
            if r.id not in added:
                continue
            added.discard(r.id)
            if r.trigger == "test":  # a customer trying things out, not the endpoint
                continue
            counts = minutes[(r.subscription_id, minute_of(at.timestamp()))]
            counts[0] += r.outcome == "success"
            counts[1 + bucket(r.latency_ms)] += 1
        hours: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0] * (BUCKETS + 1))
        for (sub, minute), counts in minutes.items():
            into = hours[(sub, hour_of(minute))]
            for i, n in enumerate(counts):
                into[i] += n
        for sql, rollup in ((_UPSERT_MINUTES, minutes), (_UPSERT_HOURS, hours)):
            if rollup:
                await _upsert(conn, sql, rollup)
    return count


def _by_id(record: AttemptRecord) -> str:
    return record.id


async def _upsert(conn: Conn, sql: str, rollup: dict[tuple[str, float], list[int]]) -> None:
    """Add `rollup` (per key: succeeded, then the bucket counts) to its table's rows."""
    keys = sorted(rollup)  # one order for every writer: no deadlock between batches
    await conn.execute(
        sql,
        [k[0] for k in keys],
        [utc(k[1]) for k in keys],
        [sum(rollup[k][1:]) for k in keys],
        [rollup[k][0] for k in keys],
        [",".join(map(str, rollup[k][1:])) for k in keys],
    )


async def insert_dead_letters(
    conn: Conn, partitions: Partitions, letters: Sequence[DeadLetterRow]
) -> None:
    if not letters:
        return
    await partitions.ensure(conn, "dead_letters", {day_of(d.at) for d in letters})
    await conn.execute(
        _INSERT_DEAD_LETTERS,
        [utc(d.at) for d in letters],
        [d.id for d in letters],
        [d.subscription_id for d in letters],
        [d.tenant_id for d in letters],
        [d.reason for d in letters],
        [d.event_id for d in letters],
        [d.record for d in letters],
    )


async def insert_decisions(
    conn: Conn, partitions: Partitions, decisions: Sequence[RoutingDecision]
) -> None:
    """Routing decisions, keyed by event and time: a decision read again is stored once."""
    if not decisions:
        return
    await partitions.ensure(conn, "routing_decisions", {day_of(d.at) for d in decisions})
    await conn.execute(
        _INSERT_DECISIONS,
        [utc(d.at) for d in decisions],
        [text(d.event_id) for d in decisions],
        [text(d.tenant_id) for d in decisions],
        [_DECISION.encode(d) for d in decisions],
    )
