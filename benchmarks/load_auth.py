"""Load test of the token check: N connection attempts per second, bad and good tokens mixed.

Every bad attempt must be refused (HTTP 401 / WebSocket close 4401) and every good one served
(HTTP 200 / WebSocket `config` with a session id, then `ready_to_stop` after an empty stream).

    python benchmarks/load_auth.py --url http://127.0.0.1:8000 --token TOKEN --rate 200 --seconds 30
    python benchmarks/load_auth.py --spawn --rate 200 --seconds 30   # starts its own server

Results: benchmarks/load_auth.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

KINDS = ("http_bad", "http_good", "ws_bad", "ws_good")
ATTEMPT_TIMEOUT = 120.0  # seconds; past it an attempt counts as not served


@dataclass
class LoadResult:
    attempts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    failures: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    seconds: float = 0.0
    late_starts: int = 0  # attempts started > 100 ms behind schedule (the client could not keep up)

    @property
    def all_correct(self) -> bool:
        return not self.failures and self.attempts == self.ok

    def summary(self) -> dict[str, Any]:
        def p(values: list[float], q: float) -> float | None:
            return round(sorted(values)[int(q * (len(values) - 1))] * 1000, 1) if values else None

        return {
            "seconds": round(self.seconds, 2),
            "attempts": self.attempts,
            "correct": self.ok,
            "failures": len(self.failures),
            "first_failures": self.failures[:5],
            "late_starts": self.late_starts,
            "latency_ms": {
                k: {"p50": p(v, 0.5), "p95": p(v, 0.95), "max": p(v, 1.0),
                    "mean": round(statistics.fmean(v) * 1000, 1) if v else None}
                for k, v in self.latencies.items()
            },
        }  # fmt: skip


async def _http(client: Any, url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.get(f"{url}/v1/models", headers=headers)
    return response.status_code


async def _ws(ws_url: str, token: str) -> tuple[int | None, list[dict]]:
    """(close code, messages) of one /asr attempt that sends an empty stream at once."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    messages: list[dict] = []
    async with connect(f"{ws_url}?token={token}", open_timeout=30, close_timeout=5) as ws:
        try:
            first = json.loads(await ws.recv())
            messages.append(first)
            if first.get("type") == "config":
                await ws.send(b"")
            async for frame in ws:
                messages.append(json.loads(frame))
                if messages[-1].get("type") == "ready_to_stop":
                    break
        except ConnectionClosed:
            pass
    return ws.close_code, messages


async def run_load(url: str, token: str, rate: float, seconds: float, bad_token: str = "wrong") -> LoadResult:
    """`rate` attempts per second for `seconds`, cycling http_bad, ws_bad, http_good, ws_good."""
    import httpx

    ws_url = url.replace("http", "ws", 1) + "/asr"
    result = LoadResult()
    order = ("http_bad", "ws_bad", "http_good", "ws_good")

    async def attempt(kind: str, client: httpx.AsyncClient) -> None:
        start = time.monotonic()
        result.attempts[kind] += 1
        try:
            await asyncio.wait_for(check(kind, client), ATTEMPT_TIMEOUT)
        except asyncio.TimeoutError:
            result.failures.append(f"{kind}: no answer within {ATTEMPT_TIMEOUT} s")
        result.latencies[kind].append(time.monotonic() - start)

    async def check(kind: str, client: httpx.AsyncClient) -> None:
        try:
            if kind == "http_bad":
                status = await _http(client, url, bad_token if result.attempts[kind] % 2 else None)
                good = status == 401
                detail = f"status {status}"
            elif kind == "http_good":
                status = await _http(client, url, token)
                good, detail = status == 200, f"status {status}"
            elif kind == "ws_bad":
                code, messages = await _ws(ws_url, bad_token)
                good = code == 4401 and not any(m.get("type") == "config" for m in messages)
                detail = f"close {code}, {messages[:2]}"
            else:
                code, messages = await _ws(ws_url, token)
                types = [m.get("type") for m in messages]
                good = bool(messages) and types[0] == "config" and "session_id" in messages[0]
                good = good and types[-1] == "ready_to_stop" and code == 1000
                detail = f"close {code}, types {types}"
        except Exception as error:  # a refused or broken connection counts as a failure
            good, detail = False, f"{type(error).__name__}: {error}"
        if good:
            result.ok[kind] += 1
        else:
            result.failures.append(f"{kind}: {detail}")

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)  # a new connection each time
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        tasks: list[asyncio.Task] = []
        t0 = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                result.late_starts += 1
            tasks.append(asyncio.create_task(attempt(order[i % len(order)], client)))
        await asyncio.gather(*tasks)
        result.seconds = time.monotonic() - t0
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default="load-test-token")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--spawn", action="store_true", help="Start `wlk serve --pcm-input` on a free port.")
    args = parser.parse_args()
    server = None
    url = args.url
    if args.spawn:
        import socket
        import subprocess
        import tempfile

        import httpx

        scratch = tempfile.mkdtemp(prefix="wlk-load-")  # each good session is stored, as by default

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "whisperlivekit.cli", "serve", "--pcm-input", "--host", "127.0.0.1",
             "--port", str(port), "--api-token", args.token, "--store", f"sqlite://{scratch}/load.db",
             "--log-level", "WARNING"]
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    try:
        result = asyncio.run(run_load(url, args.token, args.rate, args.seconds))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    print(json.dumps(result.summary(), indent=2))
    return 0 if result.all_correct else 1


if __name__ == "__main__":
    sys.exit(main())
