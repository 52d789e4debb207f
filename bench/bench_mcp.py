"""mcp: round trips over stdio to ``imagegate mcp`` (placeholder provider): get_quota, and
generate_image (64x64, no inline image), p50/p99; baseline: a bare MCPServer with one echo tool
(``bench/echo_server.py``), same client. Target: get_quota p50 <= 1.5x the echo p50."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from bench.common import ROOT, Result, main, percentile


def _imagegate(tmp: Path) -> StdioServerParameters:
    config = tmp / "config.toml"
    config.write_text(
        f'[database]\npath = "{tmp / "db.sqlite"}"\n[images]\ndir = "{tmp / "images"}"\n'
        '[quota]\nallowance = 1000000\n[mcp]\nstdio_user = "bench"\n',
        encoding="utf-8",
    )
    imagegate = Path(sys.executable).with_name("imagegate")
    return StdioServerParameters(command=str(imagegate), args=["--config", str(config), "mcp"])


def _echo() -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(command=sys.executable, args=["-m", "bench.echo_server"], env=env)


async def _times(
    params: StdioServerParameters, tool: str, args: dict[str, Any], n: int
) -> list[float]:
    """Milliseconds per ``call_tool`` round trip, after a few warm-up calls."""
    async with Client(params) as client:
        for _ in range(3):
            await client.call_tool(tool, args)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            result = await client.call_tool(tool, args)
            times.append((time.perf_counter() - start) * 1000)
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
    return times


async def run(quick: bool) -> Result:
    n = 10 if quick else 200
    generate = {"prompt": "a lighthouse", "size": "64x64", "return_image": "none"}
    with tempfile.TemporaryDirectory() as tmp:
        echo = await _times(_echo(), "echo", {"text": "hello"}, n)
        quota = await _times(_imagegate(Path(tmp)), "get_quota", {}, n)
        made = await _times(_imagegate(Path(tmp)), "generate_image", generate, n // 2)
    echo_p50, quota_p50 = percentile(echo, 50), percentile(quota, 50)
    ratio = quota_p50 / echo_p50
    return Result(
        id="mcp",
        value=round(quota_p50, 2),
        unit="ms get_quota p50",
        baseline=round(echo_p50, 2),
        ratio=round(ratio, 2),
        target="ratio <= 1.5",
        met=ratio <= 1.5,
        details={
            "echo_p99_ms": round(percentile(echo, 99), 2),
            "get_quota_p99_ms": round(percentile(quota, 99), 2),
            "generate_image_p50_ms": round(percentile(made, 50), 2),
            "generate_image_p99_ms": round(percentile(made, 99), 2),
            "generate_ratio_p50": round(percentile(made, 50) / echo_p50, 2),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
