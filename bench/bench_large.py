"""large: one job of 8 images of 2048x2048 that NebulaBlock returns as base64 (photo-like PNGs
of about 8 MB each), through ImageService. Baseline: the payload size (the base64 the emulator
sends). Targets: peak RSS growth <= 3x the payload; event-loop lag max <= 50 ms."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from bench.common import LagSampler, Result, bench_settings, emulator, main, peak_rss_mb, rss_mb
from core import Caller, ImageRequest, ImageService

IMAGES = 8


async def run(quick: bool) -> Result:
    side = 256 if quick else 2048
    async with emulator("--noise", "--prewarm", f"{side}x{side}") as (base_url, _key):
        with tempfile.TemporaryDirectory() as tmp:
            service = await ImageService.open(bench_settings(Path(tmp), base_url), sweeper=False)
            try:
                caller = Caller(frontend="mcp", user_id="alice")
                await service.generate(caller, ImageRequest(prompt="warm up", size=(64, 64)))
                before = rss_mb()
                async with LagSampler() as lag:
                    result = await service.generate(
                        caller, ImageRequest(prompt="a harbour", n=IMAGES, size=(side, side))
                    )
                peak = peak_rss_mb()
                sizes = [image.path.stat().st_size for image in result.images]
            finally:
                await service.aclose()
    payload_mb = sum(4 * math.ceil(size / 3) for size in sizes) / 1e6  # base64 of each PNG
    growth = max(0.0, peak - before)
    ratio = growth / payload_mb
    return Result(
        id="large",
        value=round(growth, 1),
        unit="MB peak RSS growth",
        baseline=round(payload_mb, 1),
        ratio=round(ratio, 2),
        target="RSS <= 3x payload, lag max <= 50 ms",
        met=len(sizes) == IMAGES and ratio <= 3 and lag.max_ms <= 50,
        details={
            "images": f"{len(sizes)} x {side}x{side}",
            "lag_max_ms": round(lag.max_ms, 1),
            "lag_p99_ms": round(lag.p99_ms, 1),
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
