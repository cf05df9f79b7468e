"""The parked deliveries' index against a plain model: the same answers after any sequence of
parks, acknowledgements, removals and re-parks, and each topic's in source order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumers.deliveries.park_index import UNWRITTEN, ParkIndex

SUBS = ("sub_a", "sub_b")
TOPICS = ("deliveries", "retry.5")
OP = st.tuples(
    st.sampled_from(("add", "ack", "remove")),
    st.sampled_from(SUBS),
    st.sampled_from(TOPICS),
    st.integers(0, 60),
)


@given(ops=st.lists(OP, max_size=300))
def test_the_index_answers_as_a_dict_of_sources_would(
    ops: list[tuple[str, str, str, int]],
) -> None:
    index = ParkIndex()
    model: dict[str, dict[tuple[str, int], int]] = {}
    written = 1000
    for op, sub, topic, offset in ops:
        source = (topic, offset)
        parked = model.setdefault(sub, {})
        if op == "add":
            index.add(sub, source, UNWRITTEN)
            parked[source] = UNWRITTEN
        elif op == "ack" and source in parked:
            written += 1
            index.add(sub, source, written)
            parked[source] = written
        elif op == "remove":
            index.remove(sub, source)
            parked.pop(source, None)
        for s in SUBS:
            expected = model.get(s, {})
            assert index.has(s) == bool(expected)
            queue = list(index.queue(s))
            assert dict(queue) == expected
            for t in TOPICS:  # each topic's deliveries come back in source order
                offsets = [o for (qt, o), _ in queue if qt == t]
                assert offsets == sorted(offsets)
        assert index.contains(sub, source) == (source in parked)
        assert index.count() == sum(len(p) for p in model.values())


def test_deliveries_taken_up_from_the_front_leave_the_arrays() -> None:
    index = ParkIndex()
    for i in range(100_000):
        index.add("sub_a", ("deliveries", 10_000_000 + 2 * i), 50_000_000 + i)
    parked = index._by_sub["sub_a"]["deliveries"]
    for i in range(60_000):  # taken up from the front: the front is dropped
        index.remove("sub_a", ("deliveries", 10_000_000 + 2 * i))
    assert len(parked.offsets) < 100_000
    assert index.count() == 40_000
