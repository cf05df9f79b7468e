"""The history indexer's cost in the service's process: CPU of this process and of the
PostgreSQL backends per 1000 events, each one attempt and one routing decision, as the delivery
path makes them (records of 100, one subscription in twenty).

Records go through `Indexer.submit` as the engine hands them over, without a broker, into an
embedded PostgreSQL (a fresh schema per run); a run ends when every record's token is done,
that is, when the store acknowledged it. In-process CPU is what the delivery path loses to
indexing: the e2e benchmark runs the indexer beside it on one core (docs/performance.md).

    .venv/bin/python -m bench.indexer [--events 50000] [--repeats 5] [--pace 2500]

`--pace N` submits N events a second instead of as fast as the store takes them: the load an
e2e history run puts on PostgreSQL, to run beside another benchmark (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition

from bench.common import cpu_seconds
from consumers.engine.contract import Token
from consumers.history.indexer import Indexer
from service.attempt_log.record import ENCODER, AttemptRecord
from service.history.store import HistoryStore
from service.routing.decision import ENCODER as ROUTING_ENCODER
from service.routing.decision import KIND_HEADER, ROUTING_KIND, RoutingDecision
from tools.postgres import EmbeddedPostgres, with_settings

TOPIC = "switchboard.attempts"
PER_RECORD = 100  # consumers/attempt_log/publisher.py MAX_PER_RECORD
RATE = 3000  # events/s: the e2e delivery rate of one replica, so minutes gather many
IN_FLIGHT_RECORDS = 400  # what the engine would hold before backpressure pauses it


def records(events: int, rng: random.Random, now: float) -> list[ConsumerRecord[bytes, bytes]]:
    subs = [f"sub_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}" for _ in range(20)]
    values: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    attempts, decisions = [], []
    for i in range(events):
        at = now - (events - i) / RATE
        sub, msg = subs[i % len(subs)], f"msg_{rng.getrandbits(128):032x}"
        attempts.append(AttemptRecord(
            id=f"{msg}.1.{int(at * 1000)}", at=at, subscription_id=sub, tenant_id="tenant_1",
            event_id=f"evt_{i:032x}", event_type="call.ended", webhook_id=msg, attempt=1,
            trigger="delivery", method="POST", url="https://crm.example.com/hooks",
            outcome="success", status=204, latency_ms=round(rng.lognormvariate(1, 0.5), 3),
            call_id=f"call_{i:016x}", agent_id=f"agent_{i % 300}",
        ))  # fmt: skip
        decisions.append(RoutingDecision(event_id=f"evt_{i:032x}", tenant_id="tenant_1",
                                         event_type="call.ended", at=at, outcome="matched",
                                         matched=(sub,)))  # fmt: skip
        if len(attempts) == PER_RECORD or i == events - 1:
            values.append((ENCODER.encode(attempts), []))
            values.append((ROUTING_ENCODER.encode(decisions), [(KIND_HEADER, ROUTING_KIND)]))
            attempts, decisions = [], []
    stamp = int(now * 1000)
    return [
        ConsumerRecord(TOPIC, 0, offset, stamp, 0, None, value, None, len(value), -1, headers)
        for offset, (value, headers) in enumerate(values)
    ]


async def run_once(
    dsn: str, events: int, seed: int, pace: float | None = None
) -> tuple[float, float, float]:
    """Events per second, then CPU per 1000 events: this process, PostgreSQL."""
    store = HistoryStore(dsn, retention_days=30)
    await store.connect()
    indexer = Indexer(store, attempts_topic=TOPIC, dead_letter_topic="switchboard.dlq")
    batch = records(events, random.Random(seed), time.time())
    done = 0

    def finished(_: Token) -> None:
        nonlocal done
        done += 1

    tp = TopicPartition(TOPIC, 0)
    async with store.pool.acquire() as conn:
        backends = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND datname = current_database()")]  # fmt: skip
    pg_before, cpu_before = sum(map(cpu_seconds, backends)), time.process_time()
    start = time.perf_counter()
    submitted = 0
    while done < len(batch):
        while submitted < len(batch) and submitted - done < IN_FLIGHT_RECORDS:
            # Two records (an attempts one, a decisions one) make PER_RECORD events.
            if pace and start + submitted // 2 * PER_RECORD / pace > time.perf_counter():
                break
            record = batch[submitted]
            indexer.submit(record, Token(tp, record.offset, record.timestamp,
                                         on_done=finished, on_abandon=finished))  # fmt: skip
            submitted += 1
        indexer.poll()
        await asyncio.sleep(0.001)  # the engine's loop turning
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_before
    pg = sum(map(cpu_seconds, backends)) - pg_before
    await indexer.close()
    await store.close()
    return events / elapsed, cpu / events * 1e6, pg / events * 1e6


async def main(args: argparse.Namespace) -> None:
    with EmbeddedPostgres() as pg:
        admin = await asyncpg.connect(pg.dsn)
        runs = []
        for seed in range(args.repeats):
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            await admin.execute(f"CREATE SCHEMA {schema}")
            runs.append(await run_once(with_settings(pg.dsn, search_path=schema),
                                       args.events, seed, args.pace))  # fmt: skip
            rate, cpu, pg_cpu = runs[-1]
            print(f"run {seed + 1}: {rate:,.0f} events/s; CPU per 1000 events: this process "
                  f"{cpu:.1f} ms, PostgreSQL {pg_cpu:.1f} ms", flush=True)  # fmt: skip
        await admin.close()
    rate, cpu, pg_cpu = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"median of {len(runs)}: {rate:,.0f} events/s; CPU per 1000 events: this process "
          f"{cpu:.1f} ms, PostgreSQL {pg_cpu:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pace", type=float, default=None)
    asyncio.run(main(parser.parse_args()))
