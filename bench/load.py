"""A load generator, run as its own process: `concurrency` clients on loopback send `requests`
POSTs in all (or stop at `seconds`), and the latencies come back as JSON on stdout.

    python -m bench.load URL BODY_FILE --concurrency 64 --requests 2000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx


async def _run(url: str, body: bytes, concurrency: int, requests: int, seconds: float) -> dict:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("load is only ever sent to loopback")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    remaining = requests
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                if status == "200":
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[status] = errors.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(
        _run(args.url, args.body.read_bytes(), args.concurrency, args.requests, args.seconds)
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
