"""History store benchmark: the indexer's write rate, bytes per stored attempt, query latency of
the API's queries with many attempts stored, and the time to drop a day.

Against an embedded PostgreSQL 16 (pgserver) on a Unix socket, or --dsn. The write rate is the
indexer's path without Kafka: attempt records decoded from the JSON the attempts topic holds
(batches of 100), written with `insert_attempts` in batches of 5,000 rows on one connection,
one batch at a time, roll-ups included. Query latencies are the route's SQL through the same
query builders the API uses (no HTTP), each the median/p99 of --queries runs on random keys.

    .venv/bin/python -m bench.history [--attempts 1000000] [--days 7] [--queries 300]
                                      [--live 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service.attempt_log.record import DECODER, ENCODER, AttemptRecord
from service.history import queries
from service.history.partitions import Partitions, day_of, day_start
from service.history.store import HistoryStore
from service.history.writes import insert_attempts
from tools.postgres import EmbeddedPostgres, with_settings

BATCH = 5000  # consumers/history/indexer.py MAX_BATCH_ROWS
PER_RECORD = 100  # consumers/attempt_log/publisher.py MAX_PER_RECORD
OUTCOMES = ["success"] * 17 + ["server_error", "timeout", "connect_error"]


def generate(n: int, span: float, rng: random.Random, now: float) -> list[bytes]:
    """Attempts as the attempts topic holds them (JSON arrays of up to 100), made over the
    `span` seconds before `now`."""
    subs = [f"sub_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}" for _ in range(2000)]
    out, batch = [], []
    for i in range(n):
        at = now - rng.uniform(0, span)
        call = i // 3  # about three attempts per call: its events, retries
        sub = subs[(call * 7) % len(subs)]
        batch.append(AttemptRecord(
            id=f"msg_{i:032x}.1.{int(at * 1000)}", at=at, subscription_id=sub,
            tenant_id=f"tenant_{hash(sub) % 200}", event_id=f"evt_{call:032x}",
            event_type=rng.choice(["call.ended", "call.started", "call.summary_ready"]),
            webhook_id=f"msg_{i:032x}", attempt=1, trigger="delivery", method="POST",
            url=f"https://hooks.example.com/{sub}", outcome=rng.choice(OUTCOMES), status=200,
            latency_ms=round(rng.lognormvariate(3.5, 0.8), 3), call_id=f"call_{call:016x}",
            contact_id=f"contact_{call % 50_000}", agent_id=f"agent_{call % 300}",
        ))  # fmt: skip
        if len(batch) == PER_RECORD:
            out.append(ENCODER.encode(batch))
            batch = []
    if batch:
        out.append(ENCODER.encode(batch))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(conn: asyncpg.Connection, sql: str, args: list[object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await conn.fetch(sql, *args)
        out.append((time.perf_counter() - start) * 1000)
    return out


async def write_rate(conn: asyncpg.Connection, records: list[bytes]) -> tuple[float, float]:
    """The indexer's path: decode, then insert_attempts per batch; (median batch rate, overall)."""
    partitions = Partitions()
    rates = []
    start = time.perf_counter()
    count = 0
    for i in range(0, len(records), BATCH // PER_RECORD):
        t = time.perf_counter()
        rows = [a for r in records[i : i + BATCH // PER_RECORD] for a in DECODER.decode(r)]
        await insert_attempts(conn, partitions, rows)
        rates.append(len(rows) / (time.perf_counter() - t))
        count += len(rows)
    return statistics.median(rates), count / (time.perf_counter() - start)


async def run(dsn: str, attempts: int, days: int, n_queries: int, live: int) -> None:
    rng = random.Random(14)
    now = time.time()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    dsn = with_settings(dsn, search_path=schema)
    store = HistoryStore(dsn, retention_days=30)
    await store.connect()
    conn = await asyncpg.connect(dsn)
    # Live traffic: attempts made at the e2e benchmark's delivery rate (about 7,500/s), so a
    # subscription's minute gathers many attempts, as it does in production.
    median, overall = await write_rate(conn, generate(live, live / 7500, rng, now))
    print(f"indexer write rate, live ({live:,} attempts over the last {live / 7500:.0f} s): "
          f"median {median:,.0f} attempts/s per batch, {overall:,.0f}/s overall")  # fmt: skip
    # A backfill over days: nearly every attempt is a roll-up row of its own (worst case).
    records = generate(attempts, days * 86_400, rng, now)
    median, overall = await write_rate(conn, records)
    print(f"indexer write rate, backfill ({attempts:,} attempts over {days} days): "
          f"median {median:,.0f} attempts/s per batch, {overall:,.0f}/s overall")  # fmt: skip
    attempts += live
    await conn.execute("ANALYZE")
    size = await conn.fetchval(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'attempts' AND p.relnamespace = current_schema()::regnamespace"
    )
    heap = await conn.fetchval(
        "SELECT sum(pg_relation_size(c.oid)) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'attempts' AND p.relnamespace = current_schema()::regnamespace"
    )
    minutes = await conn.fetchval(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'attempt_minutes' AND p.relnamespace = current_schema()::regnamespace"
    )
    print(f"bytes per attempt: {size / attempts:.0f} with indexes ({heap / attempts:.0f} heap); "
          f"roll-ups {minutes / attempts:.0f} per attempt")  # fmt: skip
    sample = [DECODER.decode(records[rng.randrange(len(records))])[0] for _ in range(n_queries)]
    cases: dict[str, Callable[[AttemptRecord], tuple[str, list[Any]]]] = {
        "log (subscription, 100 newest)": lambda a: queries.AttemptQuery(
            "subscription_id", a.subscription_id, limit=100).sql(),
        "log, failures only": lambda a: queries.AttemptQuery(
            "subscription_id", a.subscription_id, outcome="failure", limit=100).sql(),
        "event": lambda a: queries.AttemptQuery("event_id", a.event_id).sql(),
        "search call_id (tenant key)": lambda a: queries.AttemptQuery(
            "call_id", a.call_id or "", tenant_id=a.tenant_id).sql(),
        "search contact_id": lambda a: queries.AttemptQuery(
            "contact_id", a.contact_id or "", limit=100).sql(),
    }  # fmt: skip
    for name, build in cases.items():
        timings = []
        for a in sample:
            sql, args = build(a)
            timings += await timed(conn, sql, args, 1)
        print(f"{name}: p50 {pct(timings, 0.5):.2f} ms, p99 {pct(timings, 0.99):.2f} ms")
    windows = [300, 3600, 86_400, 7 * 86_400, 30 * 86_400]
    starts = [datetime.fromtimestamp(now - w, UTC) for w in reversed(windows)]
    counts_sql, buckets_sql = queries.stats_sql(len(starts))
    timings = []
    for a in sample:
        t = time.perf_counter()
        await conn.fetchrow(counts_sql, a.subscription_id, *starts)
        await conn.fetch(buckets_sql, a.subscription_id, *starts)
        timings.append((time.perf_counter() - t) * 1000)
    print(f"stats (5 windows, 2 queries): p50 {pct(timings, 0.5):.2f} ms, "
          f"p99 {pct(timings, 0.99):.2f} ms")  # fmt: skip
    oldest = day_start(day_of(now - days * 86_400))
    per_day = await conn.fetchval(
        "SELECT count(*) FROM attempts WHERE at >= $1 AND at < $2", oldest, oldest + timedelta(1)
    )
    t = time.perf_counter()
    dropped = await Partitions().drop_expired(conn, oldest + timedelta(days=1))
    print(f"drop a day ({per_day:,} attempts; {', '.join(dropped)}): "
          f"{(time.perf_counter() - t) * 1000:.1f} ms")  # fmt: skip
    await conn.close()
    await store.close()
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--live", type=int, default=200_000, help="attempts of the live phase")
    parser.add_argument("--dsn", help="an existing PostgreSQL instead of the embedded one")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(run(args.dsn, args.attempts, args.days, args.queries, args.live))
        return
    with EmbeddedPostgres() as pg:
        asyncio.run(run(pg.dsn, args.attempts, args.days, args.queries, args.live))


if __name__ == "__main__":
    main()
