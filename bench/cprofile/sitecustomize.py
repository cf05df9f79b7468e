"""Profiles every Switchboard process a benchmark starts, with cProfile, from start to exit.

    PYTHONPATH=bench/cprofile .venv/bin/python -m bench.e2e --events 30000 --repeats 1 ...

Python imports `sitecustomize` at start from the path; each `service.cli` process then writes
its profile to `$BENCH_CPROFILE_DIR` (default: the system's temporary directory) as
`switchboard-<pid>.prof`, for `python -m pstats`. The service runs two to three times slower
under it: compare call counts and the shares of time, not rates.
"""

import atexit
import cProfile
import os
import sys
import tempfile

if "service.cli" in " ".join(sys.orig_argv):
    _profile = cProfile.Profile()
    _profile.enable()

    def _write() -> None:
        _profile.disable()
        directory = os.environ.get("BENCH_CPROFILE_DIR", tempfile.gettempdir())
        _profile.dump_stats(os.path.join(directory, f"switchboard-{os.getpid()}.prof"))

    atexit.register(_write)
