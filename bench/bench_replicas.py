"""replicas: 1,000 generate_image calls (MCP over HTTP, 10 tokens) against a provider emulator
that takes 1 s per image (``bench.emulator --delay 1``, its own process), through 2 replicas
(``bench.replica_child``: ``imagegate mcp --transport http`` with a lag sampler) sharing one
throwaway PostgreSQL database, versus the same through 1 replica. Reports each run's wall
time, CPU per job per replica (ms) and the worst replica's event-loop lag p99; the ratio is
the one replica's wall over the two replicas'. On a 2-core machine that also runs the
database, the emulator and the client, 2 replicas cannot get far past one; the figure says
how the work splits, not what two hosts would do. Target: ratio >= 1 (two are no slower)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import BENCH_KEY_ENV, NEBULA_MODEL, ROOT, Result, emulator, main
from tests.conftest import PG_URL_ENV
from tests.pgserver import PostgresServer

TOKENS = [f"bench-replica-token-{n:02d}-abcdefghij" for n in range(10)]
SESSIONS_PER_TOKEN = 2


def _config(tmp: Path, base_url: str) -> Path:
    clients = "".join(
        f'[[mcp.clients]]\nuser = "u{n}"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        for n, token in enumerate(TOKENS)
    )
    path = tmp / "replica.toml"
    path.write_text(
        f"""
[database]
url_env = "{PG_URL_ENV}"
pool_size = 10
[images]
dir = "{tmp / "images"}"
[quota]
allowance = 1000000000
[mcp]
port = 0
wait_bound_s = 120
{clients}
[providers.nebula]
kind = "nebulablock"
base_url = "{base_url}"
api_key_env = "{BENCH_KEY_ENV}"
models = ["{NEBULA_MODEL}"]
max_concurrency = 2000
timeout_s = 60
[defaults]
model = "nebula:{NEBULA_MODEL}"
""",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def _replicas(
    count: int, config: Path, env: dict[str, str], tmp: Path
) -> AsyncIterator[tuple[list[str], list[Any], list[Path]]]:
    processes, urls, outs = [], [], []
    try:
        for n in range(count):
            out = tmp / f"replica{n}-{time.monotonic_ns()}.json"
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.replica_child", str(config), str(out),
                cwd=str(ROOT), env=env, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            processes.append(process)
            outs.append(out)
            urls.append(await _listening(process))
        yield urls, processes, outs
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            await asyncio.wait_for(process.wait(), 60)


async def _listening(process: Any) -> str:
    lines = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        if not line:
            raise RuntimeError("a replica exited early: " + "".join(lines)[-2000:])
        lines.append(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+/mcp)", line)
        if found:
            asyncio.get_running_loop().create_task(_drain(process))
            return found[1]


async def _drain(process: Any) -> None:
    async for _ in process.stderr:  # a full stderr pipe would stall the replica
        pass


async def _load(urls: list[str], jobs: int, processes: list[Any]) -> tuple[float, int]:
    """Send ``jobs`` calls spread over the replicas at once; (wall seconds, failures)."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = []
        for n, token in enumerate(TOKENS):
            for k in range(SESSIONS_PER_TOKEN):
                url = urls[(n * SESSIONS_PER_TOKEN + k) % len(urls)]
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300)
                )
                client = Client(streamable_http_client(url, http_client=http))
                sessions.append(await stack.enter_async_context(client))
        for process in processes:
            process.send_signal(signal.SIGUSR1)  # the measured load starts now
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                sessions[i % len(sessions)].call_tool(
                    "generate_image", {"prompt": f"job {i}", "return_image": "none"}
                )
                for i in range(jobs)
            )
        )
        wall = time.perf_counter() - start
    failed = sum(r.is_error or r.structured_content.get("status") != "succeeded" for r in results)
    return wall, failed


async def _run(count: int, jobs: int, config: Path, env: dict[str, str], tmp: Path) -> dict:
    async with _replicas(count, config, env, tmp) as (urls, processes, outs):
        wall, failed = await _load(urls, jobs, processes)
    figures = [json.loads(out.read_text()) for out in outs]
    return {
        "wall_s": round(wall, 2),
        "failed": failed,
        "cpu_ms_per_job": [round(f["cpu_s"] * 1000 * count / jobs, 2) for f in figures],
        "lag_p99_ms": round(max(f["lag_p99_ms"] for f in figures), 1),
    }


async def run(quick: bool) -> Result:
    jobs, delay = (40, 0.2) if quick else (1000, 1.0)
    server = PostgresServer(durable=True).start()
    try:
        async with emulator("--delay", str(delay)) as (base_url, key):
            with tempfile.TemporaryDirectory(prefix="imagegate-replicas-") as folder:
                tmp = Path(folder)
                config = _config(tmp, base_url)
                env = {**os.environ, "PYTHONPATH": str(ROOT), BENCH_KEY_ENV: key}
                env[PG_URL_ENV] = server.create_database()
                one = await _run(1, jobs, config, env, tmp)
                env[PG_URL_ENV] = server.create_database()
                two = await _run(2, jobs, config, env, tmp)
    finally:
        server.stop()
    ratio = one["wall_s"] / two["wall_s"]
    return Result(
        id="replicas",
        value=two["wall_s"],
        unit="s",
        baseline=one["wall_s"],
        ratio=round(ratio, 3),
        target=f"{jobs} jobs of {delay:g} s: 2 replicas no slower than 1 (ratio >= 1)",
        met=ratio >= 1 and not one["failed"] and not two["failed"],
        details={
            "jobs": jobs,
            "provider_delay_s": delay,
            "one_replica": one,
            "two_replicas": two,
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
