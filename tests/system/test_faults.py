"""The fault-injection suite, short (docs/reliability.md; `make faults` runs it at full size).

Each group of scenarios runs the service as processes against its own broker behind the
fault proxy; each scenario, under a steady stream of events of its own, accounts for every
one of them at the endpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.faults.harness import SHORT, Scenario, run_group
from tools.faults.report import table
from tools.faults.scenarios import short_groups

GROUPS = short_groups()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("group", GROUPS, ids=["+".join(s.key for s in g) for g in GROUPS])
async def test_nothing_is_lost_and_every_replica_recovers(
    group: list[Scenario], tmp_path: Path
) -> None:
    reports = await run_group(group, SHORT, tmp_path)
    print(table(reports))  # shown with -s, and on failure
    assert len(reports) == len(group)
    for report in reports:
        name = report.scenario
        assert report.sent > 0, name
        assert report.lost == 0, (
            f"{name}: {report.lost} of {report.sent} never delivered; logs: {tmp_path}"
        )
        assert report.stayed_up, f"{name}: a replica exited that nobody stopped"
        assert report.ready_again, f"{name}: a replica did not report ready after the fault"
        assert report.checks_ok, (name, report.checks)
        if report.lookups is not None:
            # A caller always hears: an answer or a clear status, never silence.
            assert report.lookups.missing == 0, (name, report.lookups)
