"""What every benchmark shares: the result record, percentiles, an event-loop lag sampler,
peak memory, machine facts, the table, and the settings/emulator plumbing.

A bench script is ``python -m bench.bench_<id> [--quick] [--result-file PATH]``: it prints its
table and, with ``--result-file``, writes its ``Result`` as JSON for ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_KEY_ENV = "IMAGEGATE_BENCH_KEY"
NEBULA_MODEL = "black-forest-labs/FLUX.1-schnell"


@dataclass
class Result:
    """One benchmark figure, its same-run baseline, their ratio and the target it must meet."""

    id: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    target: str
    met: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class LagSampler:
    """Event-loop lag: a task sleeps ``interval_s`` over and over and records how late it woke.

    ``async with LagSampler() as lag: ...`` then ``lag.p99_ms`` and ``lag.max_ms``.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            scheduled = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lags_ms.append(max(0.0, loop.time() - scheduled) * 1000)

    async def __aenter__(self) -> LagSampler:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def p99_ms(self) -> float:
        return percentile(self.lags_ms, 99)

    @property
    def max_ms(self) -> float:
        return max(self.lags_ms, default=0.0)


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """This process's highest resident memory so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(results: list[Result]) -> str:
    """A Markdown table of results (also readable in a terminal)."""
    head = ["id", "value", "unit", "baseline", "ratio", "target", "met"]
    rows = [
        [
            r.id,
            fmt(r.value),
            r.unit,
            fmt(r.baseline),
            fmt(r.ratio),
            r.target,
            "yes" if r.met else "**MISSED**",
        ]
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=False)]
    lines = [head, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    )


def details_text(result: Result) -> str:
    return "; ".join(
        f"{k} {fmt(v) if isinstance(v, float) else v}" for k, v in result.details.items()
    )


def main(run: Callable[[bool], Awaitable[Result]], doc: str | None = None) -> None:
    """The command line of one bench script: ``[--quick] [--result-file PATH]``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; figures mean nothing")
    parser.add_argument("--result-file", type=Path, help="write the result record here as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick))
    print(table([result]))
    if result.details:
        print(f"  {result.id}: {details_text(result)}")
    if args.result_file:
        args.result_file.write_text(json.dumps(result.to_json()), encoding="utf-8")


# --- imagegate under test -------------------------------------------------------------------


def bench_settings(tmp: Path, base_url: str | None = None, **sections: Any) -> Any:
    """Settings on a temporary database: the NebulaBlock adapter pointed at ``base_url`` (the
    placeholder when None), credits and concurrency high enough never to be the limit."""
    from core import parse_settings

    data: dict[str, Any] = {
        "database": {"path": str(tmp / "imagegate.db")},
        "images": {"dir": str(tmp / "images")},
        "quota": {"allowance": 10**9, "rate_per_minute": 0, "max_in_flight": 0},
    }
    if base_url is not None:
        os.environ.setdefault(BENCH_KEY_ENV, "test-nebulablock-key")
        data["providers"] = {
            "nebula": {
                "kind": "nebulablock",
                "base_url": base_url,
                "api_key_env": BENCH_KEY_ENV,
                "models": [NEBULA_MODEL],
                "max_concurrency": 2000,
                "timeout_s": 60,
            }
        }
        data["defaults"] = {"model": f"nebula:{NEBULA_MODEL}"}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return parse_settings(data, source="bench")


@contextlib.asynccontextmanager
async def emulator(*args: str) -> AsyncIterator[tuple[str, str]]:
    """A NebulaBlock emulator in its own process (``bench.emulator``): yields (base_url, key)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.emulator",
        *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().split()
        if len(line) != 3 or line[0] != "ready":
            raise RuntimeError(f"bench emulator did not start: {line}")
        yield line[1], line[2]
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def timed(coro: Awaitable[Any]) -> float:
    """Seconds ``coro`` took."""
    start = time.perf_counter()
    await coro
    return time.perf_counter() - start
