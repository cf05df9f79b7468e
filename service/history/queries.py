"""The history's reads: every one a range of an index (tests/service/history/test_explain.py
runs EXPLAIN on each with sequential scans disabled).

Listings page by keyset: the last row's (time, id) is the cursor, so a page costs the same at
any depth. A cursor is `<microseconds since the epoch>:<id>`, exact for PostgreSQL's
microsecond timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from service.attempt_log.record import CORRELATION_KEYS
from service.history.conn import Queryable
from service.history.rollup import BUCKETS, next_hour

# The columns an attempts listing may be selected by; each leads an index (the webhook-id: the
# primary key, see AttemptQuery.sql).
SELECTORS: Final = ("subscription_id", "event_id", "webhook_id", *CORRELATION_KEYS)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
# A replay claimed but neither finished nor released (its replica died) may be claimed again
# after this: longer than a replay request may take (REPLAY_TIMEOUT_SECONDS), with margin.
CLAIM_EXPIRY: Final = timedelta(minutes=5)

Cursor = tuple[datetime, str]


def clean(value: Any) -> Any:
    """A value from a request as PostgreSQL takes it: text without NUL characters (which it
    refuses, and which the indexer drops from what it stores) and encodable as UTF-8 (a lone
    surrogate from a JSON body is replaced); lists of them likewise."""
    if isinstance(value, list):
        return [clean(v) for v in value]
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value


def cursor_of(at: datetime, row_id: str) -> str:
    return f"{(at - EPOCH) // _US}:{row_id}"


def parse_cursor(text: str) -> Cursor | None:
    micros, sep, row_id = text.partition(":")
    if not sep or not micros.isdigit() or not row_id:
        return None
    return EPOCH + int(micros) * _US, row_id


@dataclass(slots=True)
class AttemptQuery:
    selector: str  # one of SELECTORS
    value: str
    tenant_id: str | None = None
    event_type: str | None = None
    outcome: str | None = None  # an outcome class, or "failure" for anything but success
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: Cursor | None = None
    limit: int = 100

    def sql(self) -> tuple[str, list[Any]]:
        if self.selector not in SELECTORS:
            raise ValueError(self.selector)
        args: list[Any] = [self.value]
        where = [f"{self.selector} = $1"]
        if self.selector == "webhook_id":
            # An attempt's id starts with its webhook-id and a dot (attempt_record), and ids
            # compare byte by byte: the webhook's attempts are a range of the primary key.
            where += ["id >= $1 || '.'", "id < $1 || '/'"]

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.replace("?", f"${len(args)}"))

        if self.tenant_id is not None:
            add("tenant_id = ?", self.tenant_id)
        if self.event_type is not None:
            add("event_type = ?", self.event_type)
        if self.outcome == "failure":
            where.append("outcome <> 'success'")
        elif self.outcome is not None:
            add("outcome = ?", self.outcome)
        if self.trigger is not None:
            add("trigger = ?", self.trigger)
        if self.since is not None:
            add("at >= ?", self.since)
        if self.until is not None:
            add("at < ?", self.until)
        if self.before is not None:
            args.extend(self.before)
            # The plain bound on `at` is what the index range starts from (the indexes end
            # with `at`, not `at, id`); the row comparison breaks ties at that instant.
            where.append(f"at <= ${len(args) - 1}")
            where.append(f"(at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(self.limit + 1)
        # Column names come from SELECTORS and fixed clauses; every value is a parameter.
        sql = (
            f"SELECT * FROM attempts WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY at DESC, id DESC LIMIT ${len(args)}"
        )
        return sql, [clean(a) for a in args]


async def attempts(conn: Queryable, q: AttemptQuery
                   ) -> Sequence[asyncpg.Record]:  # fmt: skip
    sql, args = q.sql()
    return await conn.fetch(sql, *args)


@dataclass(slots=True)
class DeadLetterQuery:
    tenant_id: str | None = None
    subscription_id: str | None = None
    reason: str | None = None
    replayed: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: Cursor | None = None
    ids: list[str] | None = None
    limit: int = 100

    def sql(self) -> tuple[str, list[Any]]:
        args: list[Any] = []
        where = ["true"]

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.replace("?", f"${len(args)}"))

        if self.ids is not None:
            add("id = ANY(?::text[])", self.ids)
        if self.tenant_id is not None:
            add("tenant_id = ?", self.tenant_id)
        if self.subscription_id is not None:
            add("subscription_id = ?", self.subscription_id)
        if self.reason is not None:
            add("reason = ?", self.reason)
        if self.replayed is not None:
            where.append(f"replayed_at IS {'NOT ' if self.replayed else ''}NULL")
        if self.since is not None:
            add("dead_lettered_at >= ?", self.since)
        if self.until is not None:
            add("dead_lettered_at < ?", self.until)
        if self.after is not None:
            args.extend(self.after)
            where.append(f"(dead_lettered_at, id) > (${len(args) - 1}, ${len(args)})")
        args.append(self.limit + 1)
        # Fixed clauses; every value is a parameter.
        sql = (
            "SELECT id, dead_lettered_at, record, replayed_at FROM dead_letters "  # noqa: S608
            f"WHERE {' AND '.join(where)} ORDER BY dead_lettered_at, id LIMIT ${len(args)}"
        )
        return sql, [clean(a) for a in args]


async def dead_letters(conn: Queryable, q: DeadLetterQuery
                       ) -> Sequence[asyncpg.Record]:  # fmt: skip
    sql, args = q.sql()
    return await conn.fetch(sql, *args)


CLAIM_SQL: Final = """
UPDATE dead_letters SET replay_claimed_at = now()
WHERE id = ANY($1::text[]) AND replayed_at IS NULL
  AND (replay_claimed_at IS NULL OR replay_claimed_at < now() - $2::interval)
