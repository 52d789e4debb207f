"""discord: how long the bot takes from INTERACTION_CREATE to its defer callback arriving at the
fake Discord (``tests/discord_fake``, same process), while 50 jobs are in flight (their provider
calls held open, their progress messages being edited). Target: p99 <= 100 ms."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.common import LagSampler, Result, bench_settings, main, percentile
from bot.app import create_bot
from core import ImageService
from tests.discord_fake import FakeDiscord, logged_in

IN_FLIGHT = 50


def _hold_provider(service: ImageService, gate: asyncio.Event) -> None:
    """Every provider call waits for ``gate``: the jobs stay in flight."""
    for model in service.registry.models.values():
        original = model.do_generate

        async def held(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            await gate.wait()
            return await _original(*args, **kwargs)

        model.do_generate = held  # type: ignore[method-assign]


async def run(quick: bool) -> Result:
    in_flight, measured = (5, 10) if quick else (IN_FLIGHT, 200)
    gate = asyncio.Event()
    with tempfile.TemporaryDirectory() as tmp:
        held = {"placeholder": {"kind": "placeholder", "max_concurrency": IN_FLIGHT}}
        settings = bench_settings(Path(tmp), providers=held)
        service = await ImageService.open(settings, sweeper=False)
        try:
            _hold_provider(service, gate)
            async with FakeDiscord() as fake:
                with fake.patch_discord():
                    bot = create_bot(service, settings)
                    async with logged_in(bot, fake):
                        users = [fake.create_user(f"user{i}") for i in range(in_flight + measured)]
                        busy = [
                            await fake.slash("imagine", {"prompt": f"busy {i}"}, user=users[i])
                            for i in range(in_flight)
                        ]
                        await asyncio.gather(*(h.wait_callback() for h in busy))
                        latencies = []
                        async with LagSampler() as lag:
                            for user in users[in_flight:]:
                                handle = await fake.slash("imagine", {"prompt": "a fox"}, user=user)
                                await handle.wait_callback()
                                latencies.append(handle.callback_latency * 1000)
                                await asyncio.sleep(0.01)
                        gate.set()
                        await fake.wait_until(
                            lambda: sum(bool(c.files) for c in fake.calls) >= len(users),
                            60,
                            "every job's result",
                        )
        finally:
            gate.set()
            await service.aclose()
    p99 = percentile(latencies, 99)
    return Result(
        id="discord",
        value=round(p99, 1),
        unit="ms defer p99",
        baseline=None,
        ratio=None,
        target="<= 100 ms",
        met=p99 <= 100,
        details={
            "in_flight": in_flight,
            "interactions": measured,
            "p50_ms": round(percentile(latencies, 50), 1),
            "max_ms": round(max(latencies), 1),
            "lag_p99_ms": round(lag.p99_ms, 1),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
