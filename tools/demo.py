"""`make demo`: a broker, PostgreSQL, the service, a receiver and a producer of events.

Produces only once the service is ready (its consumer groups have joined), prints each
delivery as it arrives (with its signature checked by the `standardwebhooks` library) until
Ctrl-C or --duration seconds, then the delivery log, stats and a search by call as the admin
API answers them from PostgreSQL (the history store), and a summary that accounts for every
event produced from its routing decision (`GET /v1/events/{id}`, from the store too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tools.demo_summary import account
from tools.postgres import EmbeddedPostgres
from tools.receiver import Received, Receiver, start_site
from tools.tansu import TansuBroker, free_port
from tools.voice_events import EVENT_TYPES, cloud_event

DEMO_TOKEN = "demo-admin-token-change-me"  # noqa: S105 - the demo's own, printed for the user
TOPIC = "voice.events"
WORKDIR = Path(".demo")
SUBSCRIPTIONS: list[dict[str, Any]] = [
    {"tenant_id": "acme", "name": "Acme CRM", "path": "acme-crm",
     "event_types": ["call.ended", "call.summary_ready", "contact.created"]},
    {"tenant_id": "acme", "name": "Acme analytics", "path": "acme-analytics",
     "event_types": ["*"], "rate_limit": {"per_second": 5, "burst": 5}},
    {"tenant_id": "globex", "name": "Globex helpdesk", "path": "globex-helpdesk",
     "event_types": ["call.*", "conversation.*"],
     "filters": [{"path": "data.agent.id", "op": "eq", "value": "agent_12345"}]},
]  # fmt: skip
TENANTS = ("acme", "globex", "initech")  # initech has no subscriptions: its events are unrouted
PORTAL_TENANT = "acme"  # the tenant whose portal link the demo prints
# After producing stops: how long the last deliveries (rate-limited at 5/s) may take to land.
SETTLE_SECONDS = 30.0


def _port(preferred: int) -> int:
    with contextlib.suppress(OSError), socket.create_server(("127.0.0.1", preferred)):
        return preferred
    return free_port()


def _service_env(bootstrap: str, http_port: int, history_dsn: str) -> dict[str, str]:
    return {
        **os.environ,
        "SWITCHBOARD_HISTORY_DSN": history_dsn,
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",  # the demo broker has none
        "SWITCHBOARD_KAFKA_FETCH_MAX_WAIT_MS": "50",  # the demo broker holds fetches
        "SWITCHBOARD_TOPIC_REPLICATION_FACTOR": "1",
        "SWITCHBOARD_EVENT_TOPICS": TOPIC,
        "SWITCHBOARD_HTTP_HOST": "127.0.0.1",
        "SWITCHBOARD_HTTP_PORT": str(http_port),
        "SWITCHBOARD_ADMIN_TOKEN": DEMO_TOKEN,
        "SWITCHBOARD_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is on loopback
        "SWITCHBOARD_ALLOW_HTTP": "true",  # ...and speaks plain http
        "SWITCHBOARD_LOG_LEVEL": "info",
        "SWITCHBOARD_PORTAL_COOKIE_SECURE": "false",  # the portal on plain http, on loopback
    }


async def _wait_ready(base: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise SystemExit(f"the service exited with {proc.returncode}; see its log")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/readyz") as r:
                    if r.status == 200:  # the consumer groups have joined: events are read
                        return
            await asyncio.sleep(0.1)
    raise SystemExit("the service did not become ready in 60 s")


async def _subscribe(base: str, receiver: Receiver, receiver_port: int) -> list[str]:
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    ids = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for spec in SUBSCRIPTIONS:
            body = {k: v for k, v in spec.items() if k != "path"}
            body["url"] = f"http://127.0.0.1:{receiver_port}/{spec['path']}"
            async with http.post(base + "/v1/subscriptions", json=body) as r:
                created = await r.json()
                if r.status != 201:
                    raise SystemExit(f"creating a subscription failed: {created}")
            receiver.secrets[spec["path"]] = created["secret"]
            types = ", ".join(spec["event_types"])
            print(f"subscription {created['id']}  {spec['name']:<16} {types}")
            ids.append(created["id"])
    return ids


async def _portal_link(base: str, tenant: str) -> str:
    """A one-time link into the customers' portal for `tenant`, as a platform would ask."""
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{base}/v1/portal-sessions",
                  json={"tenant_id": tenant, "session_seconds": 12 * 3600}) as r,
    ):  # fmt: skip
        body = await r.json()
        if r.status != 201:
            raise SystemExit(f"creating a portal session failed: {body}")
        return str(body["url"])


async def _show_history(base: str, sub_id: str) -> None:
    """The delivery log, stats and a search by call, as the API answers from PostgreSQL."""
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{base}/v1/subscriptions/{sub_id}/attempts?limit=5") as r:
            log = await r.json()
        print(f"\nDelivery log of {sub_id} from PostgreSQL (newest 5; history from "
              f"{log.get('history_from')}):")  # fmt: skip
        for a in log.get("data", []):
            print(f"  {a['at']}  {a['event_type']:<24} attempt {a['attempt']}  "
                  f"{a['outcome']:<10} {a['status']}  {a['latency_ms']:.1f} ms  "
                  f"call_id={a['call_id']}")  # fmt: skip
        async with http.get(f"{base}/v1/subscriptions/{sub_id}/stats") as r:
            windows = (await r.json()).get("windows", {})
        for name in ("5m", "1h"):
            w = windows.get(name, {})
            print(f"  stats {name:>3}: {w.get('attempts')} attempts, success rate "
                  f"{w.get('success_rate')}, latency {w.get('latency_ms')}")  # fmt: skip
        call = next((a["call_id"] for a in log.get("data", []) if a["call_id"]), None)
        if call is not None:
            async with http.get(f"{base}/v1/attempts?call_id={call}") as r:
                found = (await r.json()).get("data", [])
            print(f"  GET /v1/attempts?call_id={call}: {len(found)} attempts across "
                  f"{len({a['subscription_id'] for a in found})} subscriptions")  # fmt: skip


