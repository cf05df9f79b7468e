"""Reading the delivery stage's state topics back, against the test broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from consumers.deliveries.partition_reader import OffsetReader
from service.config import load_settings
from tests.conftest import create_topic, service_env


async def test_a_read_cancelled_while_the_reader_connects_leaves_it_able_to_read(
    kafka_bootstrap: str, producer: AIOKafkaProducer
) -> None:
    settings = load_settings(service_env(kafka_bootstrap))
    topic = settings.ordering_topic
    await create_topic(kafka_bootstrap, topic)
    md = await producer.send_and_wait(topic, b"held", key=b"k", partition=0)
    reader = OffsetReader(settings, topic)
    try:
        # The process's first read (a held delivery read back) is cancelled while the reader
        # connects: its partition was revoked.
        first = asyncio.create_task(reader.read(0, [md.offset]))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The next owner's reads, on this process, still read.
        records = await asyncio.wait_for(reader.read(0, [md.offset]), 30)
        assert [r.value for r in records] == [b"held"]
    finally:
        await reader.close()


async def test_a_copy_read_back_as_soon_as_it_is_acknowledged_is_found(
    kafka_bootstrap: str,
) -> None:
    settings = load_settings(service_env(kafka_bootstrap))
    topic = settings.ordering_topic
    await create_topic(kafka_bootstrap, topic)
    # Other keys' states and copies are written to the partition at the same time, and go on
    # being written whatever this key does: the test broker's end offset catches up with a
    # write only at a later one, so writers that all waited for their reads would wait out
    # the reader's patience together.
    producers = [AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5) for _ in range(4)]
    for p in producers:
        await p.start()
    reader = OffsetReader(settings, topic)
    missed: list[int] = []
    holding = True

    async def other_keys(producer: AIOKafkaProducer) -> None:
        while holding:
            await producer.send_and_wait(topic, b"state", key=b"other", partition=0)
            await asyncio.sleep(0.05)

    async def hold_and_take_up(producer: AIOKafkaProducer) -> None:
        for _ in range(40):
            md = await producer.send_and_wait(topic, b"held", key=b"k", partition=0)
            if not await reader.read(0, [md.offset]):
                missed.append(md.offset)

    others = asyncio.create_task(other_keys(producers[3]))
    try:
        await asyncio.gather(*(hold_and_take_up(p) for p in producers[:3] for _ in range(2)))
    finally:
        holding = False
        await others
        await reader.close()
        for p in producers:
            await p.stop()
    assert missed == []
