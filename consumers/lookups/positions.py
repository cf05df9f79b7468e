"""How far this member has answered each partition it owns: what its heartbeats report.

A partition's position starts where this member took it over, and moves to each offset the
group loop commits: one past the last contiguous finished record, that is every request
below it answered and its reply acknowledged. A partition given up is no longer reported:
its next owner has already started from an earlier report, and reports its own.
"""

from __future__ import annotations

from aiokafka import TopicPartition


class AnsweredThrough:
    def __init__(self) -> None:
        self._offsets: dict[TopicPartition, int] = {}
        # What the members topic has acknowledged, to write only what moved.
        self._written: dict[TopicPartition, int] = {}

    def take(self, tp: TopicPartition, start: int) -> None:
        self._offsets[tp] = start
        self._written.pop(tp, None)

    def release(self, tp: TopicPartition) -> None:
        self._offsets.pop(tp, None)
        self._written.pop(tp, None)

    def answered(self, tp: TopicPartition, offset: int) -> None:
        """The loop committed `offset`; ignored for a partition no longer owned (its final
        commit comes after the release)."""
        if (current := self._offsets.get(tp)) is not None:
            self._offsets[tp] = max(current, offset)

    def owned(self) -> dict[TopicPartition, int]:
        return dict(self._offsets)

    def unwritten(self) -> dict[TopicPartition, int]:
        return {tp: o for tp, o in self._offsets.items() if self._written.get(tp) != o}

    def written(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._offsets:
                self._written[tp] = offset
