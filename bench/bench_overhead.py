"""overhead: jobs/s through ImageService (quota, NebulaBlock adapter, decode, store) at
concurrency 32 against an emulator (own process) that answers at once, versus bare httpx POSTs
to the same emulator from one plain client per worker (the fastest plain httpx gets here; one
shared default client is slower, and its rate is reported too). Rounds alternate and medians
are compared, so load from elsewhere on the machine hits both alike. Target: ratio >= 0.5."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from bench.common import NEBULA_MODEL, Result, bench_settings, emulator, main
from core import Caller, ImageRequest, ImageService

CONCURRENCY = 32
Job = Callable[[int], Awaitable[object]]


async def _rate(job: Job, seconds: float) -> float:
    """Calls of ``job(i)`` completed per second by ``CONCURRENCY`` workers in ``seconds``."""
    counter = itertools.count()
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await job(next(counter))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - start)


def _bare(clients: list[httpx.AsyncClient], base_url: str, key: str) -> Job:
    """The same POST from plain httpx, one client per worker (httpx's pool slows down with
    every connection it holds, so this is the fastest plain httpx gets)."""
    url = f"{base_url}/images/generation"
    headers = {"Authorization": f"Bearer {key}"}

    async def post(i: int) -> None:
        body = {"model": NEBULA_MODEL, "prompt": "a lighthouse", "seed": i}
        response = await clients[i % CONCURRENCY].post(url, json=body, headers=headers)
        response.raise_for_status()

    return post


def _one_client(client: httpx.AsyncClient, base_url: str, key: str) -> Job:
    """The same POST from one default ``httpx.AsyncClient`` shared by all workers."""
    return _bare([client] * CONCURRENCY, base_url, key)


def _ours(service: ImageService) -> Job:
    callers = [Caller(frontend="mcp", user_id=f"user{i}") for i in range(CONCURRENCY)]

    async def generate(i: int) -> None:
        await service.generate(
            callers[i % CONCURRENCY], ImageRequest(prompt="a lighthouse", seed=i)
        )

    return generate


async def run(quick: bool) -> Result:
    rounds, seconds = (1, 0.5) if quick else (5, 2.0)
    bare_rates, our_rates, shared_rates = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        async with emulator() as (base_url, key):
            clients = [httpx.AsyncClient(timeout=60) for _ in range(CONCURRENCY + 1)]
            service = await ImageService.open(bench_settings(Path(tmp), base_url), sweeper=False)
            try:
                bare, ours = _bare(clients[:CONCURRENCY], base_url, key), _ours(service)
                shared = _one_client(clients[-1], base_url, key)
                for job in (bare, ours, shared):  # open the connections, fill the caches
                    await _rate(job, 0.3)
                for _ in range(rounds):
                    bare_rates.append(await _rate(bare, seconds))
                    our_rates.append(await _rate(ours, seconds))
                shared_rates.append(await _rate(shared, seconds))
            finally:
                await service.aclose()
                for client in clients:
                    await client.aclose()
    bare_rate, our_rate = statistics.median(bare_rates), statistics.median(our_rates)
    ratio = our_rate / bare_rate
    return Result(
        id="overhead",
        value=round(our_rate, 1),
        unit="jobs/s",
        baseline=round(bare_rate, 1),
        ratio=round(ratio, 3),
        target="ratio >= 0.5",
        met=ratio >= 0.5,
        details={
            "concurrency": CONCURRENCY,
            "rounds": f"{rounds} x {seconds:g} s each",
            "ours_jobs_s": [round(r) for r in our_rates],
            "bare_req_s": [round(r) for r in bare_rates],
            "extra_ms_per_job": round(1000 / our_rate - 1000 / bare_rate, 2),
            "one_default_client_req_s": round(shared_rates[0]),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
