"""One fault scenario, end to end: a broker behind the fault proxy, replicas as processes,
endpoints, a steady stream of events (and lookups), the fault, and the account.

The account is black-box: events in (acknowledged by the broker), requests counted by the
endpoints, the processes, `/readyz`. It holds for any delivery topology behind the event
topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from tools.faults.fleet import Fleet, Replica, create_subscription
from tools.faults.load import Endpoints, EventStream, LookupCaller, Lookups
from tools.faults.proxy import FaultProxy
from tools.receiver import wait_until
from tools.service_env import ADMIN_TOKEN, create_topic, service_env
from tools.tansu import TansuBroker, free_port

# Partitions of the event topic: two per replica of a three-replica group.
PARTITIONS: Final = 6
# Retries start fast and go on long enough to outlast any fault of the suite: each
# subscription asks for MAX_ATTEMPTS (the most allowed), the last wait repeating: about
# 2.5 minutes in all.
RETRY_SCHEDULE: Final = "0.5,1,3"
MAX_ATTEMPTS: Final = 50
# The faulty endpoint's timeout: a hung receiver is given up on after this.
TARGET_TIMEOUT_SECONDS: Final = 1
# Lookups on a topic of their own are read without a consumer group (consumers/lookups/): a
# replica that restarts moves only its own partitions, at once, and the others answer on.
# Through a rolling restart at least this share is answered in time; a consumer group of
# their own answered 60-65% (its rebalances stop every partition, docs/reliability.md).
LOOKUPS_IN_TIME: Final = 0.95


@dataclass(frozen=True)
class Size:
    """How big a run is: the short one in `make test`, the full one in `make faults`."""

    rate: float  # events per second
    before: float  # seconds of stream before the fault
    after: float  # seconds of stream after the fault ends
    drain: float  # seconds allowed, after the stream stops, to deliver everything
    session_timeout_ms: int  # the service's Kafka session timeout
    fault: float  # seconds a fault that is not tied to the session timeout lasts
    latency: float  # seconds added each way by a slow broker
    lookup_every: float  # seconds between two lookups, where a scenario makes them

    @property
    def session(self) -> float:
        return self.session_timeout_ms / 1000


SHORT: Final = Size(rate=25, before=1, after=1, drain=60, session_timeout_ms=2000, fault=2,
                    latency=0.5, lookup_every=0.5)  # fmt: skip
FULL: Final = Size(rate=100, before=10, after=10, drain=180, session_timeout_ms=10_000,
                   fault=20, latency=2, lookup_every=0.2)  # fmt: skip


@dataclass
class Report:
    scenario: str
    replicas: int
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    # From the fault's end until every event sent before it was delivered.
    recovery_s: float | None = None
    stayed_up: bool = False
    ready_again: bool = False
    lookups: Lookups | None = None
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.stayed_up and self.ready_again and self.checks_ok

    @property
    def checks_ok(self) -> bool:
        return all(v for k, v in self.checks.items() if k.endswith("_ok"))


@dataclass
class Run:
    """What a fault acts on."""

    size: Size
    proxy: FaultProxy
    fleet: Fleet
    endpoints: Endpoints
    env: dict[str, str]
    checks: dict[str, Any]
    fault_ended: float = 0.0


Fault = Callable[[Run], Awaitable[None]]
# Runs after everything was delivered and adds to the report's checks (a store's content).
Check = Callable[[Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    fault: Fault
    replicas: int = 3
    lookups: bool = False
    # The faulty endpoint, `target`, besides `steady`; its host (a name to resolve).
    target: bool = False
    target_host: str = "127.0.0.1"
    target_mode: str = "ok"
    # Settings of the scenario's own, made when it starts (a store's address).
    env: Callable[[], dict[str, str]] = dict
    wrap: Sequence[str] = ()
    check: Check | None = None
    # Releases what `env` made, however the run ended.
    close: Callable[[], None] = lambda: None


@asynccontextmanager
async def broker_behind_proxy(logs: Path) -> AsyncIterator[tuple[TansuBroker, FaultProxy]]:
    """A broker that advertises the proxy's port, so every connection goes through it."""
    proxy_port = free_port()
    with (logs / "tansu.log").open("wb") as out:
        broker = TansuBroker(log=out, advertised_port=proxy_port)
        proxy = FaultProxy(broker.port, port=proxy_port)
        await proxy.start()
        broker.start()
        try:
            yield broker, proxy
        finally:
            await proxy.close()
            broker.stop()


