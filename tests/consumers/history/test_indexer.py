"""The indexer handler against a real PostgreSQL, without a broker: a record is finished only
once the store acknowledged the batch holding it, and records read again change nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumers.engine.local import LocalBroker
from consumers.history.indexer import IN_FLIGHT, MAX_BATCH_ROWS, Indexer
from service.attempt_log.record import ENCODER, AttemptRecord
from service.history.store import HistoryStore
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
    broker.append(ATTEMPTS, ROUTING_ENCODER.encode([decision]),
                  headers=[(KIND_HEADER, ROUTING_KIND)])  # fmt: skip
    indexer = Indexer(store, attempts_topic=ATTEMPTS, dead_letter_topic=DLQ)
    tokens = Tokens()
    records = broker.records(ATTEMPTS)
    for record in records:
        indexer.submit(record, tokens.token(ATTEMPTS, 0, record.offset))
    indexer.revoked([])  # write what gathered now
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
    indexer = Indexer(store, attempts_topic=ATTEMPTS, dead_letter_topic=DLQ)
    tokens = Tokens()
    records = broker.records(ATTEMPTS)
    for record in records:
        indexer.submit(record, tokens.token(ATTEMPTS, 0, record.offset))
    indexer.revoked([])
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
    indexer = Indexer(store, attempts_topic=ATTEMPTS, dead_letter_topic=DLQ)
    tokens = Tokens()
    for record in broker.records(ATTEMPTS):
        indexer.submit(record, tokens.token(ATTEMPTS, 0, record.offset))
    indexer.revoked([])
    assert await wait_until(lambda: bool(tokens.done), 5)
    assert tokens.done == [0]
    assert await rows(history_dsn, "SELECT count(*) FROM attempts") == 5
    await indexer.close()
    await store.close()
