"""The demo's summary accounts for every event it produced."""

from __future__ import annotations

from typing import Any

from tools.demo_summary import account


def decision(outcome: str, matched: int = 0) -> dict[str, Any]:
    return {"outcome": outcome, "matched": [f"sub_{i}" for i in range(matched)]}


def test_every_event_is_accounted_for_and_deliveries_add_up() -> None:
    produced = {f"e{i}": tenant for i, tenant in enumerate(["acme"] * 5 + ["initech"] * 3)}
    routing: dict[str, dict[str, Any] | None] = {
        "e0": decision("matched", 1),
        "e1": decision("matched", 2),
        "e2": decision("matched", 2),
        "e3": decision("filtered"),
        "e4": decision("no_subscription"),
        "e5": decision("no_subscription"),
        "e6": decision("no_subscription"),
        "e7": None,
    }
    acc = account(produced, routing, broken=2)
    assert acc.expected_deliveries == 5
    text = "\n".join(acc.lines(received=5, verified=5))
    assert "8 events produced, and 2 broken records" in text
    assert "1 matched 1 subscription -> 1 deliveries" in text
    assert "2 matched 2 subscriptions -> 4 deliveries" in text
    assert "3 matched no subscription (2 of initech, 1 of acme)" in text
    assert "1 were dropped by a subscription's filter" in text
    assert "1 have no routing decision yet" in text
    assert "5 deliveries expected, 5 received, 5 with a valid signature" in text
    assert not acc.complete(received=5, verified=5)  # e7 is not accounted for
    routing["e7"] = decision("no_subscription")
    assert account(produced, routing, broken=2).complete(received=5, verified=5)
    assert not account(produced, routing, broken=2).complete(received=4, verified=4)


def test_nothing_produced_is_not_a_success() -> None:
    assert not account({}, {}, broken=0).complete(received=0, verified=0)
