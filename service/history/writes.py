"""Batched, idempotent writes of the indexer: attempts with their roll-ups, routing decisions,
dead letters.

Attempts and routing decisions reach PostgreSQL as the attempts topic holds them: each record's
JSON array (service/history/chunks.py), unpacked by the statement that stores it. One statement
per batch inserts the attempts not stored yet (keyed by id, `ON CONFLICT DO NOTHING`) and adds
the ones it inserted to the per-minute and per-hour roll-ups, so a batch read again after a
crash or a rebalance changes nothing and no attempt is counted twice.

Why the database unpacks them: binding 22 columns a row in this process, the delivery path's
core, cost it 7-8% of the CPU it spends on an event; with JSON handed over, the database spends
a quarter more on the same rows and the two together less than before (docs/performance.md,
"The indexer hands over JSON").

Batches may be written concurrently (the indexer keeps more than one in flight). Every writer
takes its row locks in one order, attempts by id, then minutes, then hours, each by key, so two
batches that share rows (a rebalance's overlap) or roll-up keys wait for each other and never
deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from service.history.chunks import Chunk
from service.history.conn import Conn
from service.history.partitions import Partitions, day_of
from service.history.rollup import BOUNDS_MS

# The columns of an attempt as the attempts topic spells them (AttemptRecord, whose field names
# are the table's), `at` in unix seconds.
_ATTEMPT_FIELDS: Final = """
    at double precision, id text, subscription_id text, tenant_id text, event_id text,
    event_type text, webhook_id text, attempt integer, trigger text, method text, url text,
    outcome text, status integer, latency_ms double precision, error text,
    response_excerpt text, call_id text, conversation_id text, contact_id text,
    campaign_id text, agent_id text, replay_of text"""


def _timestamp(unix: str) -> str:
    """The SQL of a unix time as a timestamptz rounded exactly as Python's
    datetime.fromtimestamp rounds it (to the microsecond, halves to even). `to_timestamp`
    rounds after a subtraction in floating point and lands a microsecond off for about 6% of
    times; a row indexed by an earlier version, read again, would then be stored twice."""
    return (
        f"(to_timestamp(trunc({unix})) "
        f"+ round(({unix} - trunc({unix})) * 1e6) * interval '1 microsecond')"
    )


def _buckets() -> str:
    """Counts of the latency buckets (rollup.BOUNDS_MS, then +Inf; a bound is inclusive)."""
    counts, low = [], None
    for bound in BOUNDS_MS:
        above = "" if low is None else f" AND latency_ms > {low}"
        counts.append(f"count(*) FILTER (WHERE latency_ms <= {bound}{above})")
        low = bound
    counts.append(f"count(*) FILTER (WHERE latency_ms > {low})")
    return f"ARRAY[{', '.join(counts)}]::int[]"


def _roll_up(table: str, column: str) -> str:
    # Table and column names are the two roll-up tables'; the bounds are constants.
    return f"""
INSERT INTO {table} AS t (subscription_id, {column}, attempts, succeeded, buckets)
SELECT subscription_id, date_trunc('{column}', at, 'UTC'), count(*),
    count(*) FILTER (WHERE outcome = 'success'), {_buckets()}
FROM added WHERE trigger <> 'test'  -- a customer trying things out, not the endpoint
GROUP BY 1, 2 ORDER BY 1, 2  -- one order for every writer: no deadlock between batches
ON CONFLICT (subscription_id, {column}) DO UPDATE SET
    attempts = t.attempts + EXCLUDED.attempts,
    succeeded = t.succeeded + EXCLUDED.succeeded,
    buckets = ARRAY(SELECT x + y FROM unnest(t.buckets, EXCLUDED.buckets) AS u(x, y))"""  # noqa: S608


# $1: the chunks' JSON arrays; $2: the oldest time kept (unix seconds), older rows are skipped.
# Rows come out of `added` only if this statement inserted them, so the roll-ups count each
# attempt once; an id twice in the batch is inserted once.
_INSERT_ATTEMPTS: Final = f"""
WITH added AS (
    INSERT INTO attempts (at, id, subscription_id, tenant_id, event_id, event_type, webhook_id,
        attempt, trigger, method, url, outcome, status, latency_ms, error, response_excerpt,
        call_id, conversation_id, contact_id, campaign_id, agent_id, replay_of)
    SELECT {_timestamp("r.at")}, r.id, r.subscription_id, r.tenant_id, r.event_id,
        r.event_type, r.webhook_id, r.attempt, r.trigger, r.method, r.url, r.outcome, r.status,
        r.latency_ms, r.error, coalesce(r.response_excerpt, ''), r.call_id, r.conversation_id,
        r.contact_id, r.campaign_id, r.agent_id, r.replay_of
    FROM unnest($1::bytea[]) AS v(chunk),
        json_to_recordset(convert_from(v.chunk, 'UTF8')::json) AS r({_ATTEMPT_FIELDS})
    WHERE r.at >= $2
    ORDER BY r.id
    ON CONFLICT DO NOTHING
    RETURNING subscription_id, at, outcome, latency_ms, trigger
),
minutes AS ({_roll_up("attempt_minutes", "minute")}),
hours AS ({_roll_up("attempt_hours", "hour")})
SELECT count(*) FROM added
"""  # noqa: S608 - built from constants only; every value is a parameter
# A decision is stored as its own JSON (a json element's text is its source text); its keys are
# read by one parse of the element (json_to_record), where each `->>` would parse it again.
_INSERT_DECISIONS: Final = f"""
INSERT INTO routing_decisions (at, event_id, tenant_id, decision)
SELECT {_timestamp("r.at")}, r.event_id, r.tenant_id, convert_to(d::text, 'UTF8')
FROM unnest($1::bytea[]) AS v(chunk),
    json_array_elements(convert_from(v.chunk, 'UTF8')::json) AS d,
    json_to_record(d) AS r(at double precision, event_id text, tenant_id text)
WHERE r.at >= $2
ON CONFLICT DO NOTHING
"""  # noqa: S608 - as above
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


def utc(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


async def insert_attempts(
    conn: Conn, partitions: Partitions, chunks: Sequence[Chunk], keep_from: datetime
) -> int:
    """Insert the attempts not stored yet, from `keep_from` on, and roll them up; returns how
    many were new."""
    days = _days(chunks, keep_from)
    if not days:
        return 0
    for table in ("attempts", "attempt_minutes", "attempt_hours"):
        await partitions.ensure(conn, table, days)
    added: int = await conn.fetchval(
        _INSERT_ATTEMPTS, [c.value for c in chunks], keep_from.timestamp()
    )
    return added


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
    conn: Conn, partitions: Partitions, chunks: Sequence[Chunk], keep_from: datetime
) -> int:
    """Routing decisions from `keep_from` on, keyed by event and time: a decision read again
    is stored once. Returns how many were new."""
    days = _days(chunks, keep_from)
    if not days:
        return 0
    await partitions.ensure(conn, "routing_decisions", days)
    status = await conn.execute(_INSERT_DECISIONS, [c.value for c in chunks], keep_from.timestamp())
    return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"


def _days(chunks: Sequence[Chunk], keep_from: datetime) -> set[date]:
    """The days the chunks' kept rows fall on."""
    first = keep_from.date()
    return {d for c in chunks for d in c.days if d >= first}
