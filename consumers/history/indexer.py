"""The history indexer: a handler on the engine that writes the attempts and dead-letter
topics into PostgreSQL, once per fleet: attempts (with their roll-ups), the routing decisions
that travel the attempts topic (`switchboard.kind: routing`), and dead letters.

It runs in its own consumer group (`<GROUP_ID>.history`), in a loop of its own, so a store
that is slow or away holds back only the indexer: deliveries go on, the indexer's records
stay in flight (its lag grows, `switchboard_history_indexer_lag_seconds`), backpressure
pauses its partitions, and it catches up when the store is back. A record's token is done
only once the store acknowledged the batch that holds it (its transaction committed), so an
offset is committed only after its rows are stored; rows read again after a crash or a
rebalance are ignored by the store (keyed by attempt id and dead letter id): nothing is lost,
nothing is indexed twice.

Batches: rows gather until `MAX_BATCH_ROWS` or `LINGER_SECONDS` after the first; up to
`IN_FLIGHT` batches are written at once, each on a pool connection of its own, so that the
store inserts one while the next is decoded and the previous commits. They may finish out of
order; each record's token is done with its own batch, and the engine commits an offset only
once every record before it is done. Concurrent batches take their row locks in one order
(service/history/writes.py), so they do not deadlock on shared roll-up rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg
import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Token
from service.attempt_log.record import DECODER
from service.delivery.record import decode
from service.history.chunks import Chunk, S, check, each_row
from service.history.store import MAX_BACKOFF_SECONDS, STORE_ERRORS, HistoryStore
from service.history.writes import (
    DeadLetterRow,
    insert_attempts,
    insert_dead_letters,
    insert_decisions,
)
from service.observability import metrics
from service.routing.decision import DECODER as ROUTING_DECODER
from service.routing.decision import KIND_HEADER, ROUTING_KIND

log = structlog.get_logger("switchboard.history")

# Rows per write: large enough that a statement's round trip is amortized over thousands of
# rows, small enough that one transaction stays well under a second.
MAX_BATCH_ROWS: Final = 5000
# How long the first row of a batch waits for company: the log is a moment behind at most.
LINGER_SECONDS: Final = 0.2
# Batches written at once. Two keep the store busy while this process decodes the next batch
# and the previous one commits (bench/history.py: see docs/performance.md); more mostly
# wait on each other's roll-up rows, and take connections the API's reads need.
IN_FLIGHT: Final = 2
# Keys of the replay markers an older version wrote to the dead-letter topic; the store keeps
# the replay state now.
LEGACY_MARKER_PREFIX: Final = "replayed_"
_ATTEMPTS: Final = metrics.HISTORY_RECORDS_INDEXED.labels("attempt")
_DEAD_LETTERS: Final = metrics.HISTORY_RECORDS_INDEXED.labels("dead_letter")
_DECISIONS: Final = metrics.HISTORY_RECORDS_INDEXED.labels("routing")


@dataclass(slots=True)
class _Batch:
    attempts: list[Chunk] = field(default_factory=list)
    letters: list[DeadLetterRow] = field(default_factory=list)
    decisions: list[Chunk] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    first_at: float = 0.0
    rows: int = 0


class Indexer:
    def __init__(
        self,
        store: HistoryStore,
        *,
        attempts_topic: str,
        dead_letter_topic: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._attempts_topic = attempts_topic
        self._dead_letter_topic = dead_letter_topic
        self._clock = clock
        self._pending = _Batch()
        self._writing: list[_Batch] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # The handler contract

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        batch = self._pending
        if not batch.tokens:
            batch.first_at = self._clock()
        if record.topic == self._dead_letter_topic:
            letter = _dead_letter(record)
            if letter is not None:
                batch.letters.append(letter)
                batch.rows += 1
        elif record.headers and (KIND_HEADER, ROUTING_KIND) in record.headers:
            batch.rows += _add(batch.decisions, record, ROUTING_DECODER, "routing")
        else:
            batch.rows += _add(batch.attempts, record, DECODER, "attempt")
        batch.tokens.append(token)
        if batch.rows >= MAX_BATCH_ROWS:
            self._flush()

    def poll(self) -> None:
        if self._pending.tokens and self._clock() - self._pending.first_at >= LINGER_SECONDS:
            self._flush()

    def held(self, tp: TopicPartition) -> bool:
        return False

    def wake_at(self) -> float | None:
        if self._pending.tokens and len(self._writing) < IN_FLIGHT:
            return self._pending.first_at + LINGER_SECONDS
        return None

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        return None

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        # Write what has gathered now, so that it can finish within the loop's grace.
        self._flush()

    # Metrics

    def lag_seconds(self) -> float:
        tokens = [t for b in (*self._writing, self._pending) for t in b.tokens]
        oldest = min((t.timestamp_ms for t in tokens if t.open), default=None)
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest / 1000)

    # Writing

    def _flush(self) -> None:
        if len(self._writing) >= IN_FLIGHT or not self._pending.tokens:
            return
        batch, self._pending = self._pending, _Batch()
        self._writing.append(batch)
        task = asyncio.create_task(self._write(batch), name="history-index")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: _Batch) -> None:
        backoff = 0.5
        # Older than retention: their day is (or is about to be) dropped.
        keep_from = self._store.history_from()
        oldest = keep_from.timestamp()
        letters = [d for d in batch.letters if d.at >= oldest]
        while True:
            await self._store.ready.wait()
            try:
                added = await self._insert(batch.attempts, letters, batch.decisions, keep_from)
                break
            except asyncpg.DataError as exc:
                # A value the store refuses is not transient: retrying the batch would stall
                # the indexer for good. Each row alone, so that only the refused ones are lost.
                log.error("history_rows_refused", error=repr(exc), rows=batch.rows)  # noqa: TRY400 - the store's answer, not a bug
                added = await self._insert_each(batch.attempts, letters, batch.decisions, keep_from)
                break
            except STORE_ERRORS as exc:
                self._store.failed("index", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception as exc:
                # A bug of ours. Left to end this task, it would stall the indexer silently:
                # the batch stays in `_writing`, its records are never finished, and the
                # history consumer ends up paused for good. Retried like a store error
                # instead, and loudly.
                log.exception("history_index_failed", rows=batch.rows)
                self._store.failed("index", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._store.succeeded()
        _ATTEMPTS.inc(added.attempts)
        _DEAD_LETTERS.inc(len(letters))
        _DECISIONS.inc(added.decisions)
        for token in batch.tokens:
            token.done()
        self._writing.remove(batch)
        if self._pending.rows >= MAX_BATCH_ROWS or (
            self._pending.tokens and self._clock() - self._pending.first_at >= LINGER_SECONDS
        ):
            self._flush()

    async def _insert(
        self,
        attempts: Sequence[Chunk],
        letters: Sequence[DeadLetterRow],
        decisions: Sequence[Chunk],
        keep_from: datetime,
    ) -> _Added:
        partitions = self._store.partitions
        async with self._store.pool.acquire() as conn:
            added = await insert_attempts(conn, partitions, attempts, keep_from)
            await insert_dead_letters(conn, partitions, letters)
            return _Added(added, await insert_decisions(conn, partitions, decisions, keep_from))

    async def _insert_each(
        self,
        attempts: Sequence[Chunk],
        letters: Sequence[DeadLetterRow],
        decisions: Sequence[Chunk],
        keep_from: datetime,
    ) -> _Added:
        """The batch one row at a time, skipping (and counting) the rows the store refuses;
        connection errors are still retried by the caller's loop on the next batch."""
        added = _Added()
        rows: list[tuple[Sequence[Chunk], Sequence[DeadLetterRow], Sequence[Chunk]]] = [
            *(([a], [], []) for c in attempts for a in each_row(c, DECODER)),
            *(([], [d], []) for d in letters),
            *(([], [], [d]) for c in decisions for d in each_row(c, ROUTING_DECODER)),
        ]
        for one in rows:
            try:
                one_added = await self._insert(*one, keep_from)
            except asyncpg.DataError as exc:
                metrics.HISTORY_STORE_ERRORS.labels("index_refused").inc()
                log.error("history_row_refused", error=repr(exc))  # noqa: TRY400 - as above
            else:
                added.attempts += one_added.attempts
                added.decisions += one_added.decisions
        return added

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(slots=True)
class _Added:
    """Rows the store did not have yet."""

    attempts: int = 0
    decisions: int = 0