async def run_group(
    scenarios: Sequence[Scenario],
    size: Size,
    logs: Path,
    *,
    extra_env: dict[str, str] | None = None,
    lookup_topic: bool = True,
) -> list[Report]:
    """Scenarios one after another on one broker and one fleet, each under a stream of its
    own and accounted alone: starting a broker and three replicas costs more than most
    faults last. A scenario starts once every replica is ready again after the one before,
    as a fleet is when the next fault finds it."""
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    async with broker_behind_proxy(logs) as (_broker, proxy):
        bootstrap = f"127.0.0.1:{proxy.port}"
        env = service_env(
            bootstrap,
            retry_schedule=RETRY_SCHEDULE,
            kafka_session_timeout_ms=size.session_timeout_ms,
            # The deliveries topic and retry tiers too: work for every replica of the group.
            topic_partitions=PARTITIONS,
            log_level="info",
            history_dsn=None,
        )
        if lookup_topic:
            # Lookups on a topic and consumer group of their own, as docs/operations.md
            # recommends; without, on the event topic (`--lookups-on events`).
            env["SWITCHBOARD_LOOKUP_TOPICS"] = env["SWITCHBOARD_EVENT_TOPICS"] + ".lookups"
        env.update(extra_env or {})
        try:
            for scenario in scenarios:
                env.update(scenario.env())
            return await _run(scenarios, size, logs, env, proxy)
        finally:
            for scenario in scenarios:
                await asyncio.to_thread(scenario.close)


def _shared(scenarios: Sequence[Scenario]) -> Scenario:
    """What the fleet of a group is built from: the settings its scenarios agree on."""
    first, targets = scenarios[0], [s for s in scenarios if s.target]
    for s in scenarios:
        assert (s.replicas, tuple(s.wrap)) == (first.replicas, tuple(first.wrap)), s.key
    for s in targets:
        assert (s.target_host, s.target_mode) == (targets[0].target_host,
                                                  targets[0].target_mode), s.key  # fmt: skip
    target = targets[0] if targets else first
    return dataclasses.replace(first, target=bool(targets), target_host=target.target_host,
                               target_mode=target.target_mode,
                               lookups=any(s.lookups for s in scenarios))  # fmt: skip


async def _run(
    scenarios: Sequence[Scenario],
    size: Size,
    logs: Path,
    env: dict[str, str],
    proxy: FaultProxy,
) -> list[Report]:
    shared = _shared(scenarios)
    bootstrap = env["SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS"]
    await create_topic(bootstrap, env["SWITCHBOARD_EVENT_TOPICS"], PARTITIONS)
    if "SWITCHBOARD_LOOKUP_TOPICS" in env:
        await create_topic(bootstrap, env["SWITCHBOARD_LOOKUP_TOPICS"], PARTITIONS)
    endpoints = Endpoints()
    await endpoints.start()
    fleet = Fleet([Replica(f"r{i}", env, logs, shared.wrap)
                   for i in range(shared.replicas)])  # fmt: skip
    reports = []
    try:
        await fleet.start()
        await _subscribe(shared, fleet, endpoints)
        if shared.lookups:
            await create_topic(bootstrap, _replies(env), 1)
        for scenario in scenarios:
            report = Report(scenario.name, scenario.replicas)
            reports.append(report)
            state = Run(size, proxy, fleet, endpoints, env, report.checks)
            await _account(scenario, state, report)
    finally:
        await fleet.close()
        await endpoints.close()
    return reports


def _replies(env: dict[str, str]) -> str:
    return env["SWITCHBOARD_EVENT_TOPICS"] + ".replies"


