"""Day partitions of the history tables: created before the rows that need them, dropped
whole once past retention (never a DELETE, so old days cost neither vacuum nor bloat).

Partitions are named `<table>_YYYYMMDD` and cover one UTC day. Creation and dropping take a
transaction-level advisory lock, so replicas doing it at once do not race on the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Final

import structlog

from service.history.conn import Conn

log = structlog.get_logger("switchboard.history")

# The tables partitioned by day and their partition column.
TABLES: Final = (
    "attempts",
    "attempt_minutes",
    "attempt_hours",
    "dead_letters",
    "routing_decisions",
)
# Serializes partition DDL across replicas (any constant distinct from the migration lock).
PARTITION_LOCK: Final = 0x73776265
_SUFFIX: Final = re.compile(r"_(\d{8})$")
DAY: Final = timedelta(days=1)


def day_of(unix: float) -> date:
    return datetime.fromtimestamp(unix, UTC).date()


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def retention_start(now: float, retention_days: int) -> datetime:
    """The oldest instant kept: midnight UTC `retention_days` days before today. The
    answers' `history_from`."""
    return day_start(day_of(now)) - retention_days * DAY


def expired(names: Iterable[str], table: str, keep_from: datetime) -> list[str]:
    """The partitions of `table` whose whole day lies before `keep_from`."""
    out = []
    for name in names:
        if not name.startswith(table + "_"):
            continue
        match = _SUFFIX.search(name)
        if match is None or name != f"{table}_{match.group(1)}":
            continue
        day = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
        if day + DAY <= keep_from:
            out.append(name)
    return sorted(out)


class Partitions:
    """The days known to exist, so a batch costs a lookup in a set, not a catalog query."""

    def __init__(self) -> None:
        self._known: set[tuple[str, date]] = set()

    async def ensure(self, conn: Conn, table: str, days: Iterable[date]) -> None:
        missing = sorted({d for d in days if (table, d) not in self._known})
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for day in missing:
                start = day_start(day)
                await conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{partition_name(table, day)}" PARTITION OF '
                    f"{table} FOR VALUES FROM ('{start.isoformat()}') "
                    f"TO ('{(start + DAY).isoformat()}')"
                )
        self._known.update((table, d) for d in missing)

    async def drop_expired(self, conn: Conn, keep_from: datetime) -> list[str]:
        """Drop every partition wholly before `keep_from`; returns their names."""
        dropped: list[str] = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for table in TABLES:
                rows = await conn.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 "
                    "AND p.relnamespace = current_schema()::regnamespace",
                    table,
                )
                for name in expired((r["relname"] for r in rows), table, keep_from):
                    await conn.execute(f'DROP TABLE "{name}"')
                    dropped.append(name)
        self._known = {(t, d) for t, d in self._known if day_start(d) + DAY > keep_from}
        if dropped:
            log.info("history_partitions_dropped", partitions=dropped)
        return dropped
