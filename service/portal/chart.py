"""The stats chart: success rate and latency over 24 hours and 7 days, drawn on the server as
inline SVG (templates/_chart.html; no script, no chart library), with each number in text
beside its bar for screen readers and for anyone who would rather read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

WINDOWS: Final = (("24h", "last 24 hours"), ("7d", "last 7 days"))
WIDTH: Final = 560
BAR: Final = 18
LABEL: Final = 120
# Room right of the longest bar for its value.
VALUE_ROOM: Final = 70


def _bar(y: int, label: str, fraction: float, text: str, css: str) -> dict[str, Any]:
    length = max(0.0, min(1.0, fraction)) * (WIDTH - LABEL - VALUE_ROOM)
    return {"y": y, "label": label, "length": round(length, 1), "text": text, "css": css}


def stats_chart(windows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per window, bars for the success rate (of 100%) and the p50 and p95 latency (of the
    slowest shown); the SVG's layout in user units."""
    slowest = max(
        [windows[name]["latency_ms"][q] or 0.0 for name, _ in WINDOWS for q in ("p50", "p95")]
        + [1.0]
    )
    groups = []
    y = 0
    for name, title in WINDOWS:
        w = windows[name]
        group: dict[str, Any] = {"y": y + 14, "title": f"{title}: {w['attempts']} attempts"}
        y += 22
        rate = w["success_rate"]
        text = "no attempts" if rate is None else f"{rate * 100:.1f}%"
        bars = [_bar(y, "success rate", rate or 0.0, text, "bar-ok")]
        y += BAR + 6
        for q in ("p50", "p95"):
            ms = w["latency_ms"][q]
            text = "none" if ms is None else f"{ms:.0f} ms"
            bars.append(_bar(y, f"latency {q}", (ms or 0.0) / slowest, text, "bar-latency"))
            y += BAR + 6
        groups.append({**group, "bars": bars})
        y += 10
    return {"groups": groups, "width": WIDTH, "height": y, "label_x": LABEL, "bar": BAR}
