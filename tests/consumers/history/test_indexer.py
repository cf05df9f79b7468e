"""The indexer handler against a real PostgreSQL, without a broker: a record is finished only
once the store acknowledged the batch holding it, and records read again change nothing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
from aiokafka import ConsumerRecord

from consumers.engine.local import LocalBroker
from consumers.history.indexer import IN_FLIGHT, MAX_BATCH_ROWS, Indexer
from service.attempt_log.record import ENCODER, AttemptRecord
from service.history.store import HistoryStore
from service.observability import metrics
from service.routing.decision import ENCODER as ROUTING_ENCODER
from service.routing.decision import KIND_HEADER, ROUTING_KIND, RoutingDecision
from tests.consumers.handler_helpers import Tokens
from tools.receiver import wait_until

ATTEMPTS, DLQ = "switchboard.attempts", "switchboard.dlq"


def attempt(i: int, at: float) -> AttemptRecord:
    return AttemptRecord(
        id=f"msg_{i}.1.{int(at * 1000)}", at=at, subscription_id="sub_a", tenant_id="acme",
        event_id=f"evt_{i}", event_type="call.ended", webhook_id=f"msg_{i}", attempt=1,
        trigger="delivery", method="POST", url="https://x.example/h", outcome="success",
        status=200, latency_ms=10.0, call_id="call_1",
    )  # fmt: skip


@pytest.fixture
async def store(history_dsn: str) -> AsyncIterator[HistoryStore]:
    s = HistoryStore(history_dsn, retention_days=30)
    yield s
    await s.close()


def append_decisions(broker: LocalBroker, decisions: list[RoutingDecision]) -> None:
    broker.append(ATTEMPTS, ROUTING_ENCODER.encode(decisions),
                  headers=[(KIND_HEADER, ROUTING_KIND)])  # fmt: skip


def index_all(
    store: HistoryStore, broker: LocalBroker
) -> tuple[Indexer, Tokens, list[ConsumerRecord[bytes, bytes]]]:
    """An indexer given every record of the attempts topic, then told to write what gathered
    (as on a revoke)."""
    indexer = Indexer(store, attempts_topic=ATTEMPTS, dead_letter_topic=DLQ)
    tokens = Tokens()
    records = broker.records(ATTEMPTS)
    for record in records:
        indexer.submit(record, tokens.token(ATTEMPTS, 0, record.offset))
    indexer.revoked([])
    return indexer, tokens, records


async def rows(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(sql)
        return count
    finally:
        await conn.close()


async def test_tokens_are_done_only_after_the_store_has_the_rows(
    store: HistoryStore, history_dsn: str
) -> None:
    broker = LocalBroker()
    broker.create_topic(ATTEMPTS)
    now = time.time()
    for r in range(3):
        broker.append(ATTEMPTS, ENCODER.encode([attempt(10 * r + i, now) for i in range(10)]))
    decision = RoutingDecision(event_id="evt_0", tenant_id="acme", event_type="call.ended",
                               at=now, outcome="no_subscription")  # fmt: skip
    append_decisions(broker, [decision])
    indexer, tokens, records = index_all(store, broker)
    # The store is not connected yet: nothing is finished, however long it takes.
    await asyncio.sleep(0.5)
    assert tokens.done == []
    assert indexer.lag_seconds() > 0
    await store.connect()
    for _ in range(100):
        if tokens.done:
            break
        await asyncio.sleep(0.05)
    assert tokens.done == [0, 1, 2, 3]
    assert await rows(history_dsn, "SELECT count(*) FROM attempts") == 30
    assert await rows(history_dsn, "SELECT count(*) FROM routing_decisions") == 1
    assert indexer.lag_seconds() == 0
    # The same records read again (a rebalance, a restart): stored and counted once.
    again = Tokens()
    for record in records:
        indexer.submit(record, again.token(ATTEMPTS, 0, record.offset))
    indexer.revoked([])
    for _ in range(100):
        if again.done:
            break
        await asyncio.sleep(0.05)
    assert again.done == [0, 1, 2, 3]
    assert await rows(history_dsn, "SELECT count(*) FROM attempts") == 30
    assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_minutes") == 30
    assert await rows(history_dsn, "SELECT count(*) FROM routing_decisions") == 1
    await indexer.close()


async def test_batches_in_flight_together_store_every_attempt_once(
    store: HistoryStore, history_dsn: str
) -> None:
    """More rows than a batch holds: the first batch is handed out when full, the rest when
    revoked, both written at once (IN_FLIGHT) sharing roll-up rows (one subscription, one
    minute); every token is done, every attempt stored and rolled up once."""
    assert IN_FLIGHT >= 2
    broker = LocalBroker()
    broker.create_topic(ATTEMPTS)
    now = time.time()
    per_record = 100
    count = MAX_BATCH_ROWS + 10 * per_record
    for r in range(count // per_record):
        batch = [attempt(per_record * r + i, now) for i in range(per_record)]
        broker.append(ATTEMPTS, ENCODER.encode(batch))
    await store.connect()
    indexer, tokens, records = index_all(store, broker)
    for _ in range(400):
        if len(tokens.done) == len(records):
            break
        await asyncio.sleep(0.05)
    assert sorted(tokens.done) == [r.offset for r in records]
    assert await rows(history_dsn, "SELECT count(*) FROM attempts") == count
    assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_minutes") == count
    assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_hours") == count
    await indexer.close()


class _FlakyStore(HistoryStore):
    """A real store whose connection fails once the way a cut connection can fail: with a
    client-side asyncpg error (a protocol message cut in the middle), not a server error."""

    def __init__(self, dsn: str, error: BaseException) -> None:
        super().__init__(dsn, retention_days=30)
        self.error: BaseException | None = error

    @property
    def pool(self) -> asyncpg.Pool:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return super().pool


@pytest.mark.parametrize(
    "error",
    [asyncpg.exceptions.ProtocolError("unexpected message"), RuntimeError("a bug of ours")],
    ids=["client-error", "bug"],
)
async def test_a_failed_write_is_retried_never_left_to_stall_the_indexer(
    history_dsn: str, error: BaseException
) -> None:
    store = _FlakyStore(history_dsn, error)
    await store.connect()
    broker = LocalBroker()
    broker.create_topic(ATTEMPTS)
    broker.append(ATTEMPTS, ENCODER.encode([attempt(i, time.time()) for i in range(5)]))
    indexer, tokens, _ = index_all(store, broker)
    assert await wait_until(lambda: bool(tokens.done), 5)
    assert tokens.done == [0]
    assert await rows(history_dsn, "SELECT count(*) FROM attempts") == 5
    await indexer.close()
    await store.close()


async def test_rows_the_store_or_the_check_refuse_are_the_only_ones_lost(
    store: HistoryStore, history_dsn: str
) -> None:
    """A value PostgreSQL refuses (an attempt number beyond its integer) fails its batch; the
    batch is written again row by row, and only that row is lost. A time no timestamp holds is
    left out before the store sees it. A decision in the same batch is stored either way."""
    await store.connect()
    broker = LocalBroker()
    broker.create_topic(ATTEMPTS)
    now = time.time()
    good = [attempt(i, now) for i in range(4)]
    huge = msgspec.structs.replace(attempt(4, now), attempt=2**40)
    timeless = msgspec.structs.replace(attempt(5, now), at=1e12)
    broker.append(ATTEMPTS, ENCODER.encode([good[0], huge, good[1]]))
    broker.append(ATTEMPTS, ENCODER.encode([good[2], timeless, good[3]]))
    decision = RoutingDecision(event_id="evt_0", tenant_id="acme", at=now, outcome="matched",
                               matched=("sub_a",))  # fmt: skip
    append_decisions(broker, [decision])
    refused = metrics.HISTORY_STORE_ERRORS.labels("index_refused")
    invalid = metrics.INTERNAL_RECORDS_INVALID.labels("attempts")
    refused_before, invalid_before = refused._value.get(), invalid._value.get()
    indexer, tokens, _ = index_all(store, broker)
    assert await wait_until(lambda: len(tokens.done) == 3, 10)
    stored = await rows(history_dsn, "SELECT count(*) FROM attempts")
    assert stored == 4
    assert await rows(history_dsn, "SELECT sum(attempts) FROM attempt_minutes") == 4
    assert await rows(history_dsn, "SELECT count(*) FROM routing_decisions") == 1
    assert refused._value.get() - refused_before == 1
    assert invalid._value.get() - invalid_before == 1
    await indexer.close()


async def test_times_are_stored_to_the_microsecond_python_rounds_them_to(
    store: HistoryStore, history_dsn: str
) -> None:
    """The store turns unix seconds into timestamps itself; it must land on the instant Python
    gives, or an attempt indexed by an earlier version and read again would be stored twice
    (its key is the id and the time). Random times and ones exactly half a microsecond off."""
    await store.connect()
    rng = random.Random(3)
    now = time.time()
    ats = [now - rng.uniform(0, 86_400) for _ in range(2000)]
    second = float(int(now) - 3600)
    ats += [second + 0.000_000_5, second + 0.000_001_5, second + 0.999_999_5]
    broker = LocalBroker()
    broker.create_topic(ATTEMPTS)
    for start in range(0, len(ats), 100):
        batch = [attempt(i, at) for i, at in enumerate(ats[start : start + 100], start)]
        broker.append(ATTEMPTS, ENCODER.encode(batch))
        decisions = [RoutingDecision(event_id=f"evt_{i}", tenant_id="acme", at=at,
                                     outcome="no_subscription")
                     for i, at in enumerate(ats[start : start + 100], start)]  # fmt: skip
        append_decisions(broker, decisions)
    indexer, tokens, records = index_all(store, broker)
    assert await wait_until(lambda: len(tokens.done) == len(records), 20)
    expected = {f"evt_{i}": datetime.fromtimestamp(at, UTC) for i, at in enumerate(ats)}
    conn = await asyncpg.connect(history_dsn)
    try:
        for table in ("attempts", "routing_decisions"):
            stored = {r["event_id"]: r["at"] for r in await conn.fetch(
                f"SELECT event_id, at FROM {table}")}  # fmt: skip
            assert stored == expected, table
    finally:
        await conn.close()
    await indexer.close()
