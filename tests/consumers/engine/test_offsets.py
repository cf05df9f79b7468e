"""Out-of-order completion commits only contiguous offsets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.engine.offsets import PartitionOffsets


def test_commit_waits_for_the_lowest_unfinished_offset() -> None:
    p = PartitionOffsets()
    for off in (10, 11, 12, 13):
        p.add(off, 0)
    p.finish(12)
    p.finish(13)
    assert p.to_commit() is None  # 10 and 11 are still running
    p.finish(10)
    assert p.to_commit() == 11
    p.last_committed = 11
    assert p.to_commit() is None  # nothing new
    p.finish(11)
    assert p.to_commit() == 14
    assert p.oldest_unfinished_timestamp_ms() is None


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave gaps between record offsets.
    p = PartitionOffsets()
    p.add(3, 0)
    p.add(7, 0)
    p.finish(7)
    p.finish(3)
    assert p.to_commit() == 8


def test_offsets_must_increase() -> None:
    p = PartitionOffsets()
    p.add(5, 0)
    with pytest.raises(ValueError, match="not after"):
        p.add(5, 0)


def test_oldest_unfinished_timestamp() -> None:
    p = PartitionOffsets()
    p.add(1, 1000)
    p.add(2, 2000)
    assert p.oldest_unfinished_timestamp_ms() == 1000
    p.finish(1)
    assert p.oldest_unfinished_timestamp_ms() == 2000


@given(st.data())
def test_committed_offset_never_passes_an_unfinished_record(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 60))
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    offsets = []
    current = data.draw(st.integers(0, 1000))
    for gap in gaps:
        offsets.append(current)
        current += gap
    order = data.draw(st.permutations(offsets))
    p = PartitionOffsets()
    for off in offsets:
        p.add(off, 0)
    finished: set[int] = set()
    for off in order:
        p.finish(off)
        finished.add(off)
        committed = p.committed
        unfinished = [o for o in offsets if o not in finished]
        if committed is not None:
            # Everything below the commit point is finished...
            assert all(o in finished for o in offsets if o < committed)
            # ...and the commit point is not beyond the first unfinished record.
            if unfinished:
                assert committed <= min(unfinished)
        elif offsets[0] in finished:
            pytest.fail("the first record finished but nothing became committable")
    assert p.committed == offsets[-1] + 1
    assert p.oldest_unfinished_timestamp_ms() is None


def test_a_withdrawn_offset_is_as_if_never_added() -> None:
    p = PartitionOffsets()
    p.add(5, 0)
    p.add(6, 0)
    p.withdraw(6)  # the handler did not take it: it will be offered again
    with pytest.raises(ValueError, match="not the last"):
        p.withdraw(4)
    p.finish(5)
    assert p.to_commit() == 6
    p.add(6, 0)  # offered again, in order
    p.finish(6)
    assert p.to_commit() == 7
