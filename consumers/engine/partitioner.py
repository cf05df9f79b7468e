"""Which partition a keyed record goes to: Kafka's default, murmur2 of the key, remembered.

Every keyed record the service writes (deliveries, retries, dead letters, subscriptions, ops
events) is keyed by a subscription id, of which there are few next to the records. aiokafka's
murmur2 is pure Python, 8 µs a call on the benchmark's machine, about 2% of a delivery's CPU
once for the hop and again for any retry; the hash of a key never changes, so it is computed
once. The partition is the one the Java clients and aiokafka's default partitioner choose
(`tests/consumers/engine/test_partitioner.py`), so co-partitioning with topics written by
other clients holds.
"""

from __future__ import annotations

import random
from typing import Final

from aiokafka.partitioner import murmur2

# Hashes kept; past this many keys (each under 100 bytes) the memory is cleared and refilled
# with the keys in use, so a stream of ever-new keys cannot grow it without bound.
MAX_KEYS: Final = 100_000


class KeyPartitioner:
    """A partitioner for `AIOKafkaProducer(partitioner=...)`."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            # As aiokafka's default: a record without a key goes to any available partition.
            return random.choice(available or all_partitions)  # noqa: S311 - not a secret
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