async def _subscribe(scenario: Scenario, fleet: Fleet, endpoints: Endpoints) -> None:
    endpoints.add("steady")
    wanted = [("steady", endpoints.url("steady"), ["call.ended"], 10)]
    if scenario.target:
        endpoints.add("target").mode = scenario.target_mode
        url = endpoints.url("target", scenario.target_host)
        wanted.append(("target", url, ["call.ended"], TARGET_TIMEOUT_SECONDS))
    if scenario.lookups:
        endpoints.add("who")
        wanted.append(("who", endpoints.url("who"), ["call.inbound"], 2))
    ids = []
    for name, url, types, timeout in wanted:
        fields: dict[str, Any] = {
            "tenant_id": "acme", "name": name, "url": url, "event_types": types,
            "max_attempts": MAX_ATTEMPTS, "timeout_seconds": timeout, "max_in_flight": 20,
        }  # fmt: skip
        if name == "who":
            fields["body_template"] = {"number": "{{data.call.from}}"}
        if name == "target":  # judged by its answer, which a trickle sends too slowly
            fields["success"] = {"json_path": "accepted", "json_value": True}
        ids.append((await create_subscription(fleet.replicas[0].port, **fields))["id"])
    # Every replica routes with every subscription before the first event.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for replica in fleet.replicas:
            for sub_id in ids:
                while True:
                    async with http.get(f"{replica.base}/v1/subscriptions/{sub_id}") as r:
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.05)


async def _account(scenario: Scenario, state: Run, report: Report) -> None:
    size, fleet = state.size, state.fleet
    # The endpoints a scenario is judged on; a group's target endpoint gets the events of
    # every scenario, and is judged only in those about it.
    paths = ["steady", "target"] if scenario.target else ["steady"]
    exits_before = fleet.unexpected_exits
    bootstrap = state.env["SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS"]
    topic = state.env["SWITCHBOARD_EVENT_TOPICS"]
    caller = None
    if scenario.lookups:
        requests = state.env.get("SWITCHBOARD_LOOKUP_TOPICS", topic)
        caller = LookupCaller(bootstrap, requests, _replies(state.env), every=size.lookup_every)
        await caller.start()
    stream = EventStream(bootstrap, topic, size.rate, types=["call.ended"])
    stream.start()
    watch = asyncio.create_task(_watch(fleet))
    try:
        await asyncio.sleep(size.before)
        await scenario.fault(state)
        state.fault_ended = time.monotonic()
        await asyncio.sleep(size.after)
        await stream.stop()
        if caller is not None:
            report.lookups = await caller.stop()
            caller = None
            if "SWITCHBOARD_LOOKUP_TOPICS" in state.env:
                report.checks["lookups_in_time_ok"] = _in_time(report.lookups)
        await wait_until(lambda: _all_delivered(state, stream, paths), size.drain, 0.1)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await stream.stop()  # a run that failed half-way leaves no client behind
        if caller is not None:
            await caller.stop(late_within=0)
    sent = set(stream.sent)
    report.sent = len(sent) * len(paths)
    report.delivered = sum(len(sent & state.endpoints.paths[p].answered.keys()) for p in paths)
    report.lost = report.sent - report.delivered
    report.duplicates = sum(state.endpoints.paths[p].duplicates_of(sent) for p in paths)
    before_end = [e for e, at in stream.sent.items() if at <= state.fault_ended]
    firsts = [
        state.endpoints.paths[p].answered.get(e, float("inf")) for p in paths for e in before_end
    ]
    if firsts:
        report.recovery_s = max(0.0, max(firsts) - state.fault_ended)
    report.ready_again = await fleet.all_ready()
    report.stayed_up = fleet.unexpected_exits == exits_before
    if scenario.check is not None:
        await scenario.check(state)


def _in_time(lookups: Lookups) -> bool:
    return lookups.replies["answered"] >= LOOKUPS_IN_TIME * lookups.sent


def _all_delivered(state: Run, stream: EventStream, paths: list[str]) -> bool:
    return all(stream.sent.keys() <= state.endpoints.paths[p].answered.keys() for p in paths)


async def _watch(fleet: Fleet) -> None:
    while True:
        fleet.check()
        await asyncio.sleep(0.25)
