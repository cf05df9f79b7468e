"""The soak's figures: growth over the last 20 minutes, bounds, and the plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from tools.faults.soak import Sample

# The target: flat after warm-up, judged over the run's last 20 minutes (issue #16).
WINDOW_SECONDS: Final = 20 * 60
# Either end of the window is the median of this many samples (one minute), so that one
# garbage collection or one burst of retries does not decide the figure.
EDGE: Final = 6
GROWTH_LIMIT: Final = 0.05


class _Timed(Protocol):
    t: float


def window(samples: Sequence[Sample]) -> list[Sample]:
    """The last 20 minutes, or the second half of a shorter run."""
    if not samples:
        return []
    end = samples[-1].t
    span = WINDOW_SECONDS if end >= 2 * WINDOW_SECONDS / 1.5 else end / 2
    return [s for s in samples if s.t >= end - span]


def growth(values: Sequence[float]) -> float:
    """Relative change from the window's first minute to its last (medians)."""
    first = statistics.median(values[:EDGE])
    last = statistics.median(values[-EDGE:])
    return (last - first) / first if first else 0.0


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    last = window(samples)
    if len(last) < 2 * EDGE:
        return {"samples": len(samples), "note": "too short to judge"}
    summary: dict[str, Any] = {
        "samples": len(samples),
        "window_s": round(last[-1].t - last[0].t),
    }
    for field in ("rss_mib", "open_fds", "tasks"):
        values = [getattr(s, field) for s in last]
        summary[f"{field}_start"] = round(statistics.median(values[:EDGE]), 1)
        summary[f"{field}_end"] = round(statistics.median(values[-EDGE:]), 1)
        summary[f"{field}_growth"] = round(growth(values), 4)
    for field in ("commit_lag", "delivery_lag", "retry_depth"):
        values = [getattr(s, field) for s in samples]
        summary[f"{field}_max"] = max(values)
        summary[f"{field}_max_last_window"] = max(getattr(s, field) for s in last)
    summary["flat"] = all(summary[f"{f}_growth"] < GROWTH_LIMIT for f in ("rss_mib", "open_fds"))
    return summary


def write_plot(samples: Sequence[Sample], path: Path, summary: dict[str, Any]) -> None:
    import matplotlib  # noqa: PLC0415 - a development dependency, only for this figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    minutes = [s.t / 60 for s in samples]
    panels = (
        ("rss_mib", "resident memory (MiB)"),
        ("open_fds", "open file descriptors"),
        ("tasks", "asyncio tasks"),
        ("retry_depth", "retry topics depth (records)"),
        ("commit_lag", "event topic commit lag (records)"),
        ("delivery_lag", "deliveries topic commit lag (records)"),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 13), sharex=True)
    start = window(samples)[0].t / 60 if samples else 0
    for ax, (field, label) in zip(axes, panels, strict=True):
        ax.plot(minutes, [getattr(s, field) for s in samples], linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes (dotted line: start of the judged window)")
    fig.suptitle(
        f"Soak: {summary.get('minutes', '?')} min at {summary.get('rate', '?')} events/s; "
        f"RSS growth {100 * summary.get('rss_mib_growth', 0):.1f}%, "
        f"fds growth {100 * summary.get('open_fds_growth', 0):.1f}% over the window",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
