"""The delivery pool against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson
import pytest
import trustme
from aiohttp import web
from standardwebhooks import Webhook

from service import __version__
from service.delivery.circuit import CircuitSettings, State, Transition
from service.delivery.followup import FinishOnly
from service.delivery.job import DeliveryJob
from service.delivery.netguard import AddressPolicy
from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.pool import DeliveryPool, FindSubscription
from service.delivery.sender import Sender
from service.delivery.signing import message_id
from service.events.envelope import Event
from service.subscriptions.model import Subscription, SubscriptionCreate, new_subscription
from tools.tansu import free_port

StartServer = Callable[[web.Application], Awaitable[str]]


def make_event(event_id: str = "evt_1") -> Event:
    return Event(
        id=event_id,
        source="/voice/call",
        type="call.ended",
        tenant_id="acme",
        time="2026-11-22T10:00:00Z",
        time_unix=time.time(),
        data_raw=b'{"call":{"duration":125}}',
    )


def make_sub(url: str, **fields: Any) -> Subscription:
    req = msgspec.convert(
        {"tenant_id": "acme", "name": "t", "url": url, "event_types": ["*"], **fields},
        SubscriptionCreate,
    )
    return new_subscription(req, AddressPolicy(allow_private=True, allow_http=True))


class RecordingFollowup(FinishOnly):
    """Finishes every job, noting what the pool asked for: the Kafka side is tested elsewhere."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.results: dict[str, AttemptResult] = {}

    def attempted(self, job: DeliveryJob, result: AttemptResult, transition: Any) -> None:
        self.calls.append(("attempted", job.event.id, transition))
        self.results[job.event.id] = result
        job.finish()

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        self.calls.append(("give_up", job.event.id, reason))
        job.finish()


class Harness:
    """A pool and its sender, with a followup that records what became of each job."""

    def __init__(
        self,
        *,
        allow_private: bool = True,
        cap: int = 64,
        find: FindSubscription | None = None,
        circuit: CircuitSettings | None = None,
        egress_proxy: str | None = None,
    ) -> None:
        policy = AddressPolicy(allow_private=allow_private, allow_http=True)
        self.sender = Sender(
            policy=policy, max_connections=100, body_cap=cap, egress_proxy=egress_proxy
        )
        self.followup = RecordingFollowup()
        self.pool = DeliveryPool(
            sender=self.sender, policy=policy, find=find, followup=self.followup, circuit=circuit
        )

    async def deliver(self, event: Event, sub: Subscription) -> AttemptResult | None:
        """Submit one job and wait until it is finished; the attempt's result, if one was made."""
        done = asyncio.Event()
        self.pool.submit(DeliveryJob(event, sub.id, sub, done.set))
        await done.wait()
        return self.followup.results.get(event.id)

    async def attempt(self, event: Event, sub: Subscription) -> tuple[Any, AttemptResult]:
        return await self.pool.attempt(event, sub)

    async def close(self) -> None:
        await self.pool.close()
        await self.sender.close()


async def make_pool(**options: Any) -> Harness:
    harness = Harness(**options)
    await harness.sender.start()
    return harness


async def delivered(pool: Harness, event: Event, sub: Subscription) -> bool:
    result = await pool.deliver(event, sub)
    return result is not None and result.ok


@dataclass(frozen=True)
class Circuit:
    circuit_window_seconds: float = 60.0
    circuit_min_calls: int = 3
    circuit_failure_rate: float = 1.0
    circuit_open_seconds: float = 0.5
    circuit_max_open_seconds: float = 2.0


@pytest.fixture
async def pool() -> AsyncIterator[Harness]:
    p = await make_pool()
    yield p
    await p.close()


