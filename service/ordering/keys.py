"""Ordering keys: what the owner of a partition knows about each key of its ordered
subscriptions, and the records of the ordering topic that make it durable.

The ordering topic is compacted and co-partitioned with the deliveries topic: partition p
holds the keys of the subscriptions whose deliveries are in partition p, and is read by that
partition's owner when it is assigned (consumers/deliveries/ordering.py). Two kinds of record:
- a key's state, keyed `["k", subscription, key]`: the last sequence number given, the
  deliveries-topic offset of the latest first attempt taken, and what the key waits for (a
  delivery in the retry tiers, or an operator);
- a held delivery, keyed `["h", subscription, key, offset]`: a delivery of a waiting key,
  kept here (and its source record committed) until the key moves on; a tombstone once it
  is taken up again.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Final

import msgspec

from service.delivery.record import DeliveryRecord, encode
from service.events.envelope import Event
from service.events.paths import MISSING, Getter, getter, parse

# Longer values are not ids; cut so that one odd event cannot bloat the ordering topic.
MAX_KEY_CHARS: Final = 200
# Events kept in a key's `recent`. The events stage commits every 0.2 s, so what it hands off
# again after a crash is a fraction of a second of events: rarely more than a few of one key.
# Each costs about 40 bytes in every state record of the key.
RECENT_EVENTS: Final = 8

KeyId = tuple[str, str]  # (subscription id, ordering key)


class KeyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    seq: int = 0  # the last sequence number given to a delivery of the key
    offset: int = -1  # the deliveries-topic offset of the latest first attempt taken
    blocker: str | None = None  # the event whose delivery is in the retry tiers
    stopped: bool = False  # a dead letter stopped the key until an operator releases it
    touched: float = 0.0  # unix seconds of the last change: idle keys are forgotten
    # The events of the key's latest first attempts taken, most recent last: the events stage
    # hands an event off again after a crash (everything since its last commit), and a second
    # delivery record of an event already taken is a repeat, not a new number in the sequence.
    recent: tuple[str, ...] = ()

    @property
    def waiting(self) -> bool:
        return self.blocker is not None or self.stopped

    def taken(self, event_id: str) -> bool:
        """Whether a first attempt of this event was taken already (a repeat)."""
        return event_id in self.recent


_STATE: Final = msgspec.json.Decoder(KeyState)
_ENCODER: Final = msgspec.json.Encoder()
_KEY: Final = msgspec.json.Decoder(list[str | int])


def state_key(key: KeyId) -> bytes:
    return _ENCODER.encode(("k", *key))


def held_key(key: KeyId, offset: int) -> bytes:
    return _ENCODER.encode(("h", *key, offset))


def encode_state(state: KeyState) -> bytes:
    return _ENCODER.encode(state)


def encode_held(delivery: DeliveryRecord) -> bytes:
    return encode(delivery)


@functools.lru_cache(maxsize=1024)
def _getter(path: str) -> Getter:
    return getter(parse(path))


def key_of(event: Event, path: str) -> str | None:
    """The event's ordering key at `path` (validated when the subscription was saved): a
    non-empty string or a number; None when the event has none."""
    value = _getter(path)(event)
    if value is MISSING or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text[:MAX_KEY_CHARS] if text else None


# Where a held delivery's copy is in the ordering topic: its offset, or, until the broker has
# acknowledged the copy, the future of that offset.
Copy = int | asyncio.Future[int]


class PartitionKeys:
    """One partition's keys, as its owner holds them: read from the ordering topic when the
    partition is assigned, then kept up to date by the owner's own writes. Held deliveries
    are known by where their copies are, never by their contents: a key that waits for days
    costs its owner a few bytes per held delivery."""

    def __init__(self) -> None:
        self.states: dict[KeyId, KeyState] = {}
        # The keys that wait, kept with the states (put, forget): what the gauges count and
        # what the sweep looks at, without a walk over every key.
        self.waiting: set[KeyId] = set()
        # Per key, its held deliveries in source order: deliveries-topic offset → its copy.
        self.held: dict[KeyId, dict[int, Copy]] = {}
        self.unreadable = 0

    def fold(self, key: bytes | None, value: bytes | None, at: int) -> None:
        """Apply one record of the ordering topic (at offset `at`), in topic order. Never
        raises: a record it cannot read is counted and skipped (only this service writes the
        topic)."""
        try:
            match _KEY.decode(key or b""):
                case ["k", str(sub), str(name)]:
                    self._fold_state((sub, name), value)
                case ["h", str(sub), str(name), int(offset)]:
                    self._fold_held((sub, name), offset, None if value is None else at)
                case _:
                    self.unreadable += 1
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unreadable += 1

    def _fold_state(self, key: KeyId, value: bytes | None) -> None:
        if value is None:
            self.forget(key)
        else:
            self.put(key, _STATE.decode(value))

    def put(self, key: KeyId, state: KeyState) -> None:
        self.states[key] = state
        if state.waiting:
            self.waiting.add(key)
        else:
            self.waiting.discard(key)

    def forget(self, key: KeyId) -> None:
        self.states.pop(key, None)
        self.waiting.discard(key)

    def _fold_held(self, key: KeyId, offset: int, at: int | None) -> None:
        if at is None:
            self.release(key, offset)
        else:
            self.hold(key, offset, at)

    def hold(self, key: KeyId, offset: int, copy: Copy) -> None:
        held = self.held.setdefault(key, {})
        if held and offset < next(reversed(held)):
            # Written out of offset order (never by this service): kept in source order.
            self.held[key] = dict(sorted({**held, offset: copy}.items()))
        else:
            held[offset] = copy

    def release(self, key: KeyId, offset: int) -> None:
        held = self.held.get(key)
        if held is not None:
            held.pop(offset, None)
            if not held:
                del self.held[key]

    def is_held(self, key: KeyId, offset: int) -> bool:
        return offset in self.held.get(key, ())

    def held_count(self) -> int:
        return sum(len(h) for h in self.held.values())

    def waiting_keys(self) -> int:
        return sum(1 for s in self.states.values() if s.waiting)
