"""One replica for ``bench.bench_replicas``: ``python -m bench.replica_child CONFIG OUT``.

Runs ``imagegate mcp --transport http`` (the same ``_serve``) with an event-loop lag sampler.
SIGUSR1 marks the start of the measured load (the lag samples and CPU so far are dropped);
SIGINT stops it, and it writes ``{"cpu_s", "lag_p99_ms", "lag_max_ms"}`` for the load to OUT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from bench.common import LagSampler
from core import load_settings
from mcp_server.serve import _serve


async def main(config: str, out: Path) -> int:
    settings = load_settings(config)
    marks = {"cpu": time.process_time()}
    async with LagSampler(0.01) as lag:

        def start_of_load() -> None:
            lag.lags_ms.clear()
            marks["cpu"] = time.process_time()

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, start_of_load)
        code = await _serve(settings, everything=False)
    figures = {
        "cpu_s": time.process_time() - marks["cpu"],
        "lag_p99_ms": lag.p99_ms,
        "lag_max_ms": lag.max_ms,
    }
    out.write_text(json.dumps(figures), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]))))
