"""What the owner of a partition keeps about it, read from a state topic when it is assigned.

The delivery stage's state topics (ordering keys, parked deliveries) are co-partitioned with
the deliveries topic: partition p of each is read by the owner of deliveries partition p
before it takes a record of p that needs it. Until then such records are rejected (offered
again shortly), which pauses only their partition.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final, Generic, TypeVar

import structlog

from consumers.engine.contract import Rejected

log = structlog.get_logger("switchboard.deliveries")

T = TypeVar("T")
# A partition's state is being read: its records are offered again this soon.
RETRY_SECONDS: Final = 0.05
# At shutdown, the reads under way get this long to finish (a read is a partition of a
# compacted topic: well under a second on the test broker).
CLOSE_SECONDS: Final = 5.0


class PartitionStates(Generic[T]):
    def __init__(
        self,
        load: Callable[[int], Coroutine[Any, Any, T]],
        name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._name = name
        self._clock = clock
        self._states: dict[int, T] = {}
        self._loading: dict[int, asyncio.Task[T]] = {}
        self._unused: set[asyncio.Task[T]] = set()
        # Forgotten (revoked), and not assigned here since: not read again for a record.
        self._revoked: set[int] = set()

    def get(self, partition: int) -> T:
        """The partition's state; raises Rejected while it is being read, or once the
        partition is revoked. A record of a revoked partition can still be offered: the loop
        turns once more as a revoke begins (a fetch under way returns at its timeout) and
        offers what it had kept. Read then, the state would miss what the grace period
        writes, and be kept as it was read for the partition's next assignment here."""
        state = self._states.get(partition)
        if state is not None:
            return state
        if partition not in self._revoked:
            self.load(partition)
        raise Rejected(retry_at=self._clock() + RETRY_SECONDS)

    def load(self, partition: int) -> None:
        """Start reading the partition's state, unless it is read or being read. Called as
        the partition is assigned: work its previous owner had begun on it (held or parked
        deliveries being taken up) goes on even if no record of it ever comes again."""
        self._revoked.discard(partition)
        if partition in self._states or partition in self._loading:
            return
        task = asyncio.create_task(self._load(partition))
        self._loading[partition] = task
        task.add_done_callback(functools.partial(self._loaded, partition))

    def _loaded(self, partition: int, task: asyncio.Task[T]) -> None:
        if self._loading.get(partition) is not task:
            if not task.cancelled():
                task.exception()  # retrieved: a read no longer wanted may fail unnoticed
            return  # forgotten (revoked) meanwhile
        del self._loading[partition]
        if task.cancelled() or task.exception() is not None:
            # Read again at the next record of the partition.
            log.warning("partition_state_unreadable", state=self._name, partition=partition,
                        error=repr(None if task.cancelled() else task.exception()))  # fmt: skip
            return
        self._states[partition] = task.result()
        log.info("partition_state_read", state=self._name, partition=partition)

    def peek(self, partition: int) -> T | None:
        return self._states.get(partition)

    def items(self) -> Iterator[tuple[int, T]]:
        return iter(list(self._states.items()))

    def forget(self, partition: int) -> None:
        self._revoked.add(partition)
        self._states.pop(partition, None)
        loading = self._loading.pop(partition, None)
        if loading is not None and not loading.done():
            # Left to finish, its result unused: a read cancelled while its consumer connects
            # can leave the connection open (aiokafka). Waited for by `close`.
            self._unused.add(loading)
            loading.add_done_callback(self._unused.discard)

    async def close(self) -> None:
        """Wait for the reads under way (each a partition of a small compacted topic), then
        cancel what is left after CLOSE_SECONDS."""
        reads = {*self._loading.values(), *self._unused}
        self._loading.clear()
        if not reads:
            return
        _, late = await asyncio.wait(reads, timeout=CLOSE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