RETURNING id
"""
MARK_SQL: Final = "UPDATE dead_letters SET replayed_at = now() WHERE id = ANY($1::text[]) " \
    "RETURNING id, replayed_at"  # fmt: skip
RELEASE_SQL: Final = "UPDATE dead_letters SET replay_claimed_at = NULL " \
    "WHERE id = ANY($1::text[]) AND replayed_at IS NULL"  # fmt: skip


def stats_sql(windows: int) -> str:
    """Succeeded and latency bucket counts of one subscription per window. Parameters: `$1` the
    subscription, then each window's start (a whole minute), then each one's first whole hour
    at or after its start (stats_args). A window sums its minutes before that hour and the
    hours from it on, so a month reads at most 59 + 721 rows; each part is a range of a
    primary key. Row 1 of the answer is the succeeded count, rows 2.. the buckets (their sum
    is the attempts)."""
    n = windows
    # Built from the number of windows only; every value is a parameter.
    # Part i is window i's minutes before its first hour; part 0 is the hours of all windows.
    parts = " UNION ALL ".join(
        f"SELECT {i + 1} AS part, minute AS t, succeeded, buckets FROM attempt_minutes "  # noqa: S608
        f"WHERE subscription_id = $1 AND minute >= ${i + 2} AND minute < ${n + i + 2}"
        for i in range(n)
    )
    sums = ", ".join(
        f"coalesce(sum(u.n) FILTER (WHERE r.part = {i + 1} "
        f"OR (r.part = 0 AND r.t >= ${n + i + 2})), 0)::bigint"
        for i in range(n)
    )
    first_hour = "LEAST(" + ", ".join(f"${n + i + 2}" for i in range(n)) + ")"
    return (
        f"SELECT u.i, {sums} FROM ({parts} UNION ALL SELECT 0, hour, succeeded, buckets "  # noqa: S608
        f"FROM attempt_hours WHERE subscription_id = $1 AND hour >= {first_hour}) r, "
        "unnest(array_prepend(r.succeeded, r.buckets)) WITH ORDINALITY AS u(n, i) "
        "GROUP BY u.i ORDER BY u.i"
    )


def stats_args(sub_id: str, starts: Sequence[datetime]) -> list[Any]:
    hours = [datetime.fromtimestamp(next_hour(s.timestamp()), UTC) for s in starts]
    return [clean(sub_id), *starts, *hours]


@dataclass(frozen=True, slots=True)
class WindowCounts:
    attempts: int
    succeeded: int
    buckets: tuple[int, ...]


async def stats(conn: Queryable, sub_id: str, starts: Sequence[datetime]) -> list[WindowCounts]:
    """Per window start, the roll-ups' sums."""
    rows = await conn.fetch(stats_sql(len(starts)), *stats_args(sub_id, starts))
    out = []
    for w in range(len(starts)):
        sums = [0] * (BUCKETS + 1)
        for row in rows:
            sums[row["i"] - 1] = row[w + 1]
        out.append(WindowCounts(sum(sums[1:]), sums[0], tuple(sums[1:])))
    return out


# The newest decision of an event (a redelivered event is routed again): the primary key.
DECISION_SQL: Final = (
    "SELECT tenant_id, decision FROM routing_decisions WHERE event_id = $1 ORDER BY at DESC LIMIT 1"
)
