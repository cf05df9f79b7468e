"""The remembered partitioner chooses what Kafka's default partitioner chooses."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from consumers.engine import partitioner
from consumers.engine.partitioner import KeyPartitioner


def test_a_key_goes_where_the_default_partitioner_sends_it_every_time() -> None:
    rng = random.Random(7)
    keys = [b"sub_%024x" % rng.getrandbits(96) for _ in range(500)] + [b"", b"\x00\xff" * 9]
    ours, default = KeyPartitioner(), DefaultPartitioner()
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        for key in keys * 2:  # the second round is answered from memory
            assert ours(key, partitions, partitions) == default(key, partitions, partitions)


# Kafka's own test vectors for the Java client's murmur2 (UtilsTest.testMurmur2).
JAVA_HASHES = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_partition_is_the_java_clients() -> None:
    ours = KeyPartitioner()
    partitions = list(range(12))
    for key, java_hash in JAVA_HASHES.items():
        assert ours(key, partitions, partitions) == (java_hash & 0x7FFFFFFF) % 12


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    ours = KeyPartitioner()
    assert {ours(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)} == {1, 3}
    assert {ours(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioner, "MAX_KEYS", 50)
    ours = KeyPartitioner()
    partitions = list(range(12))
    for i in range(120):
        assert ours(b"k%d" % i, partitions, partitions) == DefaultPartitioner()(
            b"k%d" % i, partitions, partitions
        )
    assert 0 < len(ours._hashes) <= 50
