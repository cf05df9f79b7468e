"""The lookup members topic, read whole and followed by every replica (see members.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiokafka import ConsumerRecord

from consumers.engine.reader import TopicReader
from consumers.lookups.members import Membership, UnreadableRecord
from service.config import Settings

log = structlog.get_logger("switchboard.lookups")


class Roster(TopicReader):
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings, settings.lookup_members_topic)
        self._clock = clock
        self.membership = Membership(settings.lookup_member_timeout_seconds)

    def _apply(self, record: ConsumerRecord) -> None:
        try:
            self.membership.fold(record.key, record.value, self._clock())
        except UnreadableRecord as exc:
            # Another version's record, or a hand-written one: the others still count.
            log.warning("lookup_member_record_unreadable", offset=record.offset,
                        reason=str(exc))  # fmt: skip

    def _on_loaded(self) -> None:
        self.membership.mark_loaded(self._clock())
