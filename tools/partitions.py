"""Where Kafka's default partitioner puts a key: which partition of the deliveries topic (and
so which owner) a subscription's deliveries go to."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_of(key: str, partitions: int) -> int:
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions
