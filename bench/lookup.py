"""Pre-call lookup benchmark: what Switchboard adds to the time a caller waits for an answer.

One request at a time (a caller waiting), against an in-process endpoint that answers JSON at
once. The reference, measured in the same run on the same endpoint: the same aiohttp client
posting the same body directly. The added latency is the lookup's round trip (produce the
request, Switchboard reads it, calls the endpoint, produces the reply, the caller reads it)
minus the direct call. The test broker holds every fetch to its max wait, so the figure
depends on SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS on both sides; it is reported with it.

    .venv/bin/python -m bench.lookup [--requests 300] [--fetch-wait-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp
import msgspec
import orjson
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import RESULTS, create_topics, percentile, write_subscription
from bench.e2e import service_env
from service.catalog.entries import BY_TYPE
from service.delivery.netguard import AddressPolicy
from service.lookups.protocol import CORRELATION_HEADER, REPLY_TOPIC_HEADER
from service.subscriptions.model import SubscriptionCreate, new_subscription
from tools.tansu import TansuBroker

ANSWER = {"name": "Jane Doe", "company": "Acme", "vip": True, "next_appointment": "2026-11-27"}


async def endpoint() -> tuple[web.AppRunner, str]:
    async def who(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(ANSWER)

    app = web.Application()
    app.router.add_post("/who", who)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/who"


def request_value(n: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"evt_lookup_{n}_{uuid.uuid4().hex[:8]}",
            "source": "/voice/telephony",
            "type": "call.inbound",
            "tenantid": "bench",
            "data": BY_TYPE["call.inbound"].sample,
        }
    )


async def direct(url: str, n: int) -> list[float]:
    body = orjson.dumps({"number": BY_TYPE["call.inbound"].sample["call"]["from"]})
    times = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            started = time.perf_counter()
            async with http.post(url, data=body) as resp:
                await resp.read()
            times.append(time.perf_counter() - started)
    return times


async def lookups(
    bootstrap: str, topic: str, replies: str, n: int, fetch_wait_ms: int
) -> tuple[list[float], int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0)
    consumer = AIOKafkaConsumer(
        replies,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_wait_ms,
    )
    await producer.start()
    await consumer.start()
    times, answered = [], 0
    try:
        await consumer.seek_to_end()
        for i in range(n):
            correlation = f"c-{i}"
            started = time.perf_counter()
            await producer.send_and_wait(topic, request_value(i), headers=[
                (REPLY_TOPIC_HEADER, replies.encode()),
                (CORRELATION_HEADER, correlation.encode())])  # fmt: skip
            while True:
                record = await asyncio.wait_for(consumer.getone(), 10)
                if record.key == correlation.encode():
                    break
            times.append(time.perf_counter() - started)
            answered += orjson.loads(record.value)["status"] == "answered"
    finally:
        await consumer.stop()
        await producer.stop()
    return times, answered


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with TansuBroker() as broker:
        runner, url = await endpoint()
        try:
            fields = {"tenant_id": "bench", "name": "caller id", "url": url,
                      "event_types": ["call.inbound"],
                      "body_template": {"number": "{{data.call.from}}"}}  # fmt: skip
            sub = new_subscription(msgspec.convert(fields, SubscriptionCreate),
                                   AddressPolicy(allow_private=True, allow_http=True))  # fmt: skip
            subs = "bench.lookup.subscriptions"
            await write_subscription(broker.bootstrap, subs, sub)
            topic, replies = "bench.lookup.requests", "bench.lookup.replies"
            await create_topics(broker.bootstrap, [(topic, 1, {}), (replies, 1, {})])
            env = service_env(broker.bootstrap, "uvloop", topic, "bench-lookup", subs)
            env["SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS"] = str(args.fetch_wait_ms)
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli",
                                                        env=env)  # fmt: skip
            try:
                wait = args.fetch_wait_ms
                await lookups(broker.bootstrap, topic, replies, 5, wait)  # warm: group joined
                reference = await direct(url, args.requests)
                measured, answered = await lookups(
                    broker.bootstrap, topic, replies, args.requests, wait
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 60)
        finally:
            await runner.cleanup()
    ms = [1000 * t for t in measured]
    ref = [1000 * t for t in reference]
    return {
        "requests": args.requests,
        "answered": answered,
        "fetch_wait_ms": args.fetch_wait_ms,
        "direct_p50_ms": statistics.median(ref),
        "direct_p99_ms": percentile(ref, 0.99),
        "lookup_p50_ms": statistics.median(ms),
        "lookup_p99_ms": percentile(ms, 0.99),
        "added_p50_ms": statistics.median(ms) - statistics.median(ref),
        "added_p99_ms": percentile(ms, 0.99) - percentile(ref, 0.99),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    result = uvloop.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"lookup-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(
        f"{result['answered']}/{result['requests']} answered; fetch wait "
        f"{result['fetch_wait_ms']} ms; direct call p50 {result['direct_p50_ms']:.1f} ms, "
        f"p99 {result['direct_p99_ms']:.1f} ms; lookup round trip p50 "
        f"{result['lookup_p50_ms']:.1f} ms, p99 {result['lookup_p99_ms']:.1f} ms; added "
        f"p50 {result['added_p50_ms']:.1f} ms, p99 {result['added_p99_ms']:.1f} ms"
    )
