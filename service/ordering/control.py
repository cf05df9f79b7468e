"""An operator's release of a stopped ordering key, as a record on the deliveries topic.

Keyed by the subscription's id like its deliveries, so that it lands in the partition whose
owner holds the key, and is applied there in order with them
(consumers/deliveries/ordering.py).
"""

from __future__ import annotations

from typing import Final

import msgspec

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from service.delivery.record import HEADER_PREFIX, SUBSCRIPTION_HEADER

CONTROL_HEADER: Final = HEADER_PREFIX + "control"
RELEASE: Final = b"release-key"


class ReleaseKey(msgspec.Struct, frozen=True):
    subscription_id: str
    key: str


_DECODER: Final = msgspec.json.Decoder(ReleaseKey)


def release_record(sub_id: str, key: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record's value and headers."""
    value = msgspec.json.encode(ReleaseKey(sub_id, key))
    return value, [(CONTROL_HEADER, RELEASE), (SUBSCRIPTION_HEADER, sub_id.encode())]


def control_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> bytes | None:
    for name, value in headers:
        if name == CONTROL_HEADER:
            return value
    return None


def decode_release(value: bytes | None) -> ReleaseKey:
    """Raise msgspec.DecodeError for anything that is not a release."""
    return _DECODER.decode(value or b"")


class OrderingControl:
    """What the API sends to the owners of ordering keys."""

    def __init__(self, producer: Producer, deliveries_topic: str) -> None:
        self._producer = producer
        self._topic = deliveries_topic

    async def release(self, sub_id: str, key: str) -> None:
        """Returns once the release is durable; its partition's owner applies it next."""
        value, headers = release_record(sub_id, key)
        await produce(self._producer, self._topic, "ordering_release", value=value,
                      key=sub_id.encode(), headers=headers, retry_fatal=False)  # fmt: skip
