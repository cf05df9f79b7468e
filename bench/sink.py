"""A fast webhook receiver for the benchmark, run as its own process.

Answers 204 to every POST and keeps: the count, first and last arrival, and the delay from
each body's `timestamp` (the event time) to its arrival. GET /stats reads them, POST /reset
clears them. POST /neighbour answers 204 at once and POST /slow after `--slow-delay` seconds,
neither counted: the other endpoints of the isolation benchmark. POST /v1/traces is an OTLP/HTTP
collector that counts the spans it is sent and discards them (GET /traces reads the count).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime

import orjson
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Sink:
    def __init__(self) -> None:
        self.reset()
        self.spans = 0
        self.exports = 0

    def reset(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.delays: list[float] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.time()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        self.delays.append(now - datetime.fromisoformat(body["timestamp"]).timestamp())
        return web.Response(status=204)

    async def neighbour(self, _request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(request.app["slow_delay"])
        return web.Response(status=204)

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        self.exports += 1
        self.spans += sum(len(scope.spans) for rs in export.resource_spans
                          for scope in rs.scope_spans)  # fmt: skip
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def trace_stats(self, _request: web.Request) -> web.Response:
        data = {"exports": self.exports, "spans": self.spans}
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def stats(self, _request: web.Request) -> web.Response:
        # Polled while a run is under way: kept small so the polling costs the sink nothing.
        data = {"count": self.count, "first": self.first, "last": self.last}
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def get_delays(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.delays), content_type="application/json")

    async def do_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-delay", type=float, default=0.0)
    args = parser.parse_args()
    sink = Sink()
    app = web.Application()
    app["slow_delay"] = args.slow_delay
    app.router.add_post("/hook", sink.hook)
    app.router.add_post("/neighbour", sink.neighbour)
    app.router.add_post("/slow", sink.slow)
    app.router.add_get("/stats", sink.stats)
    app.router.add_get("/delays", sink.get_delays)
    app.router.add_post("/reset", sink.do_reset)
    app.router.add_post("/v1/traces", sink.traces)
    app.router.add_get("/traces", sink.trace_stats)
    import uvloop  # noqa: PLC0415

    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())  # fmt: skip


if __name__ == "__main__":
    main()
