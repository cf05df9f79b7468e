"""A service process's CPU and delivery attempts, every half second, in each benchmark run.

    BENCH_CPU_SERIES_DIR=/tmp/cs PYTHONPATH=bench/cpu_series .venv/bin/python -m bench.e2e \\
        --events 40000 --repeats 1 --loops uvloop --shapes history

Python imports `sitecustomize` at start from the path; each `service.cli` process then writes,
from a thread of its own, a line every 0.5 s to `$BENCH_CPU_SERIES_DIR` (default: the system's
temporary directory) as `switchboard-cpu-series-<pid>.txt`: the seconds since it started, the
share of a core it used over the half second (`time.process_time()`, this thread's own reads
included, a few µs each), the delivery attempts made (`switchboard_delivery_attempts`) and
the CPU per attempt. Whether a drain's cost per delivery holds from its start to its end, and
what a paced rate costs after it.
"""

import os
import sys
import tempfile
import threading
import time

if "service.cli" in " ".join(sys.orig_argv):
    # The service imports its metrics module within this long of its start.
    _SETTLE_SECONDS = 1.5
    _EVERY_SECONDS = 0.5

    def _attempts() -> float:
        metrics = sys.modules["service.observability.metrics"]
        values: list[float] = [
            sample.value
            for family in metrics.DELIVERY_ATTEMPTS.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        ]
        return sum(values)

    def _series() -> None:
        directory = os.environ.get("BENCH_CPU_SERIES_DIR", tempfile.gettempdir())
        path = os.path.join(directory, f"switchboard-cpu-series-{os.getpid()}.txt")
        time.sleep(_SETTLE_SECONDS)
        started, cpu, attempts = time.monotonic(), time.process_time(), _attempts()
        with open(path, "w") as out:
            out.write("second core attempts us_per_attempt\n")
            while True:
                time.sleep(_EVERY_SECONDS)
                now_cpu, now_attempts = time.process_time(), _attempts()
                used, made = now_cpu - cpu, now_attempts - attempts
                per = f"{used * 1e6 / made:.0f}" if made else "-"
                at = time.monotonic() - started + _SETTLE_SECONDS
                out.write(f"{at:6.1f} {used / _EVERY_SECONDS:5.2f} {made:8.0f} {per}\n")
                out.flush()
                cpu, attempts = now_cpu, now_attempts

    threading.Thread(target=_series, name="bench-cpu-series", daemon=True).start()