def _add(
    chunks: list[Chunk], record: ConsumerRecord, decoder: msgspec.json.Decoder[list[S]], kind: str
) -> int:
    """Add the record's chunk; returns its rows (none for a record that is not valid)."""
    try:
        checked = check(record.value or b"", decoder)
    except msgspec.DecodeError as exc:  # ValidationError is one
        metrics.INTERNAL_RECORDS_INVALID.labels("attempts").inc()
        log.warning(f"{kind}_record_skipped", offset=record.offset, reason=str(exc))
        return 0
    if checked.refused:
        metrics.INTERNAL_RECORDS_INVALID.labels("attempts").inc()
        log.warning(f"{kind}_rows_skipped", offset=record.offset, rows=checked.refused,
                    reason="a time out of range")  # fmt: skip
    chunks.append(checked.chunk)
    return checked.chunk.rows


def _dead_letter(record: ConsumerRecord) -> DeadLetterRow | None:
    if (record.key or b"").startswith(LEGACY_MARKER_PREFIX.encode()):
        return None
    dl_id = f"dl_{record.partition}_{record.offset}"
    try:
        delivery = decode(record.value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        metrics.INTERNAL_RECORDS_INVALID.labels("dead_letter").inc()
        log.warning("dead_letter_record_skipped", id=dl_id, reason=str(exc))
        return None
    return DeadLetterRow(
        id=dl_id,
        at=delivery.dead_lettered_at or record.timestamp / 1000,
        subscription_id=delivery.subscription_id,
        tenant_id=delivery.event.tenant_id,
        reason=delivery.reason,
        event_id=delivery.event.id,
        record=bytes(record.value or b""),
    )