class _Produced:
    def __init__(self) -> None:
        self.tenants: dict[str, str] = {}  # event id -> tenant
        self.broken = 0


async def _produce(bootstrap: str, stop: asyncio.Event, produced: _Produced) -> None:
    rng = random.Random(7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        while not stop.is_set():
            if rng.random() < 0.05:  # now and then a broken record, to show the quarantine
                await producer.send(TOPIC, b'{"specversion": "1.0", "id": "broken"')
                produced.broken += 1
            else:
                event_id = f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex}"
                tenant = rng.choice(TENANTS)
                value = cloud_event(rng.choice(EVENT_TYPES), tenant, rng, event_id)
                await producer.send(TOPIC, value)
                produced.tenants[event_id] = tenant
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rng.uniform(0.1, 0.4))
    finally:
        await producer.stop()


async def _decisions(base: str, ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each event's routing decision, as the admin API tells it; None where it has none."""
    out: dict[str, dict[str, Any] | None] = {}
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for event_id in ids:
            async with http.get(f"{base}/v1/events/{event_id}") as r:
                out[event_id] = (await r.json())["routing"] if r.status == 200 else None
    return out


async def _settle(
    base: str, produced: _Produced, receiver: Receiver
) -> dict[str, dict[str, Any] | None]:
    """Wait until every event has a decision and every expected delivery has landed."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        routing = await _decisions(base, list(produced.tenants))
        acc = account(produced.tenants, routing, produced.broken)
        if (acc.undecided == 0 and len(receiver.received) >= acc.expected_deliveries) or (
            time.monotonic() > deadline
        ):
            return routing
        await asyncio.sleep(0.5)


def _print(path: str, item: Received) -> None:
    mark = "signature ok" if item.verified else "SIGNATURE FAILED"
    print(f"  -> {path:<16} {item.event_type:<24} {item.event_id[:16]}  "
          f"tenant={item.tenant_id:<8} webhook-id={item.webhook_id[:14]}…  {mark}",
          flush=True)  # fmt: skip


async def _create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 3, 1)])
    finally:
        await admin.close()


async def _run(
    broker: TansuBroker, history_dsn: str, log: IO[bytes], duration: float | None
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await _create_topic(broker.bootstrap)
    receiver = Receiver(on_receive=_print)
    runner, receiver_port = await start_site(receiver.app())
    http_port = _port(8080)
    base = f"http://127.0.0.1:{http_port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli",
        env=_service_env(broker.bootstrap, http_port, history_dsn),
        stdout=log, stderr=log,
    )  # fmt: skip
    produced = _Produced()
    routing: dict[str, dict[str, Any] | None] = {}
    started = time.monotonic()
    try:
        await _wait_ready(base, proc)
        print("The service is ready: its consumer groups have joined.")
        subscriptions = await _subscribe(base, receiver, receiver_port)
        print(f"\nSwitchboard is running: admin API {base}/v1 (token {DEMO_TOKEN!r}), "
              f"metrics {base}/metrics, log {WORKDIR / 'switchboard.log'}")  # fmt: skip
        link = await _portal_link(base, PORTAL_TENANT)
        print(f"\nThe webhook portal of tenant {PORTAL_TENANT!r} (opens once, within 5 minutes; "
              f"its delivery log fills as the demo runs):\n  {link}\n")  # fmt: skip
        print("Deliveries as they arrive (Ctrl-C to stop):\n", flush=True)
        producer = asyncio.create_task(_produce(broker.bootstrap, stop, produced))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
        stop.set()
        await producer
        routing = await _settle(base, produced, receiver)
        await _show_history(base, subscriptions[0])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        await runner.cleanup()
    delivered = receiver.received
    verified = sum(1 for r in delivered if r.verified)
    acc = account(produced.tenants, routing, produced.broken)
    print(f"\nSummary after {time.monotonic() - started:.0f} s:")
    for line in acc.lines(len(delivered), verified):
        print(line)
    print(f"Service exit code {proc.returncode}.")
    return 0 if proc.returncode == 0 and acc.complete(len(delivered), verified) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="seconds, then exit")
    args = parser.parse_args()
    WORKDIR.mkdir(exist_ok=True)
    with (
        (WORKDIR / "tansu.log").open("wb") as broker_log,
        (WORKDIR / "switchboard.log").open("wb") as service_log,
        TansuBroker(log=broker_log) as broker,
        EmbeddedPostgres() as postgres,
    ):
        print(f"PostgreSQL (history store) on {postgres.dsn}")
        return asyncio.run(_run(broker, postgres.dsn, service_log, args.duration))


if __name__ == "__main__":
    sys.exit(main())
