"""fan-out: 1,000 concurrent jobs through ImageService against an emulator (own process) that
takes 1 s per image, versus the ideal 1 s. Targets: wall <= 1.3 s and event-loop lag p99 <= 20
ms; peak RSS and CPU per job are reported. For scale, the same 1,000 POSTs from bare httpx (to
the same emulator) are timed in the same run, as the floor this machine sets."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import httpx

from bench.common import (
    NEBULA_MODEL,
    LagSampler,
    Result,
    bench_settings,
    emulator,
    main,
    peak_rss_mb,
    rss_mb,
)
from core import Caller, ImageRequest, ImageService

DELAY_S = 1.0


class Burst(NamedTuple):
    wall_s: float
    lag: LagSampler
    failed: int
    cpu_ms_per_job: float  # this process's CPU time (all threads) over the jobs


async def _burst(job: Callable[[int], Awaitable[object]], n: int) -> Burst:
    """``n`` concurrent ``job(i)``: wall time, the loop's lag meanwhile, failures, CPU."""
    async with LagSampler() as lag:
        start, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(job(i) for i in range(1, n + 1)), return_exceptions=True)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = sum(isinstance(r, BaseException) for r in results)
    return Burst(wall, lag, failed, cpu * 1000 / n)


async def _bare(base_url: str, key: str, n: int) -> Burst:
    """The same POSTs from plain httpx, spread over 32 clients (one client's pool slows down
    with every connection it holds: 1,000 on one pool take several times longer)."""
    clients = [httpx.AsyncClient(timeout=60) for _ in range(32)]
    url, headers = f"{base_url}/images/generation", {"Authorization": f"Bearer {key}"}

    async def post(i: int) -> None:
        body = {"model": NEBULA_MODEL, "prompt": "a city", "seed": i}
        response = await clients[i % len(clients)].post(url, json=body, headers=headers)
        response.raise_for_status()

    try:
        return await _burst(post, n)
    finally:
        for client in clients:
            await client.aclose()


async def run(quick: bool) -> Result:
    jobs, delay = (20, 0.1) if quick else (1000, DELAY_S)
    async with emulator("--delay", str(delay)) as (base_url, key):
        with tempfile.TemporaryDirectory() as tmp:
            service = await ImageService.open(bench_settings(Path(tmp), base_url), sweeper=False)
            try:
                caller = Caller(frontend="discord", user_id="1234")
                await service.generate(caller, ImageRequest(prompt="warm up", seed=0))
                rss_before = rss_mb()

                async def generate(i: int) -> None:
                    await service.generate(caller, ImageRequest(prompt="a city", seed=i))

                ours = await _burst(generate, jobs)
                peak = peak_rss_mb()
            finally:
                await service.aclose()
        bare = await _bare(base_url, key, jobs)
    wall, lag = ours.wall_s, ours.lag
    return Result(
        id="fan-out",
        value=round(wall, 3),
        unit="s",
        baseline=delay,
        ratio=round(wall / delay, 3),
        target="wall <= 1.3 s, lag p99 <= 20 ms",
        met=not ours.failed and wall <= 1.3 * delay and lag.p99_ms <= 20,
        details={
            "jobs": jobs,
            "failed": ours.failed,
            "lag_p99_ms": round(lag.p99_ms, 1),
            "lag_max_ms": round(lag.max_ms, 1),
            "peak_rss_mb": round(peak, 1),
            "rss_growth_mb": round(peak - rss_before, 1),
            "cpu_ms_per_job": round(ours.cpu_ms_per_job, 2),
            "bare_httpx_wall_s": round(bare.wall_s, 3),
            "bare_httpx_lag_p99_ms": round(bare.lag.p99_ms, 1),
            "bare_httpx_cpu_ms_per_request": round(bare.cpu_ms_per_job, 2),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
