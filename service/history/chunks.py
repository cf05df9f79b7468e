"""Records of the attempts topic as the history store takes them: each record's JSON array of
attempts (or of routing decisions) as it is, checked here and unpacked by PostgreSQL
(service/history/writes.py).

This process validates a record by decoding it (an invalid one is the caller's to skip) and
learns from it the UTC days its rows fall on, for their partitions; it does not bind a row's
columns. Two things PostgreSQL would refuse for a whole batch are mended here, on the rare
record that has them: text holding a NUL (which text columns refuse) loses it, and a row whose
time no timestamp can hold is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Protocol, TypeVar

import msgspec

# A row's time must be a day PostgreSQL and Python both hold: 1970 to 9999.
EARLIEST: Final = 0.0
LATEST: Final = 253_402_300_800.0
_SECONDS_PER_DAY: Final = 86_400
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# How JSON spells a NUL inside a string: msgspec escapes it so, and always so.
_NUL_ESCAPE: Final = b"\\u0000"
_JSON: Final = msgspec.json.Encoder()
_ELEMENTS: Final = msgspec.json.Decoder(list[msgspec.Raw])


class Stamped(Protocol):
    @property
    def at(self) -> float: ...


S = TypeVar("S", bound=Stamped)


@dataclass(frozen=True, slots=True)
class Chunk:
    value: bytes  # a JSON array, as the topic holds it (or mended, see the module)
    rows: int
    days: frozenset[date]


@dataclass(frozen=True, slots=True)
class Checked:
    chunk: Chunk
    refused: int  # rows left out for a time out of range


def check(value: bytes, decoder: msgspec.json.Decoder[list[S]]) -> Checked:
    """The record as a chunk; raises msgspec.DecodeError (or ValidationError) for a record
    that is not an array of what `decoder` decodes."""
    rows = decoder.decode(value)
    ats = [r.at for r in rows]
    refused = 0
    if ats and (min(ats) < EARLIEST or max(ats) >= LATEST):
        kept = [r for r in rows if EARLIEST <= r.at < LATEST]
        refused = len(rows) - len(kept)
        value = _JSON.encode(kept)
        ats = [r.at for r in kept]
    if _NUL_ESCAPE in value:
        value = _JSON.encode(_without_nul(msgspec.json.decode(value)))
    days = frozenset(
        date.fromordinal(_EPOCH_ORDINAL + d) for d in {int(a // _SECONDS_PER_DAY) for a in ats}
    )
    return Checked(Chunk(value, len(ats), days), refused)


def each_row(chunk: Chunk, decoder: msgspec.json.Decoder[list[S]]) -> list[Chunk]:
    """The chunk's rows, a chunk each: for storing those of a refused batch that the store
    takes."""
    return [check(b"[" + bytes(raw) + b"]", decoder).chunk for raw in _ELEMENTS.decode(chunk.value)]


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    return value