class Recorder:
    def __init__(self, responses: list[web.StreamResponse] | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.responses = responses or []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{p:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.responses:
            return self.responses.pop(0)
        return web.Response(status=200, text="ok")


async def test_request_is_signed_and_shaped(pool: Harness, http_server: StartServer) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    sub = make_sub(base + "/crm", headers={"X-Api-Key": "k1"}, method="PUT")
    event = make_event()
    assert await delivered(pool, event, sub)
    path, headers, body = rec.requests[0]
    assert path == "/crm"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"switchboard/{__version__}"
    assert headers["X-Api-Key"] == "k1"
    assert headers["webhook-id"] == message_id(sub.id, event.id)
    Webhook(sub.secret).verify(body, headers)
    assert orjson.loads(body) == {
        "id": "evt_1",
        "type": "call.ended",
        "timestamp": "2026-11-22T10:00:00Z",
        "tenant_id": "acme",
        "data": {"call": {"duration": 125}},
    }


async def test_a_deleted_or_disabled_subscription_is_not_attempted(
    http_server: StartServer,
) -> None:
    table: dict[str, Subscription] = {}
    pool = await make_pool(find=table.get)
    followup = pool.followup
    try:
        rec = Recorder()
        base = await http_server(rec.app())
        sub = make_sub(base + "/gone")
        table[sub.id] = msgspec.structs.replace(sub, enabled=False)
        await pool.deliver(make_event("e1"), sub)
        del table[sub.id]
        await pool.deliver(make_event("e2"), sub)
        assert rec.requests == []
        assert followup.calls == [
            ("give_up", "e1", "subscription_disabled"),
            ("give_up", "e2", "subscription_deleted"),
        ]
        assert pool.pool.in_flight == 0
    finally:
        await pool.close()


async def test_an_edit_applies_to_queued_deliveries(http_server: StartServer) -> None:
    table: dict[str, Subscription] = {}
    pool = await make_pool(find=table.get)
    try:
        old, new = Recorder(), Recorder()
        old_base, new_base = await http_server(old.app()), await http_server(new.app())
        sub = make_sub(old_base + "/a")
        # The job carries the subscription as it was when the event was routed; the attempt
        # reads it again and goes to the URL it has now.
        table[sub.id] = msgspec.structs.replace(sub, url=new_base + "/b")
        assert await delivered(pool, make_event(), sub)
        assert old.requests == []
        assert [p for p, _, _ in new.requests] == ["/b"]
    finally:
        await pool.close()


async def test_an_open_circuit_counts_attempts_without_sending_and_a_probe_closes_it(
    http_server: StartServer,
) -> None:
    healthy = False
    requests = 0

    async def handle(_request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=200 if healthy else 503)

    app = web.Application()
    app.router.add_post("/c", handle)
    base = await http_server(app)
    pool = await make_pool(circuit=Circuit())
    followup = pool.followup
    sub = make_sub(base + "/c")
    try:
        for i in range(3):
            await pool.deliver(make_event(f"f{i}"), sub)
        assert [c[2] for c in followup.calls] == [None, None, Transition.OPENED]
        assert pool.pool.circuits_in(State.OPEN) == 1
        # Open: the attempt that falls due is counted as failed, and no request is made.
        off = await pool.deliver(make_event("off"), sub)
        assert off is not None
        assert off.outcome is Outcome.CIRCUIT_OPEN
        assert "circuit is open" in (off.error or "")
        assert requests == 3
        healthy = True
        await asyncio.sleep(Circuit.circuit_open_seconds)
        # Half-open: a first attempt does not probe for one open period...
        first = await pool.deliver(make_event("first"), sub)
        assert first is not None
        assert first.outcome is Outcome.CIRCUIT_OPEN
        # ...a delivery that failed before does, and closes the circuit.
        done = asyncio.Event()
        retry = DeliveryJob(make_event("retry"), sub.id, sub, done.set, attempts=1)
        pool.pool.submit(retry)
        await done.wait()
        assert followup.calls[-1] == ("attempted", "retry", Transition.CLOSED)
        assert pool.pool.circuits_in(State.CLOSED) == 1
        assert requests == 4
    finally:
        await pool.close()


async def test_redirects_are_not_followed(pool: Harness, http_server: StartServer) -> None:
    rec = Recorder([web.Response(status=302, headers={"Location": "/elsewhere"})])
    base = await http_server(rec.app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/start"))
    assert result.outcome is Outcome.REDIRECT
    assert result.status == 302
    assert [p for p, _, _ in rec.requests] == ["/start"]
    # The log and the dead letter say where it pointed, so the URL can be fixed.
    assert result.error is not None
    assert "redirect (302) to /elsewhere" in result.error


async def test_response_body_is_capped_after_decompression(
    pool: Harness, http_server: StartServer
) -> None:
    big = b"x" * 5_000_000
    rec = Recorder(
        [
            web.Response(body=big),
            web.Response(body=gzip.compress(big), headers={"Content-Encoding": "gzip"}),
        ]
    )
    base = await http_server(rec.app())
    sub = make_sub(base + "/big")
    for _ in range(2):
        _, result = await pool.attempt(make_event(), sub)
        assert result.ok
        assert result.body_excerpt == b"x" * 64


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (301, Outcome.REDIRECT),
        (400, Outcome.CLIENT_ERROR),
        (408, Outcome.REQUEST_TIMEOUT),
        (410, Outcome.CLIENT_ERROR),
        (429, Outcome.RATE_LIMITED),
        (500, Outcome.SERVER_ERROR),
        (503, Outcome.SERVER_ERROR),
    ],
)
async def test_status_classes(
    pool: Harness, http_server: StartServer, status: int, outcome: Outcome
) -> None:
    base = await http_server(Recorder([web.Response(status=status)]).app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/s"))
    assert (result.outcome, result.status) == (outcome, status)


async def test_timeout(pool: Harness, http_server: StartServer) -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow", hang)
    base = await http_server(app)
    try:
        _, result = await pool.attempt(make_event(), make_sub(base + "/slow", timeout_seconds=0.3))
        assert result.outcome is Outcome.TIMEOUT
        assert result.status is None
        assert result.error == "no response within 0.3 s"
    finally:
        release.set()


async def test_connection_refused(pool: Harness) -> None:
    port = free_port()
    _, result = await pool.attempt(make_event(), make_sub(f"http://127.0.0.1:{port}/nobody"))
    assert result.outcome is Outcome.CONNECT_ERROR
    assert result.error == f"connection refused by 127.0.0.1:{port}"


async def test_garbage_response_is_invalid_response(pool: Harness) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, result = await pool.attempt(make_event(), make_sub(f"http://127.0.0.1:{port}/"))
        assert result.outcome in {Outcome.INVALID_RESPONSE, Outcome.DISCONNECTED}
    finally:
        server.close()
        await server.wait_closed()


async def test_private_targets_are_blocked_before_connecting(http_server: StartServer) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    port = base.rsplit(":", 1)[1]
    pool = await make_pool(allow_private=False)
    try:
        for url in (f"http://127.0.0.1:{port}/x", f"http://localhost:{port}/x"):
            _, result = await pool.attempt(make_event(), make_sub(url))
            assert result.outcome is Outcome.BLOCKED_ADDRESS, url
        assert rec.requests == []
    finally:
        await pool.close()


async def test_rate_limit_spaces_requests(pool: Harness, http_server: StartServer) -> None:
    arrivals: list[float] = []

    async def handle(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response()

    app = web.Application()
    app.router.add_post("/r", handle)
    base = await http_server(app)
    sub = make_sub(base + "/r", rate_limit={"per_second": 20, "burst": 1})
    await asyncio.gather(*(delivered(pool, make_event(f"e{i}"), sub) for i in range(10)))
    assert len(arrivals) == 10
    # 10 requests at 20/s with no burst need at least 9 intervals of 50 ms. A slow machine
    # only makes the span longer, so this lower bound cannot flake.
    assert arrivals[-1] - arrivals[0] >= 9 * 0.05 * 0.9


async def test_max_in_flight_caps_concurrency(pool: Harness, http_server: StartServer) -> None:
    current = peak = 0

    async def handle(_request: web.Request) -> web.Response:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0.02)
        current -= 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/c", handle)
    base = await http_server(app)
    sub = make_sub(base + "/c", max_in_flight=3)
    results = await asyncio.gather(*(delivered(pool, make_event(f"e{i}"), sub) for i in range(30)))
    assert all(results)
    assert peak == 3


async def test_a_hanging_endpoint_does_not_hold_back_a_healthy_one(
    pool: Harness, http_server: StartServer
) -> None:
    release = asyncio.Event()
    hanging = 0

    async def hang(_request: web.Request) -> web.Response:
        nonlocal hanging
        hanging += 1
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hang", hang)
    rec = Recorder()
    slow_base, fast_base = await http_server(app), await http_server(rec.app())
    slow, fast = make_sub(slow_base + "/hang", max_in_flight=2), make_sub(fast_base + "/ok")
    slow_tasks = [asyncio.create_task(pool.deliver(make_event(f"s{i}"), slow)) for i in range(50)]
    try:
        fast_results = await asyncio.gather(
            *(delivered(pool, make_event(f"f{i}"), fast) for i in range(50))
        )
        assert all(fast_results)
        assert len(rec.requests) == 50
        assert hanging == 2  # the slow endpoint is held at its own cap, still waiting
        assert not any(t.done() for t in slow_tasks)
    finally:
        release.set()
        await asyncio.gather(*slow_tasks)


async def test_certificates_are_always_verified(pool: Harness) -> None:
    ca = trustme.CA()  # a CA made in the test: nothing on this machine trusts it
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    rec = Recorder()
    runner = web.AppRunner(rec.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"https://127.0.0.1:{port}/hook"
        # Control: a client that trusts the test CA gets through, so the server works.
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        async with aiohttp.ClientSession() as http, http.post(url, ssl=client_ctx) as resp:
            assert resp.status == 200
        _, result = await pool.attempt(make_event(), make_sub(url))
        assert result.outcome is Outcome.TLS_ERROR
        assert result.error is not None
        assert result.error.startswith(f"the TLS certificate of 127.0.0.1:{port} is not trusted")
        assert len(rec.requests) == 1  # only the control's request arrived
    finally:
        await runner.cleanup()


async def test_a_redirect_to_loopback_is_not_followed(
    pool: Harness, http_server: StartServer
) -> None:
    inside = Recorder()
    inside_base = await http_server(inside.app())
    rec = Recorder([web.Response(status=307, headers={"Location": inside_base + "/admin"})])
    base = await http_server(rec.app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/hook"))
    assert result.outcome is Outcome.REDIRECT
    assert inside.requests == []


class RecordingProxy:
    """A plain forward proxy on loopback: records each request line, relays the bytes."""

    def __init__(self) -> None:
        self.request_lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        self.request_lines.append(line)
        target = urlsplit(line.split(b" ")[1].decode())
        # The proxy resolves names; this one knows a single made-up name, the test receiver.
        host = "127.0.0.1" if target.hostname == "receiver.example.test" else target.hostname
        up_reader, up_writer = await asyncio.open_connection(host, target.port)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_deliveries_go_through_the_configured_egress_proxy_only(
    http_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    # Proxy variables in the environment are ignored: this one leads nowhere.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    direct = await make_pool()
    try:
        assert (await direct.attempt(make_event(), make_sub(base + "/direct")))[1].ok
    finally:
        await direct.close()
    proxy = RecordingProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_url = f"http://localhost:{server.sockets[0].getsockname()[1]}"
    # The proxy is on loopback and the policy refuses private addresses: the operator's
    # proxy is exempt, the customer's destinations are not.
    pool = await make_pool(allow_private=False, egress_proxy=proxy_url)
    port = base.rsplit(":", 1)[1]
    try:
        # A name is resolved by the proxy, not here: the proxy must do the filtering.
        via_url = f"http://receiver.example.test:{port}/via-proxy"
        _, via = await pool.attempt(make_event(), make_sub(via_url))
        assert via.ok
        assert proxy.request_lines == [f"POST {via_url} HTTP/1.1".encode()]
        # A literal private address is refused before anything is sent, proxy or not.
        _, blocked = await pool.attempt(make_event(), make_sub(base + "/literal"))
        assert blocked.outcome is Outcome.BLOCKED_ADDRESS
        assert len(proxy.request_lines) == 1
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
    assert [p for p, _, _ in rec.requests] == ["/direct", "/via-proxy"]
