"""A webhook receiver on loopback that verifies Standard Webhooks signatures.

Used by the demo (prints each delivery) and importable by tests and the benchmark. On its
own, `python -m tools.receiver --port 9000 --secret crm=whsec_…` listens until Ctrl-C and
prints every request: its path, event, webhook-id and whether its signature verifies (with
the secret given for that path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from standardwebhooks import Webhook


@dataclass
class Received:
    path: str
    webhook_id: str
    event_id: str
    event_type: str
    tenant_id: str
    verified: bool


@dataclass
class Receiver:
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_ secret
    received: list[Received] = field(default_factory=list)
    on_receive: Callable[[str, Received], None] | None = None
    status: int = 204

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.match_info["path"]
        # GET and DELETE carry no body: the signed content is the query string as sent,
        # the URL's own query included (docs/security.md).
        in_query = request.method in ("GET", "DELETE")
        signed = request.rel_url.raw_query_string if in_query else body
        secret = self.secrets.get(path)
        verified = False
        if secret is not None:
            try:
                # json_parse=False: the signature is all that is checked; the query string
                # is not JSON, and a body that is not JSON is still a signed request.
                Webhook(secret).verify(signed, dict(request.headers), json_parse=False)
                verified = True
            except Exception:  # noqa: BLE001 - any failure means "not verified", shown as such
                verified = False
        fields = dict(request.query) if in_query else _json_object(body)
        item = Received(
            path=path,
            webhook_id=request.headers.get("webhook-id", ""),
            event_id=str(fields.get("id", "")),
            event_type=str(fields.get("type", "")),
            tenant_id=str(fields.get("tenant_id", "")),
            verified=verified,
        )
        self.received.append(item)
        if self.on_receive is not None:
            self.on_receive(path, item)
        return web.Response(status=self.status)


def _json_object(body: bytes) -> dict[str, object]:
    """The body's top-level fields; {} for a body that is not a JSON object (a template)."""
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(body)
        if isinstance(value, dict):
            return value
    return {}


async def start_site(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound: int = runner.addresses[0][1]
    return runner, bound


async def wait_until(predicate: Callable[[], bool], within: float, interval: float = 0.02) -> bool:
    """Poll a condition with a deadline; True if it came true in time."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def _print(path: str, item: Received) -> None:
    mark = "signature ok" if item.verified else "signature NOT verified"
    print(f"{path or '/':<20} {item.event_type or '-':<24} {item.event_id or '-':<40} "
          f"webhook-id={item.webhook_id or '-'}  {mark}", flush=True)  # fmt: skip


async def serve(host: str, port: int, receiver: Receiver) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    print(f"Receiving webhooks on http://{host}:{bound}/<path> (Ctrl-C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    print(f"{len(receiver.received)} requests received", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.receiver", description="Print and verify incoming webhooks."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--status", type=int, default=204, help="the status every answer has")
    parser.add_argument(
        "--secret", action="append", default=[], metavar="PATH=whsec_…",
        help="the subscription secret for requests to /PATH (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    secrets: dict[str, str] = {}
    for pair in args.secret:
        path, sep, secret = pair.partition("=")
        if not sep or not secret.startswith("whsec_"):
            parser.error(f"--secret {pair!r}: give PATH=whsec_…")
        secrets[path.strip("/")] = secret
    receiver = Receiver(secrets=secrets, on_receive=_print, status=args.status)
    try:
        asyncio.run(serve(args.host, args.port, receiver))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
