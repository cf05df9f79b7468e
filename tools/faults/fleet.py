"""Replicas of the service as processes, as a deployment runs them: started, killed, rolled.

Each replica is `python -m service.cli` with the settings given, its own HTTP port and log
file. What a fault scenario asks of them is black-box: the process is alive, `/readyz`
answers 200, and `/metrics` says what it did.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp

from tools.service_env import ADMIN_TOKEN
from tools.tansu import free_port

ROOT: Final = Path(__file__).resolve().parents[2]
# A replica starts in a few seconds alone; on a shared 2-core machine with three starting at
# once, and a group join behind it, much longer.
READY_WITHIN: Final = 60.0


def spawn(env: dict[str, str], log: Path, wrap: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """The service as a child process, its output appended to `log`. `wrap` is a command
    that runs it (e.g. in a mount namespace of its own)."""
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - this interpreter, the service's own module
            [*wrap, sys.executable, "-m", "service.cli"],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )


@contextmanager
def service_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The service as a child process, killed if still running on exit."""
    proc = spawn(env, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def is_ready(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(
            f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=2)
        ) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_ready(
    port: int, proc: subprocess.Popen[bytes], within: float = READY_WITHIN
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            assert proc.poll() is None, f"service exited with {proc.returncode}"
            if await is_ready(http, port):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"service not ready in {within:g} s")


async def create_subscription(port: int, **fields: Any) -> dict[str, Any]:
    """Through the admin API, as an operator would."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"http://127.0.0.1:{port}/v1/subscriptions", json=fields) as r,
    ):
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return body


class Replica:
    """One replica: a process that may be killed or stopped and started again."""

    def __init__(self, name: str, env: dict[str, str], logs: Path, wrap: Sequence[str] = ()):
        self.name = name
        self.port = free_port()
        self.env = {**env, "SWITCHBOARD_HTTP_PORT": str(self.port)}
        self.log = logs / f"{name}.log"
        self._wrap = tuple(wrap)
        self._proc: subprocess.Popen[bytes] | None = None
        # Exits nobody asked for: a replica that crashed or stopped on its own.
        self.unexpected_exits: list[int] = []
        # Set while the harness itself stops the process, so that its exit is not a crash.
        self._stopping = False
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, f"{self.name} was not started"
        return self._proc

    def start(self) -> None:
        assert self._proc is None or self._proc.poll() is not None
        self._proc = spawn(self.env, self.log, self._wrap)
        self.starts += 1

    async def wait_ready(self, within: float = READY_WITHIN) -> None:
        await wait_ready(self.port, self.proc, within)

    def check_alive(self) -> None:
        """Notes an exit nobody asked for (called by whoever watches the fleet)."""
        if self._proc is not None and not self._stopping and self._proc.poll() is not None:
            self.unexpected_exits.append(self._proc.returncode)
            self._proc = None

    def kill(self) -> None:
        self._stopping = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._proc = None
        self._stopping = False

    async def stop(self, within: float = 60) -> int:
        """SIGTERM, as a rolling deploy does; the exit code."""
        self._stopping = True
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, within)
        self._proc = None
        self._stopping = False
        return code

    def ensure_stopped(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """The replica's samples by their full name with labels, e.g.
        `switchboard_ready` or `switchboard_lookups_total{result="answered"}`."""
        async with http.get(f"{self.base}/metrics") as r:
            text = await r.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


class Fleet:
    """Replicas of one deployment (one consumer group), and a watch on them."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.http = aiohttp.ClientSession()

    async def start(self) -> None:
        for replica in self.replicas:
            replica.start()
        await asyncio.gather(*(r.wait_ready() for r in self.replicas))

    def check(self) -> None:
        for replica in self.replicas:
            replica.check_alive()

    async def all_ready(self, within: float = READY_WITHIN) -> bool:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            self.check()
            ready = [
                r._proc is not None and await is_ready(self.http, r.port) for r in self.replicas
            ]
            if all(ready):
                return True
            await asyncio.sleep(0.1)
        return False

    @property
    def unexpected_exits(self) -> int:
        return sum(len(r.unexpected_exits) for r in self.replicas)

    async def close(self) -> None:
        for replica in self.replicas:
            replica.ensure_stopped()
        await self.http.close()
