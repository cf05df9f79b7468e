"""What the benchmarks share: reading a process's CPU and memory, and writing to the broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.subscriptions.model import Subscription

RESULTS: Final = Path(__file__).parent / "results"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20)
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()


async def create_topics(bootstrap: str, topics: list[tuple[str, int, dict[str, str]]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, p, 1, topic_configs=c) for t, p, c in topics])
    finally:
        await admin.close()


async def write_subscription(bootstrap: str, topic: str, sub: Subscription) -> None:
    """Put the benchmark's subscription in the table before any service starts."""
    await create_topics(bootstrap, [(topic, 1, {"cleanup.policy": "compact"})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=sub.id.encode(), value=msgspec.json.encode(sub))
    finally:
        await producer.stop()
