"""The history store: an asyncpg pool, the schema kept migrated, retention applied.

`run()` connects (retrying while PostgreSQL is away: deliveries never wait for it), applies
the migrations, then drops expired day partitions once an hour. `ready` is set once the
schema is in place; the indexer and the API use the pool only after that, and report
`problem` meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Final

import asyncpg
import structlog

from service.history.migrations import migrate
from service.history.partitions import Partitions, retention_start
from service.observability import metrics

log = structlog.get_logger("switchboard.history")

# What a failing store raises: its own errors, a connection lost or refused, a timeout, and
# the client's own errors on a connection cut mid-message (ProtocolError and the other
# InternalClientErrors, which are neither of asyncpg's two main classes).
STORE_ERRORS: Final = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
    OSError, TimeoutError,
)  # fmt: skip
# Retention runs this often; a day partition expires once a day, an hour late at worst.
RETENTION_INTERVAL_SECONDS: Final = 3600.0
# Reconnect backoff cap: a store away for long costs one attempt per half minute.
MAX_BACKOFF_SECONDS: Final = 30.0
# Connections per replica: the indexer's writes (IN_FLIGHT batches at once) and the API's reads.
POOL_MAX_SIZE: Final = 10
# All of them opened at start and kept (a fixed-size pool): a pool that grows on demand opens
# its connections in the middle of a burst, when they cost the most, and the replica's open
# descriptors step up with each one (the soak, docs/reliability.md).
POOL_MIN_SIZE: Final = POOL_MAX_SIZE
# A query the API waits for longer than this answers 503, not a hung request.
COMMAND_TIMEOUT_SECONDS: Final = 10.0


class HistoryStore:
    def __init__(self, dsn: str, retention_days: int) -> None:
        self._dsn = dsn
        self.retention_days = retention_days
        self.partitions = Partitions()
        self.ready = asyncio.Event()
        self.problem: str | None = "history store not connected yet"
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None or not self.ready.is_set():
            raise asyncpg.InterfaceError("the history store is not ready")
        return self._pool

    def history_from(self, now: float | None = None) -> datetime:
        return retention_start(time.time() if now is None else now, self.retention_days)

    def failed(self, operation: str, exc: BaseException) -> None:
        """Count and report a failed operation; the next success clears the problem."""
        metrics.HISTORY_STORE_ERRORS.labels(operation).inc()
        self.problem = f"history store unavailable: {type(exc).__name__}"
        log.warning("history_store_error", operation=operation, error=repr(exc))

    def succeeded(self) -> None:
        self.problem = None

    async def connect(self) -> None:
        """Open the pool and migrate; raises what the store raised."""
        pool = await asyncpg.create_pool(
            self._dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
        )  # fmt: skip
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self.ready.set()
        self.problem = None

    async def run(self) -> None:
        backoff = 0.5
        while not self.ready.is_set():
            try:
                await self.connect()
            except STORE_ERRORS as exc:
                self.failed("connect", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        while True:
            await self.apply_retention()
            await asyncio.sleep(RETENTION_INTERVAL_SECONDS)

    async def apply_retention(self, now: float | None = None) -> list[str]:
        try:
            async with self.pool.acquire() as conn:
                return await self.partitions.drop_expired(conn, self.history_from(now))
        except STORE_ERRORS as exc:
            self.failed("retention", exc)
            return []

    async def close(self) -> None:
        if self._pool is not None:
            self.ready.clear()
            await self._pool.close()
            self._pool = None
