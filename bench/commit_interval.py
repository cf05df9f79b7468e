"""Commit interval against duplicates after a crash: SIGKILL under a steady stream, restart.

For each commit interval: a fresh service on a steady stream of --rate events/s to a fast
receiver; after --kill-after seconds it is killed with SIGKILL and started again, and the
receiver counts the deliveries it got twice (the same webhook-id). Everything read since the
last commit is delivered again, so duplicates grow with the interval; commits cost one request
per consumer group per interval.

    .venv/bin/python -m bench.commit_interval [--intervals 0.2,0.5,1,2] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import statistics
import sys
import time
from collections import Counter
from typing import Any

import msgspec
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from bench.common import RESULTS, create_topics, write_subscription
from bench.e2e import PARTITIONS, service_env
from service.delivery.netguard import AddressPolicy
from service.subscriptions.model import SubscriptionCreate, new_subscription
from tools.receiver import start_site, wait_until
from tools.tansu import TansuBroker
from tools.voice_events import EVENT_TYPES, cloud_event


class Counting:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    async def hook(self, request: web.Request) -> web.Response:
        self.seen[request.headers["webhook-id"]] += 1
        return web.Response(status=204)


async def stream(bootstrap: str, topic: str, rate: int, stop: asyncio.Event) -> int:
    rng = random.Random(9)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        while not stop.is_set():
            await producer.send(topic, cloud_event(rng.choice(EVENT_TYPES), "bench", rng))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def trial(broker: TansuBroker, interval: float, args: argparse.Namespace) -> dict[str, Any]:
    name = f"ci.{interval:g}"
    counting = Counting()
    app = web.Application()
    app.router.add_post("/hook", counting.hook)
    runner, port = await start_site(app)
    try:
        subs = f"{name}.subscriptions"
        sub = new_subscription(
            msgspec.convert(
                {"tenant_id": "bench", "name": "crm", "url": f"http://127.0.0.1:{port}/hook",
                 "event_types": ["*"], "max_in_flight": 64},
                SubscriptionCreate,
            ),
            AddressPolicy(allow_private=True, allow_http=True),
        )  # fmt: skip
        await write_subscription(broker.bootstrap, subs, sub)
        topic = f"{name}.events"
        await create_topics(broker.bootstrap, [(topic, PARTITIONS, {})])
        env = service_env(broker.bootstrap, "uvloop", topic, f"{name}.group", subs)
        env["SWITCHBOARD_COMMIT_INTERVAL_SECONDS"] = str(interval)
        env["SWITCHBOARD_RETRY_TOPIC_PREFIX"] = f"{name}.retry"
        first = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", env=env)
        stop = asyncio.Event()
        producing = asyncio.create_task(stream(broker.bootstrap, topic, args.rate, stop))
        await wait_until(lambda: sum(counting.seen.values()) > 0, within=60)
        await asyncio.sleep(args.kill_after)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        stop.set()
        sent = await producing
        second = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.cli", env=env)
        try:
            await wait_until(lambda: len(counting.seen) >= sent, within=120)
        finally:
            second.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second.wait(), 30)
        duplicates = sum(n - 1 for n in counting.seen.values())
        return {"interval": interval, "sent": sent, "delivered": len(counting.seen),
                "duplicates": duplicates}  # fmt: skip
    finally:
        await runner.cleanup()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"rate": args.rate, "kill_after": args.kill_after, "trials": []}
    with TansuBroker() as broker:
        for _ in range(args.repeats):
            for interval in (float(x) for x in args.intervals.split(",")):
                results["trials"].append(await trial(broker, interval, args))
    return results


def report(res: dict[str, Any]) -> str:
    by: dict[float, list[int]] = {}
    for t in res["trials"]:
        by.setdefault(t["interval"], []).append(t["duplicates"])
    lines = [f"{res['rate']} events/s, SIGKILL {res['kill_after']} s in, then a restart:"]
    for interval, dups in sorted(by.items()):
        lost = [
            t for t in res["trials"] if t["interval"] == interval and t["delivered"] < t["sent"]
        ]
        median = statistics.median(dups)
        runs = ", ".join(map(str, dups))
        lines.append(
            f"  commit every {interval:g} s: duplicates median {median:.0f} (runs {runs}); "
            f"lost in {len(lost)} runs"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intervals", default="0.2,0.5,1,2")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--kill-after", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1)
    result = asyncio.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"commit-interval-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(report(result))
