"""What the cyclic garbage collector costs a service process, and what it finds.

Put this directory first on PYTHONPATH when running a benchmark; every `service.cli` process
it starts then writes, at exit, one line to `bench/results/garbage-<pid>.txt`: collections
per generation, the seconds spent in them, and the process's CPU seconds. With
`GARBAGE_FOUND_AFTER=<seconds>`, the collector keeps what it finds (`gc.DEBUG_SAVEALL`, so the
objects are never freed: a diagnosis, not a measurement of speed), and after that many seconds
the process writes the 30 most common types among it, which names the reference cycles.

    PYTHONPATH=bench/garbage .venv/bin/python -m bench.isolation --events 60000 \\
        --variants alone,limited-shared
"""

from __future__ import annotations

import atexit
import collections
import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results"


class _Timer:
    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._started

    def write(self) -> None:
        seconds = ", ".join(f"{s:.3f}" for s in self.seconds)
        line = (f"collections {self.count} seconds [{seconds}] "
                f"cpu {time.process_time():.2f} threshold {gc.get_threshold()}\n")  # fmt: skip
        (RESULTS / f"garbage-{os.getpid()}.txt").write_text(line)


def _write_garbage() -> None:
    kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
    lines = [f"{n} {kind}" for kind, n in kinds.most_common(30)]
    text = f"garbage objects {len(gc.garbage)}\n" + "\n".join(lines) + "\n"
    (RESULTS / f"garbage-found-{os.getpid()}.txt").write_text(text)


if "service.cli" in sys.orig_argv:
    RESULTS.mkdir(exist_ok=True)
    timer = _Timer()
    gc.callbacks.append(timer)
    atexit.register(timer.write)
    if after := os.environ.get("GARBAGE_FOUND_AFTER"):
        gc.set_debug(gc.DEBUG_SAVEALL)
        dump = threading.Timer(float(after), _write_garbage)
        dump.daemon = True
        dump.start()
