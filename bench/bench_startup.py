"""startup: from spawning ``imagegate mcp`` (stdio, placeholder provider) until its answer to
tools/list arrives; baseline: spawning ``python -c pass`` until it exits. Median of several
runs. Target: <= 1.0 s. The same time for a bare MCPServer with one tool
(``bench/echo_server.py``) is reported too: importing the MCP SDK alone takes most of it."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client, StdioServerParameters

from bench.common import ROOT, Result, main


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def _python_pass() -> float:
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    return time.perf_counter() - start


async def _until_tools_listed(params: StdioServerParameters) -> tuple[float, int]:
    """Seconds from spawning the server until its tools/list answer, and how many tools."""
    start = time.perf_counter()
    async with Client(params) as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - start
    return elapsed, len(tools.tools)


async def run(quick: bool) -> Result:
    runs = 2 if quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'[database]\npath = "{Path(tmp) / "db.sqlite"}"\n'
            f'[images]\ndir = "{Path(tmp) / "images"}"\n',
            encoding="utf-8",
        )
        imagegate = Path(sys.executable).with_name("imagegate")
        ours = StdioServerParameters(command=str(imagegate), args=["--config", str(config), "mcp"])
        echo = StdioServerParameters(
            command=sys.executable, args=["-m", "bench.echo_server"], env=_env()
        )
        await _until_tools_listed(ours)  # the first start creates the database
        baseline = statistics.median([await _python_pass() for _ in range(runs)])
        timings = [await _until_tools_listed(ours) for _ in range(runs)]
        floor = statistics.median([(await _until_tools_listed(echo))[0] for _ in range(runs)])
    value = statistics.median(t for t, _ in timings)
    return Result(
        id="startup",
        value=round(value, 3),
        unit="s",
        baseline=round(baseline, 3),
        ratio=round(value / baseline, 1),
        target="<= 1.0 s",
        met=value <= 1.0,
        details={
            "runs": runs,
            "tools": timings[0][1],
            "max_s": round(max(t for t, _ in timings), 3),
            "bare_mcpserver_echo_s": round(floor, 3),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
