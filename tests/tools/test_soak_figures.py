"""The soak's verdict: growth is judged over the last 20 minutes, edges by their medians."""

from __future__ import annotations

from pathlib import Path

from tools.faults.soak import Sample
from tools.faults.soak_figures import summarize, window, write_plot


def run(minutes: int, rss: float = 100.0, step: float = 0.0, spike_at: float = -1) -> list[Sample]:
    samples = []
    for i in range(minutes * 6):
        t = 10.0 * (i + 1)
        value = rss + step * t / 60 + (500.0 if t == spike_at else 0.0)
        samples.append(Sample(t=t, rss_mib=value, open_fds=50, tasks=90, retry_depth=10,
                              commit_lag=5 + i % 3, delivery_lag=2, delivered=i,
                              sent=i))  # fmt: skip
    return samples


def test_the_window_is_the_last_twenty_minutes_of_a_long_run() -> None:
    samples = run(35)
    last = window(samples)
    assert last[0].t == samples[-1].t - 20 * 60
    assert window(run(10))[0].t == 300  # a short run: its second half


def test_flat_memory_passes_and_a_slow_leak_does_not() -> None:
    assert summarize(run(35))["flat"] is True
    leaking = summarize(run(35, step=0.5))  # half a MiB a minute: 10% over 20 minutes
    assert leaking["flat"] is False
    assert 0.08 < leaking["rss_mib_growth"] < 0.11


def test_one_spike_at_an_edge_does_not_decide_the_verdict() -> None:
    samples = run(35)
    summary = summarize(run(35, spike_at=samples[-1].t))
    assert summary["flat"] is True
    assert summary["commit_lag_max"] == 7


def test_the_plot_is_written(tmp_path: Path) -> None:
    samples = run(3)
    write_plot(samples, tmp_path / "soak.png", summarize(samples))
    assert (tmp_path / "soak.png").read_bytes().startswith(b"\x89PNG")
