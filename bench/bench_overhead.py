"""overhead: jobs/s through ImageService (quota, NebulaBlock adapter, decode, store) at
concurrency 32 against an emulator (own process) that answers at once, versus two baselines
measured in the same run: bare httpx POSTs to the same emulator from one plain client per worker
(the fastest plain httpx gets here; one shared default client is slower, and its rate is
reported too), and the same POSTs plus what storing every image durably costs at the least
(``details.ratio_durable``): the decoded image written to a new file as durably as ours (data
fsynced, renamed, directory fsynced, in worker threads) and one committed SQLite insert per job
(WAL, ``synchronous = FULL``, one connection in its own thread). Rounds alternate and medians are
compared, so load from elsewhere on the machine hits all alike. Targets: ratio >= 0.5 and
ratio_durable >= 0.8."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
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


class DurableFloor:
    """The bare POST, then its image stored as durably as ours, plainly: the file in a worker
    thread, then one committed insert by one connection in a thread of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = itertools.count()  # every image a new file, across rounds
        self.db = ThreadPoolExecutor(1, thread_name_prefix="baseline-db")
        self.conn = self.db.submit(self._connect).result()

    def _connect(self) -> sqlite3.Connection:
        for shard in range(256):  # as many folders as the image store has
            (self.folder / f"{shard:02x}").mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.folder / "baseline.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE image (path TEXT, bytes INTEGER, created_at INTEGER)")
        return conn

    def close(self) -> None:
        self.db.submit(self.conn.close).result()
        self.db.shutdown()

    def job(self, clients: list[httpx.AsyncClient], base_url: str, key: str) -> Job:
        url = f"{base_url}/images/generation"
        headers = {"Authorization": f"Bearer {key}"}
        loop = asyncio.get_running_loop()

        async def post_store_commit(i: int) -> None:
            body = {"model": NEBULA_MODEL, "prompt": "a lighthouse", "seed": i}
            response = await clients[i % CONCURRENCY].post(url, json=body, headers=headers)
            response.raise_for_status()
            data = base64.b64decode(response.json()["data"][0]["b64_json"])
            name = next(self.names)
            path = self.folder / f"{name % 256:02x}" / f"{name}.png"
            await asyncio.to_thread(_write_durably, path, data)
            await loop.run_in_executor(self.db, self._insert, str(path), len(data))

        return post_store_commit

    def _insert(self, path: str, size: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO image VALUES (?, ?, ?)", (path, size, time.time_ns()))
        self.conn.execute("COMMIT")


def _write_durably(path: Path, data: bytes) -> None:
    """A new file: its data fsynced, renamed into place, its folder fsynced."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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
    bare_rates, durable_rates, our_rates, shared_rates = [], [], [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        async with emulator() as (base_url, key):
            clients = [httpx.AsyncClient(timeout=60) for _ in range(CONCURRENCY + 1)]
            service = await ImageService.open(bench_settings(Path(tmp), base_url), sweeper=False)
            floor = DurableFloor(Path(tmp) / "baseline")
            try:
                bare, ours = _bare(clients[:CONCURRENCY], base_url, key), _ours(service)
                durable = floor.job(clients[:CONCURRENCY], base_url, key)
                shared = _one_client(clients[-1], base_url, key)
                for job in (bare, durable, ours, shared):  # open connections, fill caches
                    await _rate(job, 0.3)
                for _ in range(rounds):
                    bare_rates.append(await _rate(bare, seconds))
                    durable_rates.append(await _rate(durable, seconds))
                    our_rates.append(await _rate(ours, seconds))
                shared_rates.append(await _rate(shared, seconds))
            finally:
                floor.close()
                await service.aclose()
                for client in clients:
                    await client.aclose()
    bare_rate, our_rate = statistics.median(bare_rates), statistics.median(our_rates)
    durable_rate = statistics.median(durable_rates)
    ratio, ratio_durable = our_rate / bare_rate, our_rate / durable_rate
    return Result(
        id="overhead",
        value=round(our_rate, 1),
        unit="jobs/s",
        baseline=round(bare_rate, 1),
        ratio=round(ratio, 3),
        target="ratio >= 0.5, ratio_durable >= 0.8",
        met=ratio >= 0.5 and ratio_durable >= 0.8,
        details={
            "ratio_durable": round(ratio_durable, 3),
            "concurrency": CONCURRENCY,
            "rounds": f"{rounds} x {seconds:g} s each",
            "ours_jobs_s": [round(r) for r in our_rates],
            "bare_req_s": [round(r) for r in bare_rates],
            "durable_floor_jobs_s": [round(r) for r in durable_rates],
            "extra_ms_per_job": round(1000 / our_rate - 1000 / bare_rate, 2),
            "extra_ms_per_job_over_durable": round(1000 / our_rate - 1000 / durable_rate, 2),
            "one_default_client_req_s": round(shared_rates[0]),
            "load_1m_before": round(load_before, 2),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
