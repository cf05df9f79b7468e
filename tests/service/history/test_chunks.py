"""Records of the attempts topic checked for the store: what PostgreSQL will unpack is what the
record said, less NULs in text and rows whose time no timestamp holds."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.attempt_log.record import DECODER, ENCODER, AttemptRecord
from service.history.chunks import EARLIEST, LATEST, check, each_row
from service.routing.decision import DECODER as ROUTING_DECODER
from service.routing.decision import ENCODER as ROUTING_ENCODER
from service.routing.decision import Filtered, RoutingDecision

_TEXT = st.text(alphabet=st.sampled_from("ab\x00é"), max_size=6)
_AT = st.one_of(
    st.floats(min_value=EARLIEST, max_value=LATEST, exclude_max=True),
    st.floats(min_value=-1e12, max_value=EARLIEST, exclude_max=True),
    st.floats(min_value=LATEST, max_value=1e13),
)


@st.composite
def attempts(draw: st.DrawFn) -> AttemptRecord:
    return AttemptRecord(
        id=draw(_TEXT), at=draw(_AT), subscription_id="sub_a", tenant_id=draw(_TEXT),
        event_id=draw(_TEXT), event_type="call.ended", webhook_id="msg_1", attempt=1,
        trigger="delivery", method="POST", url=draw(_TEXT), outcome="success", status=200,
        latency_ms=1.0, error=draw(st.none() | _TEXT), response_excerpt=draw(_TEXT),
        call_id=draw(st.none() | _TEXT),
    )  # fmt: skip


def without_nul(record: AttemptRecord) -> AttemptRecord:
    changes = {
        f: v.replace("\x00", "")
        for f in record.__struct_fields__
        if isinstance(v := getattr(record, f), str)
    }
    return msgspec.structs.replace(record, **changes)


@given(st.lists(attempts(), max_size=8))
def test_a_chunk_holds_the_records_rows_less_nuls_and_impossible_times(
    records: list[AttemptRecord],
) -> None:
    checked = check(ENCODER.encode(records), DECODER)
    kept = [without_nul(r) for r in records if EARLIEST <= r.at < LATEST]
    assert DECODER.decode(checked.chunk.value) == kept
    assert b"\\u0000" not in checked.chunk.value
    assert checked.chunk.rows == len(kept)
    assert checked.refused == len(records) - len(kept)
    assert checked.chunk.days == {datetime.fromtimestamp(r.at, UTC).date() for r in kept}
    assert [DECODER.decode(c.value) for c in each_row(checked.chunk, DECODER)] == [
        [r] for r in kept
    ]


def test_decisions_are_checked_the_same_way() -> None:
    decision = RoutingDecision(
        event_id="evt\x001", tenant_id="acme", at=1_764_400_000.5, outcome="filtered",
        filtered=(Filtered("sub\x00a", 0, "data.x", "eq"),),
    )  # fmt: skip
    checked = check(ROUTING_ENCODER.encode([decision]), ROUTING_DECODER)
    assert ROUTING_DECODER.decode(checked.chunk.value) == [
        msgspec.structs.replace(
            decision, event_id="evt1", filtered=(Filtered("suba", 0, "data.x", "eq"),)
        )
    ]


@pytest.mark.parametrize(
    "value",
    [b"", b"{}", b"[1]", b'[{"at": 1}]', b"not json", b'[{"at": 1e999}]'],
    ids=["empty", "object", "number", "incomplete", "garbage", "infinite"],
)
def test_a_record_that_is_not_attempts_is_refused_whole(value: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        check(value, DECODER)
