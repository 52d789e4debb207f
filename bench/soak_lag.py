"""One user cannot freeze the process: a user with zero credits sends the largest allowed edit
(a noise JPEG at ``[images] max_input_bytes`` and within ``max_pixels``) while other users make
small images and a probe measures how late the event loop runs its callbacks.

Through ``ImageService`` as every front end calls it: ``load_input`` then ``edit``. The refusal
must come before any decoding (issue 12 item 5), so the lag with the zero-credit user should
stay near the lag without it (``zero_credit_lag_baseline_max_ms``, measured first, for as long).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image

from core import Caller, ImageRequest, ImageService, QuotaExceededError, parse_settings

PROBE_S = 0.005
OTHERS = 4


class LagProbe:
    """Sleeps ``PROBE_S`` in a loop and keeps the largest overshoot (the event loop's lag)."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            self.max_s = max(self.max_s, time.perf_counter() - started - PROBE_S)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def largest_edit(max_bytes: int, max_pixels: int) -> bytes:
    """A noise JPEG as large as allowed: noise compresses worst, so it costs most to decode."""
    side = int(max_pixels**0.5)
    while True:
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
        side = int(side * (max_bytes / buf.tell()) ** 0.5 * 0.98)


async def run_lag_phase(tmp: Path, *, attempts: int = 3, seconds: float = 1.0) -> dict[str, Any]:
    """At least ``attempts`` refused edits, sent one after another for ``seconds`` at least."""
    settings = parse_settings(
        {
            "database": {"path": str(tmp / "lag.db")},
            "images": {"dir": str(tmp / "images")},
            "quota": {"allowance": 0},
        }
    )
    data = await asyncio.to_thread(
        largest_edit, settings.images.max_input_bytes, settings.images.max_pixels
    )
    others = [Caller(frontend="cli", user_id=f"other{i}") for i in range(OTHERS)]
    broke = Caller(frontend="cli", user_id="zero-credits")
    async with await ImageService.open(settings, sweeper=False) as service:
        admin = Caller(frontend="cli", user_id="ops", is_admin=True)
        for caller in others:
            await service.grant(admin, caller, 1_000_000)
        done = [0]

        async def small_jobs(caller: Caller, stop: asyncio.Event) -> None:
            while not stop.is_set():
                await service.generate(caller, ImageRequest(prompt="small", size=(64, 64)))
                done[0] += 1

        async def with_others(work: Any) -> tuple[float, float]:
            stop = asyncio.Event()
            workers = [asyncio.create_task(small_jobs(c, stop)) for c in others]
            started = time.perf_counter()
            with LagProbe() as probe:
                await work()
            seconds = time.perf_counter() - started
            stop.set()
            await asyncio.gather(*workers)
            return probe.max_s, seconds

        refused: list[float] = []
        tries: list[float] = []

        async def zero_credit_edits() -> None:
            # Again and again for ``seconds`` at least: the probe needs time to sample.
            until = time.perf_counter() + seconds
            while len(tries) < attempts or time.perf_counter() < until:
                started = time.perf_counter()
                tries.append(started)
                try:
                    image = await service.load_input(data)
                    await service.edit(
                        broke, ImageRequest(operation="variation", prompt="x", image=image)
                    )
                except QuotaExceededError:
                    refused.append(time.perf_counter() - started)

        lag, took = await with_others(zero_credit_edits)
        baseline, _ = await with_others(lambda: asyncio.sleep(took))
    return {
        "zero_credit_lag_max_ms": round(lag * 1000, 1),
        "zero_credit_lag_baseline_max_ms": round(baseline * 1000, 1),
        "zero_credit_edit_bytes": len(data),
        "zero_credit_attempts": len(tries),
        "zero_credit_refused": len(refused),
        "zero_credit_refusal_max_ms": round(max(refused, default=0) * 1000, 1),
        "zero_credit_other_jobs": done[0],
    }


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run_lag_phase(Path(tmp))), indent=2))
