"""The process that ``bench.soak_crash`` kills: ``python -m bench.soak_crash_child PLAN.json``.

It opens ``ImageService`` (which releases what a killed predecessor left held), first sends
again the requests its predecessor never answered (same idempotency keys, same requests) and
makes one job on the plan's first model (the probe), then runs jobs from ``concurrency``
workers until it is killed. Every step goes to stdout as one JSON line, flushed: ``start``
(key, request) before a call; ``done`` (key, job, charged, images, replayed) or ``fail`` (key,
code) after it; ``ready`` once the replays and the probe are answered, so every run checks
its replays and, when the provider is failing, sees one failed job, however slow the
machine. With ``kill_at`` in the plan it kills itself with SIGKILL right after the
``kill_after``-th call of that step (after ``ready``) commits.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from core import Caller, ImageGateError, ImageRequest, ImageService, load_settings

# Where a job can die, in the order a job passes them (each is "right after this step").
KILL_POINTS = (
    "reserve",  # credits held and the job recorded, provider not called
    "provider",  # the provider answered, nothing stored yet
    "save_images",  # image files written, hold still open
    "settle_and_report",  # charged (or released) with images and outcome, caller not answered
    "release",  # a failed job's hold given back
    "finish_job",  # a failed job's record final, the caller not answered
)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(service: ImageService, point: str, after: int) -> None:
    """Make the ``after``-th call of ``point`` kill the process once it has returned."""
    calls = 0

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            result = await original(*args, **kwargs)
            calls += 1
            if calls >= after:
                _die()
            return result

        setattr(owner, name, wrapper)

    if point == "provider":
        for model in service.registry.models.values():
            wrap(model, "do_generate")
    elif point in ("reserve", "settle_and_report", "release"):
        wrap(service.quotas, point)
    else:
        wrap(service.store, point)


def request_for(rng: random.Random, models: list[str]) -> dict[str, Any]:
    model = rng.choice(models)
    fields: dict[str, Any] = {
        "prompt": f"crash test {rng.randrange(10**6)}",
        "n": rng.choice((1, 1, 2, 3)),
        "model": model,
    }
    if model.startswith("placeholder"):
        fields["size"] = [64, 64]
    return fields


async def main(plan: dict[str, Any]) -> None:
    service = await ImageService.open(load_settings(plan["config"]), sweeper=False)
    service.orchestrator.base_delay_s = 0.01
    caller = Caller(frontend="cli", user_id=plan["user"])
    for item in plan["replay"]:
        await run_one(service, caller, item["key"], item["fields"], replay=True)
    rng = random.Random(plan["seed"])
    models = plan["models"]
    await run_one(service, caller, f"run{plan['run']}-probe", request_for(rng, models[:1]))
    emit("ready", pid=os.getpid())
    if plan.get("kill_at"):
        arm(service, plan["kill_at"], plan["kill_after"])

    async def worker(index: int) -> None:
        for number in range(plan["max_jobs"]):
            key = f"run{plan['run']}-w{index}-{number}"
            await run_one(service, caller, key, request_for(rng, models))

    await asyncio.gather(*(worker(i) for i in range(plan["concurrency"])))
    emit("exhausted")
    await service.aclose()


async def run_one(
    service: ImageService, caller: Caller, key: str, fields: dict[str, Any], replay: bool = False
) -> None:
    emit("start", key=key, fields=fields, replay=replay)
    request = ImageRequest.model_validate(fields)
    try:
        result = await service.generate(caller, request, idempotency_key=key)
    except ImageGateError as exc:
        emit("fail", key=key, code=exc.code, message=exc.message, replay=replay)
        return
    emit(
        "done",
        key=key,
        job=result.job_id,
        charged=result.credits_charged,
        images=len(result.images),
        replayed=result.replayed,
        replay=replay,
    )


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
