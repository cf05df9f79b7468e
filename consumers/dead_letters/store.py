"""The dead letters: listed from the history store, replayed at most once across replicas.

The indexer (`consumers/history/indexer.py`) stores every record of the dead-letter topic,
named by where it is stored (`dl_<partition>_<offset>`). Replaying claims the dead letters in
the store first (one UPDATE: only rows neither replayed nor claimed are taken, so two
replicas replaying the same ones at once split them, never share them), produces each to the
first retry tier as a fresh delivery (attempt count and window start over; the webhook-id
stays the same, so a receiver that saw it before can tell), and then marks them replayed. If
the broker does not take them, the claims are released and replaying again is safe; a
replica that dies between claim and mark leaves claims that expire (CLAIM_EXPIRY), so a dead
letter is replayed at most once in the normal course, and never lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from service.dead_letters.model import DeadLetter
from service.delivery.record import DeliveryRecord, decode, encode, retry_headers
from service.history import queries
from service.history.store import HistoryStore
from service.observability import metrics


class DeadLetterStore:
    def __init__(self, store: HistoryStore, producer: Producer, *, replay_topic: str) -> None:
        self.history = store
        self._producer = producer
        self._replay_topic = replay_topic

    async def listing(self, query: queries.DeadLetterQuery) -> list[DeadLetter]:
        rows = await queries.dead_letters(self.history.pool, query)
        return [_letter(row) for row in rows]

    async def replay(self, letters: Sequence[DeadLetter]) -> tuple[list[str], list[str]]:
        """Replay those nobody replayed or is replaying: (replayed ids, ids already taken).
        Raises the broker's or the store's error after releasing its claims."""
        ids = [dl.id for dl in letters]  # as stored: read from the store
        pool = self.history.pool
        claimed = {r["id"] for r in await pool.fetch(queries.CLAIM_SQL, ids, queries.CLAIM_EXPIRY)}
        fresh = [dl for dl in letters if dl.id in claimed]
        now = time.time()
        try:
            # Every delivery is acknowledged before any is marked replayed.
            await asyncio.gather(*(self._produce_replay(_fresh_delivery(dl, now)) for dl in fresh))
        except BaseException:
            await pool.execute(queries.RELEASE_SQL, [dl.id for dl in fresh])
            raise
        await pool.execute(queries.MARK_SQL, [dl.id for dl in fresh])
        metrics.REPLAYS.inc(len(fresh))
        return [dl.id for dl in fresh], [i for i in ids if i not in claimed]

    async def _produce_replay(self, delivery: DeliveryRecord) -> None:
        await produce(
            self._producer, self._replay_topic, "replay",
            value=encode(delivery), key=delivery.subscription_id.encode(),
            headers=retry_headers(delivery), retry_fatal=False,
        )  # fmt: skip


def _fresh_delivery(dl: DeadLetter, now: float) -> DeliveryRecord:
    return msgspec.structs.replace(
        dl.record,
        attempts=0,
        first_attempt_at=None,
        due_at=now,
        last_error=None,
        reason=None,
        dead_lettered_at=None,
        replay_of=dl.id,
    )


def _letter(row: asyncpg.Record) -> DeadLetter:
    replayed: datetime | None = row["replayed_at"]
    at: datetime = row["dead_lettered_at"]
    return DeadLetter(
        id=row["id"],
        record=decode(row["record"]),
        dead_lettered_at=at.timestamp(),
        cursor=queries.cursor_of(at, row["id"]),
        replayed_at=replayed.timestamp() if replayed is not None else None,
    )
