"""`make faults`: every scenario at full size, one after another, each on a broker and fleet
of its own; a Markdown table of the figures on stdout and in bench/results/faults-<time>.md.
`--short` runs `make test`'s version instead: its size, and its groups of scenarios sharing a
broker and fleet (`scenarios.SHORT_GROUPS`).

    .venv/bin/python -m tools.faults [--short] [--only cut-long,dns] [--lookups-on own|events]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tools.faults.harness import FULL, SHORT, Report, run_group
from tools.faults.report import table
from tools.faults.scenarios import all_scenarios, short_groups

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


async def main(args: argparse.Namespace) -> list[Report]:
    size = SHORT if args.short else FULL
    wanted = set(args.only.split(",")) if args.only else None
    logs = Path(tempfile.mkdtemp(prefix="switchboard-faults-"))
    groups = short_groups() if args.short else [[s] for s in all_scenarios()]
    reports = []
    for group in groups:
        chosen = [s for s in group if wanted is None or s.key in wanted]
        if not chosen:
            continue
        name = "+".join(s.key for s in chosen)
        started = time.monotonic()
        done = await run_group(chosen, size, logs / name, lookup_topic=args.lookups_on == "own")
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        print("\n".join(table(done).splitlines()[2:]), file=sys.stderr)
        reports += done
    print(f"logs: {logs}", file=sys.stderr)
    return reports


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the size `make test` runs")
    parser.add_argument("--only", help="comma-separated scenario keys")
    parser.add_argument(
        "--lookups-on", choices=("own", "events"), default="own",
        help="lookup requests on a topic of their own (the default) or on the event topic",
    )  # fmt: skip
    results = asyncio.run(main(parser.parse_args()))
    text = table(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"faults-{time.strftime('%Y%m%dT%H%M%S')}.md").write_text(text + "\n")
    print(text)
    sys.exit(0 if all(r.ok for r in results) else 1)
