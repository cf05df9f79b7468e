"""Counts each consumer's fetch requests in every Switchboard process a benchmark starts.

    PYTHONPATH=bench/fetch_rounds .venv/bin/python -m bench.e2e --events 30000 --repeats 1 ...

Python imports `sitecustomize` at start from the path; each `service.cli` process then counts,
per consumer (named by the topics it reads), the fetch requests aiokafka builds and the
partitions they name, and at exit writes requests per second and partitions per request to
`$BENCH_FETCH_ROUNDS_DIR` (default: the system's temporary directory) as
`switchboard-fetch-rounds-<pid>.txt`. Over the process's life, start and latency phase
included: compare runs of the same benchmark, not absolute rates. Then, second by second
from the process's start, each consumer's requests and the partitions they named in all:
what a drain's first seconds fetch, against the rest.
"""

import atexit
import collections
import os
import sys
import tempfile
import time

if "service.cli" in " ".join(sys.orig_argv):
    from aiokafka.consumer import fetcher

    _requests: collections.Counter[str] = collections.Counter()
    _partitions: collections.Counter[str] = collections.Counter()
    # (second since the start, consumer): [requests, partitions named]
    _each_second: dict[tuple[int, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    _actions = fetcher.Fetcher._get_actions_per_node
    _started = time.monotonic()

    def _counted(self, assignment):  # type: ignore[no-untyped-def]
        actions = _actions(self, assignment)
        if actions[0]:
            consumer = ",".join(sorted({tp.topic for tp in assignment.tps}))
            second = _each_second[(int(time.monotonic() - _started), consumer)]
            for _node, request in actions[0]:
                named = sum(len(parts) for _topic, parts in request.topics)
                _requests[consumer] += 1
                _partitions[consumer] += named
                second[0] += 1
                second[1] += named
        return actions

    fetcher.Fetcher._get_actions_per_node = _counted

    def _write() -> None:
        seconds = time.monotonic() - _started
        directory = os.environ.get("BENCH_FETCH_ROUNDS_DIR", tempfile.gettempdir())
        path = os.path.join(directory, f"switchboard-fetch-rounds-{os.getpid()}.txt")
        with open(path, "w") as out:
            for consumer, count in _requests.most_common():
                out.write(f"{count / seconds:7.1f} requests/s {_partitions[consumer] / count:6.1f} "
                          f"partitions each  {consumer}\n")  # fmt: skip
            out.write("\nsecond requests partitions consumer\n")
            for (at, consumer), (count, named) in sorted(_each_second.items()):
                out.write(f"{at:6d} {count:8d} {named:10d} {consumer}\n")

    atexit.register(_write)
