"""Producer CPU per record: records given one at a time (`send`) against batches per partition
(`send_batched`, consumers/engine/produce.py), in one run against the test broker.

Each repeat writes --records delivery-sized records (1,200 bytes, the four delivery headers,
100 keys) to a 12-partition topic both ways, alternating, and measures this process's CPU
until every record is acknowledged. The figure is the median of the repeats, and the ratio of
the batched CPU to `send`'s, measured in the same run.

    .venv/bin/python -m bench.produce [--records 30000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer

from bench.common import create_topics
from consumers.engine.partitioner import KeyPartitioner
from consumers.engine.produce import Write, produce_many
from tools.tansu import TansuBroker

TOPIC = "bench.produce"
PARTITIONS = 12
VALUE = b"v" * 1200
HEADERS = [
    ("switchboard.due-at-ms", b"0"),
    ("switchboard.subscription-id", b"sub_0123456789"),
    ("switchboard.event-id", b"evt_0123456789"),
    ("switchboard.attempts", b"0"),
]


def writes(n: int) -> list[Write]:
    return [Write(VALUE, f"sub_{i % 100}".encode(), HEADERS) for i in range(n)]


async def one_at_a_time(producer: AIOKafkaProducer, records: list[Write]) -> None:
    acks = [
        await producer.send(TOPIC, value=w.value, key=w.key, headers=w.headers) for w in records
    ]
    await asyncio.gather(*acks)


async def batched(producer: AIOKafkaProducer, records: list[Write]) -> None:
    await produce_many(producer, TOPIC, "bench", records)


async def cpu_per_1000(
    way: Callable[[AIOKafkaProducer, list[Write]], Awaitable[None]],
    producer: AIOKafkaProducer,
    records: list[Write],
) -> float:
    started = time.process_time()
    await way(producer, records)
    return (time.process_time() - started) / len(records) * 1_000_000


async def main(n: int, repeats: int) -> None:
    with TansuBroker() as broker:
        await create_topics(broker.bootstrap, [(TOPIC, PARTITIONS, {})])
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all",
            linger_ms=5, max_batch_size=1_048_576, partitioner=KeyPartitioner(),
        )  # fmt: skip
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC, b"warm-up", partition=0)
            records = writes(n)
            sends: list[float] = []
            batches: list[float] = []
            for _ in range(repeats):
                sends.append(await cpu_per_1000(one_at_a_time, producer, records))
                batches.append(await cpu_per_1000(batched, producer, records))
        finally:
            await producer.stop()
    send_ms, batch_ms = statistics.median(sends), statistics.median(batches)
    print(f"records {n}, repeats {repeats}, CPU per 1000 records, median (runs)")
    print(f"  send, one at a time: {send_ms:.1f} ms ({', '.join(f'{x:.1f}' for x in sends)})")
    print(f"  batches (send_batched): {batch_ms:.1f} ms ({', '.join(f'{x:.1f}' for x in batches)})")
    print(f"  ratio batched / one at a time: {batch_ms / send_ms:.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.records, args.repeats))
