"""What the owner of a partition keeps about it, read when the partition is assigned."""

from __future__ import annotations

import asyncio

import pytest

from consumers.deliveries.partition_state import PartitionStates
from consumers.engine.contract import Rejected


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_revoked_partition_is_not_read_again_for_a_record_until_it_is_reassigned() -> None:
    topic = ["a"]  # the partition of the state topic, as written so far

    async def read(partition: int) -> tuple[str, ...]:
        return tuple(topic)

    states = PartitionStates(read, "test")
    states.load(0)  # assigned
    await settle()
    assert states.get(0) == ("a",)
    states.forget(0)  # revoked: the grace period begins
    # A record the loop kept is offered once more: not taken, and nothing read.
    with pytest.raises(Rejected):
        states.get(0)
    await settle()
    topic.append("b")  # a job that ends in the grace period makes its ending durable
    states.load(0)  # the partition is assigned here again
    await settle()
    assert states.get(0) == ("a", "b")
