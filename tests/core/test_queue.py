"""The per-provider job queue: FIFO with positions, cancel-safe, entered after the credits are
reserved (so a queued job is in flight and its hold covers the wait), with progress events in
the documented order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core import Caller, ImageRequest, ImageService
from core.queue import SlotQueue
from tests.conftest import make_settings

ALICE = Caller(frontend="cli", user_id="alice")
BOB = Caller(frontend="cli", user_id="bob")


async def test_slot_queue_is_fifo_with_positions_and_cancel_safe():
    queue = SlotQueue(1)
    first = queue.enter()
    assert await first.wait()
    second, third = queue.enter(), queue.enter()
    assert (first.position, second.position, third.position) == (0, 1, 2)

    waiter = asyncio.create_task(second.wait())
    await asyncio.sleep(0)
    waiter.cancel()  # the second job gives up its place ...
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert third.position == 1
    first.leave()  # ... so the third runs next
    assert await asyncio.wait_for(third.wait(), 1)
    assert queue.running == 1 and queue.waiting == 0
    third.leave()
    third.leave()  # twice is harmless
    assert queue.running == 0


async def test_a_follower_wakes_when_the_line_moves():
    queue = SlotQueue(1)
    running = queue.enter()
    ahead, behind = queue.enter(), queue.enter()
    follower = asyncio.create_task(behind.wait(follow=True))
    await asyncio.sleep(0)
    ahead.leave()  # not admitted, but the line moved
    assert await follower is False and behind.position == 1
    running.leave()
    assert await behind.wait() and behind.position == 0


class Gate:
    """Holds the provider's calls until ``open()``."""

    def __init__(self, service: ImageService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.started = 0
        model = service.registry.models["placeholder:default"]
        original = model.do_generate

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            await self.opened.wait()
            return await original(*args, **kwargs)

        monkeypatch.setattr(model, "do_generate", held)


Events = list[tuple[str, dict[str, Any]]]


class Watched:
    """Jobs started with a progress callback that records each one's events."""

    def __init__(self, service: ImageService) -> None:
        self.service = service
        self.seen = asyncio.Event()

    def start(self, caller: Caller, prompt: str) -> tuple[asyncio.Task[Any], Events]:
        events: Events = []

        async def progress(stage: str, info: dict[str, Any]) -> None:
            events.append((stage, info))
            self.seen.set()

        request = ImageRequest(prompt=prompt)
        return asyncio.create_task(
            self.service.generate(caller, request, progress=progress)
        ), events

    async def until(self, condition: Any) -> None:
        while not condition():
            self.seen.clear()
            await self.seen.wait()


@pytest.fixture
async def one_at_a_time(tmp_path):
    providers = {"placeholder": {"kind": "placeholder", "max_concurrency": 1}}
    svc = await ImageService.open(make_settings(tmp_path, providers=providers), sweeper=False)
    yield svc
    await svc.aclose()


async def test_queued_job_is_in_flight_and_reports_in_order(one_at_a_time, monkeypatch):
    service = one_at_a_time
    gate = Gate(service, monkeypatch)
    jobs = Watched(service)
    first, first_events = jobs.start(ALICE, "one")
    await jobs.until(lambda: gate.started == 1)
    second, second_events = jobs.start(BOB, "two")
    await jobs.until(lambda: bool(second_events))

    stage, info = second_events[0]
    assert stage == "queued" and info["position"] == 1 and info["limit"] == 1
    assert info["provider"] == "placeholder" and info["model"] == "placeholder:default"
    status = await service.quota(BOB)
    assert (status.held, status.in_flight) == (1, 1)  # reserved before it queued
    assert gate.started == 1

    gate.opened.set()
    await asyncio.gather(first, second)
    assert [s for s, _ in first_events] == ["generating"]  # a free slot: no queued stage
    assert [s for s, _ in second_events] == ["queued", "generating"]
    assert second_events[1][1]["job_id"] == info["job_id"] and second_events[1][1]["n"] == 1
    assert "starts_in_s" not in info  # no job had finished there yet

    # Now one has: a queued job is told when it should start.
    gate.opened.clear()
    third, _ = jobs.start(ALICE, "three")
    while gate.started < 3:  # the provider call starts in its own task
        await asyncio.sleep(0.01)
    fourth, fourth_events = jobs.start(BOB, "four")
    await jobs.until(lambda: bool(fourth_events))
    queue = service.queues.get("placeholder", 1)
    assert fourth_events[0][1]["starts_in_s"] == round(queue.median_s, 1)
    gate.opened.set()
    await asyncio.gather(third, fourth)


def test_start_estimate_is_a_median_per_round_of_slots():
    async def run() -> None:
        queue = SlotQueue(2)
        assert queue.start_estimate_s(1) is None
        for seconds in (10.0, 2.0, 4.0):
            queue.record(seconds)
        assert queue.median_s == 4.0
        assert [queue.start_estimate_s(p) for p in (1, 2, 3, 5)] == [4.0, 4.0, 8.0, 12.0]

    asyncio.run(run())


async def test_a_job_cancelled_while_queued_costs_nothing(one_at_a_time, monkeypatch):
    service = one_at_a_time
    gate = Gate(service, monkeypatch)
    jobs = Watched(service)
    first, first_events = jobs.start(ALICE, "one")
    await jobs.until(lambda: bool(first_events))
    queued, events = jobs.start(BOB, "two")
    await jobs.until(lambda: bool(events))
    assert events[0][0] == "queued"
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    status = await service.quota(BOB)
    assert (status.remaining, status.held, status.in_flight) == (50, 0, 0)
    job = await service.job(BOB, events[0][1]["job_id"])
    assert job.status == "cancelled" and job.credits_charged == 0
    gate.opened.set()
    await first
    assert gate.started == 1  # the cancelled job never reached the provider


async def test_a_failing_progress_callback_does_not_fail_the_job(service):
    async def broken(stage: str, info: dict[str, Any]) -> None:
        raise RuntimeError("front end trouble")

    result = await service.generate(ALICE, ImageRequest(prompt="x"), progress=broken)
    assert len(result.images) == 1
