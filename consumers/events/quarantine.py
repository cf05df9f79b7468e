"""The quarantine: records that are not valid events, copied to the invalid topic with why.

The copy keeps the record's key, value and headers, adds the reason and where it came from
(`switchboard.reason`, `.error`, `.origin.topic|partition|offset|timestamp`), and is produced
until acknowledged; only then is the record finished, so nothing is lost while the broker is
away. A record too large for the broker even to quarantine keeps its coordinates without its
value.
"""

from __future__ import annotations

import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from service.delivery.record import HEADER_PREFIX

log = structlog.get_logger("switchboard.consumer")


class Quarantine:
    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def put(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        ours = [
            (HEADER_PREFIX + "reason", reason.encode()),
            (HEADER_PREFIX + "error", detail.encode()[:1024]),
            (HEADER_PREFIX + "origin.topic", record.topic.encode()),
            (HEADER_PREFIX + "origin.partition", str(record.partition).encode()),
            (HEADER_PREFIX + "origin.offset", str(record.offset).encode()),
            (HEADER_PREFIX + "origin.timestamp", str(record.timestamp).encode()),
        ]
        theirs = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
        headers = [*theirs, *ours]
        value = record.value
        while True:
            try:
                await produce(
                    self._producer, self._topic, "quarantine",
                    value=value, key=record.key, headers=headers,
                )  # fmt: skip
            except MessageSizeTooLargeError:
                # Too large for the broker even to quarantine: keep the record's coordinates
                # (so it can be found in its origin topic) without its value, then without
                # the producer's own headers.
                if value is None and len(headers) == len(ours):
                    log.exception("quarantine_impossible", topic=record.topic,
                                  partition=record.partition, offset=record.offset)  # fmt: skip
                    return
                value = None
                headers = [*ours, (HEADER_PREFIX + "value_dropped", b"too large")]
                continue
            return
