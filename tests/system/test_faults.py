"""The fault-injection suite, short (docs/reliability.md; `make faults` runs it at full size).

Each scenario runs the service as processes against its own broker behind the fault proxy,
under a steady stream of events, and accounts for every event at the endpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.faults.harness import SHORT, Scenario, run
from tools.faults.report import table
from tools.faults.scenarios import all_scenarios

SCENARIOS = all_scenarios()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.key for s in SCENARIOS])
async def test_nothing_is_lost_and_every_replica_recovers(
    scenario: Scenario, tmp_path: Path
) -> None:
    report = await run(scenario, SHORT, tmp_path)
    print(table([report]))  # shown with -s, and on failure
    assert report.sent > 0
    assert report.lost == 0, f"{report.lost} of {report.sent} never delivered; logs: {tmp_path}"
    assert report.stayed_up, "a replica exited that nobody stopped"
    assert report.ready_again, "a replica did not report ready after the fault"
    assert report.checks_ok, report.checks
    if report.lookups is not None:
        # A caller always hears: an answer or a clear status, never silence.
        assert report.lookups.missing == 0, report.lookups
