"""One of the two processes ``bench.soak_pidns`` runs, each in its own PID namespace (so both
are pid 1, on the same host name): ``python -m bench.soak_pidns_child PLAN.json``.

It opens ``ImageService`` with its sweeper on (so it releases whatever it believes abandoned,
at start-up and every ``sweep_interval_s``), then runs jobs from ``workers`` workers until it
gets SIGTERM, then finishes the jobs under way and closes. Every step goes to stdout as one
JSON line, flushed: ``ready`` (its instance id), ``done`` (key, job, charged, images, seconds)
or ``fail`` (key, code), ``closed``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from core import Caller, ImageGateError, ImageRequest, ImageService, load_settings


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def main(plan: dict[str, Any]) -> None:
    service = await ImageService.open(load_settings(plan["config"]))
    stop = asyncio.Event()
    # As pid 1 of its namespace the process ignores SIGTERM unless it handles it.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    caller = Caller(frontend="cli", user_id=plan["user"])
    emit("ready", instance=service.owner)

    async def worker(index: int) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            await run_one(service, caller, f"{plan['name']}-w{index}-{number}", plan["model"])

    await asyncio.gather(*(worker(i) for i in range(plan["workers"])))
    await service.aclose()
    emit("closed")


async def run_one(service: ImageService, caller: Caller, key: str, model: str) -> None:
    started = time.monotonic()
    request = ImageRequest(prompt=f"pid namespace test {key}", model=model)
    try:
        result = await service.generate(caller, request, idempotency_key=key)
    except ImageGateError as exc:
        emit("fail", key=key, code=exc.code, message=exc.message)
        return
    emit(
        "done",
        key=key,
        job=result.job_id,
        charged=result.credits_charged,
        images=len(result.images),
        seconds=round(time.monotonic() - started, 3),
    )


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
