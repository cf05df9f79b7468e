"""What a consumer's idle partitions cost its process: CPU per second of a group consumer
whose partitions get no records, polled as the engine polls, by how many partitions it has.

The delivery group reads the deliveries topic and every retry tier, co-partitioned: with the
default schedule, 7 tiers and 12 partitions each, 96 partitions of which the 12 of the
deliveries topic carry the traffic. aiokafka puts every partition not paused in every fetch
request and decodes each in the answer, in Python, on the delivery path's core. This measures
that per-partition cost against the test broker, at the e2e benchmark's fetch wait (the broker
holds each fetch to it), alternating the configurations so that the machine's noise hits each
alike. A configuration `96:60` has 96 partitions of which 60 are paused, as resting partitions
are (consumers/engine/resting.py): aiokafka leaves them out of its requests, but still waits
on each one's resume in every turn of its fetch task.

    .venv/bin/python -m bench.idle_fetch [--configs 12:0,96:0,96:60,36:0] [--repeats 3]
                                         [--seconds 8] [--fetch-wait-ms 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import uvloop
from aiokafka import AIOKafkaConsumer

from bench.common import create_topics
from tools.tansu import TansuBroker

PARTITIONS_PER_TOPIC = 12  # the service's topic_partitions default
POLL_TIMEOUT_MS = 200  # consumers/engine/group_loop.py POLL_TIMEOUT_MS


async def cpu_per_second(
    bootstrap: str, partitions: int, paused: int, wait_ms: int, seconds: float
) -> float:
    """ms of this process's CPU per second, polling `partitions` idle partitions of which
    `paused` are paused, as the engine polls: naming those not paused."""
    run = uuid.uuid4().hex[:8]
    topics = [f"idle.{run}.{i}" for i in range(max(1, partitions // PARTITIONS_PER_TOPIC))]
    await create_topics(bootstrap, [(t, PARTITIONS_PER_TOPIC, {}) for t in topics])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"idle.{run}",
        enable_auto_commit=False,
        fetch_max_wait_ms=wait_ms,
    )
    await consumer.start()
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + 10
        while len(consumer.assignment()) < len(topics) * PARTITIONS_PER_TOPIC:
            if time.monotonic() > deadline:
                raise RuntimeError("the group did not assign every partition in 10 s")
            await consumer.getmany(timeout_ms=100)
        await consumer.getmany(timeout_ms=500)  # offsets reset, fetching under way
        assigned = sorted(consumer.assignment())
        consumer.pause(*assigned[len(assigned) - paused :])
        fetching = assigned[: len(assigned) - paused]
        cpu0, wall0 = time.process_time(), time.monotonic()
        while time.monotonic() - wall0 < seconds:
            await consumer.getmany(*fetching, timeout_ms=POLL_TIMEOUT_MS)
        return 1000 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    finally:
        await consumer.stop()


async def main(args: argparse.Namespace) -> None:
    configs = [tuple(int(n) for n in c.split(":")) for c in args.configs.split(",")]
    results: dict[tuple[int, ...], list[float]] = {config: [] for config in configs}
    with TansuBroker() as broker:
        for _ in range(args.repeats):
            for size, paused in configs:
                results[(size, paused)].append(await cpu_per_second(
                    broker.bootstrap, size, paused, args.fetch_wait_ms, args.seconds
                ))  # fmt: skip
    print(f"fetch wait {args.fetch_wait_ms} ms, {args.seconds:.0f} s per run")
    for (size, paused), runs in results.items():
        listed = ", ".join(f"{r:.0f}" for r in runs)
        print(f"{size} idle partitions, {paused} of them paused: median "
              f"{statistics.median(runs):.0f} ms CPU per second (runs: {listed})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="12:0,96:0,96:60,36:0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    uvloop.run(main(parser.parse_args()))
