"""The demo's closing summary: every produced event accounted for, from its routing decision.

"82 events made 71 deliveries" is a riddle; this says how: how many events matched one
subscription or several, how many matched none (and of which tenants), how many a filter
or a strict schema kept back, and so how many deliveries to expect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Accounting:
    produced: int = 0
    broken: int = 0  # not JSON: quarantined without an id to ask about
    by_matches: Counter[int] = field(default_factory=Counter)  # subscriptions matched: events
    unrouted_by_tenant: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    schema_refused: int = 0
    quarantined: int = 0
    undecided: int = 0  # no decision read back (yet)

    @property
    def expected_deliveries(self) -> int:
        return sum(matches * events for matches, events in self.by_matches.items())

    def lines(self, received: int, verified: int) -> list[str]:
        out = [f"{self.produced} events produced, and {self.broken} broken records "
               "(not JSON: quarantined, with no id to look up)"]  # fmt: skip
        for matches, events in sorted(self.by_matches.items()):
            if matches:
                out.append(f"  {events} matched {matches} subscription{'s' * (matches > 1)}"
                           f" -> {events * matches} deliveries")  # fmt: skip
        unrouted = sum(self.unrouted_by_tenant.values())
        if unrouted:
            tenants = ", ".join(f"{n} of {t}" for t, n in self.unrouted_by_tenant.most_common())
            out.append(f"  {unrouted} matched no subscription ({tenants})")
        if self.filtered:
            out.append(f"  {self.filtered} were dropped by a subscription's filter")
        if self.schema_refused:
            out.append(f"  {self.schema_refused} were refused by a strict schema (dead letters)")
        if self.quarantined:
            out.append(f"  {self.quarantined} were quarantined as invalid events")
        if self.undecided:
            out.append(f"  {self.undecided} have no routing decision yet (the service lagged)")
        out.append(f"{self.expected_deliveries} deliveries expected, {received} received, "
                   f"{verified} with a valid signature")  # fmt: skip
        return out

    def complete(self, received: int, verified: int) -> bool:
        """Every event decided, every expected delivery received, every signature valid."""
        return (
            self.produced > 0
            and self.undecided == 0
            and received == self.expected_deliveries
            and verified == received
        )


def account(
    produced: dict[str, str], routing: dict[str, dict[str, Any] | None], broken: int
) -> Accounting:
    """`produced` maps event id to tenant; `routing` event id to its decision (or None)."""
    acc = Accounting(produced=len(produced), broken=broken)
    for event_id, tenant in produced.items():
        decision = routing.get(event_id)
        if decision is None:
            acc.undecided += 1
            continue
        outcome = decision["outcome"]
        if outcome == "matched":
            acc.by_matches[len(decision["matched"])] += 1
        elif outcome == "no_subscription":
            acc.unrouted_by_tenant[tenant] += 1
        elif outcome == "filtered":
            acc.filtered += 1
        elif outcome == "schema_refused":
            acc.schema_refused += 1
        else:
            acc.quarantined += 1
    return acc
