"""How the engine's consumers fetch and stay in their groups: a read model's consumer fetches
less often than those on the delivery path, never more often than they do; a member's
rebalance timeout covers its revoke's grace."""

from __future__ import annotations

from consumers.engine.clients import (
    READ_MODEL_FETCH_MIN_BYTES,
    READ_MODEL_FETCH_WAIT_MS,
    fetch_kwargs,
    membership_kwargs,
    new_group_consumer,
)
from service.config import load_settings

TOKEN = {"SWITCHBOARD_ADMIN_TOKEN": "t" * 20}


def test_a_read_model_consumer_waits_for_more_per_fetch() -> None:
    settings = load_settings({**TOKEN, "SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS": "20"})
    delivery = fetch_kwargs(settings)
    assert delivery["fetch_max_wait_ms"] == 20
    assert "fetch_min_bytes" not in delivery  # aiokafka's 1 byte: answered as soon as any
    read_model = fetch_kwargs(settings, read_model=True)
    assert read_model["fetch_max_wait_ms"] == READ_MODEL_FETCH_WAIT_MS
    assert read_model["fetch_min_bytes"] == READ_MODEL_FETCH_MIN_BYTES
    assert {k: v for k, v in read_model.items() if k not in ("fetch_max_wait_ms",
            "fetch_min_bytes")} == {k: v for k, v in delivery.items()
                                    if k != "fetch_max_wait_ms"}  # fmt: skip


def test_a_longer_configured_wait_applies_to_a_read_model_too() -> None:
    settings = load_settings({**TOKEN, "SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS": "1000"})
    assert fetch_kwargs(settings, read_model=True)["fetch_max_wait_ms"] == 1000


async def test_a_member_may_finish_its_revoke_grace_before_the_group_drops_it() -> None:
    settings = load_settings({**TOKEN, "SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS": "3000",
                              "SWITCHBOARD_REBALANCE_GRACE_SECONDS": "5"})  # fmt: skip
    kwargs = membership_kwargs(settings)
    assert kwargs["session_timeout_ms"] == 3000
    # Longer than the grace: the group waits for the revoke to end, not for the session.
    assert kwargs["rebalance_timeout_ms"] == 8000
    consumer = new_group_consumer(settings, "g")
    try:
        assert consumer._rebalance_timeout_ms == 8000
    finally:
        await consumer.stop()
