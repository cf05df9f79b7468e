"""The fault suite's figures as a Markdown table (docs/reliability.md holds one)."""

from __future__ import annotations

from collections.abc import Sequence

from tools.faults.harness import Report

HEADER = (
    "| scenario | replicas | sent | delivered | lost | duplicates | fault end → backlog "
    "delivered | stayed up, ready again | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _notes(report: Report) -> str:
    notes = [f"{k}={v}" for k, v in report.checks.items() if not k.endswith("_ok")]
    lookups = report.lookups
    if lookups is not None:
        replies = ", ".join(f"{n} {status}" for status, n in sorted(lookups.replies.items()))
        notes.append(f"lookups: {lookups.sent} made, {replies}, {lookups.unanswered} not "
                     f"within 10 s ({lookups.late} of them later), {lookups.missing} never, "
                     f"slowest timely reply {lookups.slowest_ms / 1000:.1f} s")  # fmt: skip
    failed = [k for k, v in report.checks.items() if k.endswith("_ok") and not v]
    notes += [f"FAILED {k}" for k in failed]
    return "; ".join(notes)


def row(report: Report) -> str:
    recovery = "—" if report.recovery_s is None else f"{report.recovery_s:.1f} s"
    up = (
        "yes"
        if report.stayed_up and report.ready_again
        else (f"stayed up: {report.stayed_up}, ready: {report.ready_again}")
    )
    return (
        f"| {report.scenario} | {report.replicas} | {report.sent} | {report.delivered} | "
        f"{report.lost} | {report.duplicates} | {recovery} | {up} | {_notes(report)} |"
    )


def table(reports: Sequence[Report]) -> str:
    return "\n".join([HEADER, *(row(r) for r in reports)])
