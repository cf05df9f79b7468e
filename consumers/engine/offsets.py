"""Which offsets of a partition may be committed when records finish out of order.

A FIFO of the offsets handed out, in consumption order, and the set of those finished. The
commit point only ever moves past a contiguous run of finished records: a record that is slow
holds the partition's commit where it is, never losing the records behind it on a restart.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    __slots__ = ("_done", "_unfinished", "committed", "last_committed")

    def __init__(self) -> None:
        # (offset, kafka timestamp in ms) in the order the records were read.
        self._unfinished: deque[tuple[int, int]] = deque()
        self._done: set[int] = set()
        # The next offset to read on a restart: one past the last contiguous finished record.
        self.committed: int | None = None
        # What was last sent to the broker, to skip commits that would change nothing.
        self.last_committed: int | None = None

    def add(self, offset: int, timestamp_ms: int) -> None:
        if self._unfinished and offset <= self._unfinished[-1][0]:
            raise ValueError(f"offset {offset} is not after {self._unfinished[-1][0]}")
        self._unfinished.append((offset, timestamp_ms))

    def withdraw(self, offset: int) -> None:
        """The offset just added was not taken after all: it will be added again later."""
        if not self._unfinished or self._unfinished[-1][0] != offset:
            raise ValueError(f"offset {offset} is not the last one added")
        self._unfinished.pop()

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        while self._unfinished and self._unfinished[0][0] in self._done:
            head, _ = self._unfinished.popleft()
            self._done.discard(head)
            self.committed = head + 1

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when it would not move the commit point."""
        if self.committed is None or self.committed == self.last_committed:
            return None
        return self.committed

    def oldest_unfinished_timestamp_ms(self) -> int | None:
        return self._unfinished[0][1] if self._unfinished else None
