"""Reading a group's committed offsets and a topic's records, for assertions."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, partition))
        return offset
    finally:
        await consumer.stop()


async def wait_committed(
    bootstrap: str, group: str, topic: str, target: int, *, partition: int = 0, within: float = 30
) -> int | None:
    deadline = asyncio.get_running_loop().time() + within
    offset = None
    while asyncio.get_running_loop().time() < deadline:
        offset = await committed(bootstrap, group, topic, partition)
        if offset is not None and offset >= target:
            return offset
        await asyncio.sleep(0.1)
    return offset


async def read_all(
    bootstrap: str, topic: str, expected: int, within: float = 20
) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()
