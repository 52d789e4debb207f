"""A user's jobs: cancelling one (in this process or in another sharing the database) and
paging through jobs and images, on both database backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core import (
    Caller,
    ImageRequest,
    ImageService,
    InvalidRequestError,
    JobCancelledError,
    NotFoundError,
)
from tests.conftest import make_settings

ALICE = Caller(frontend="mcp", user_id="alice")
BOB = Caller(frontend="mcp", user_id="bob")


def held_model(service: ImageService, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Make the placeholder model wait until cancelled; the event is set once it is asked."""
    started = asyncio.Event()

    async def slow(plan: Any, count: int, deadline: float) -> Any:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(service.registry.models["placeholder:default"], "do_generate", slow)
    return started


async def running_job(service: ImageService, started: asyncio.Event) -> tuple[asyncio.Task, str]:
    task = asyncio.create_task(service.generate(ALICE, ImageRequest(prompt="slow", n=3)))
    await started.wait()
    [job] = (await service.jobs(ALICE)).jobs
    assert job.status == "running"
    return task, job.job_id


async def test_cancel_stops_the_job_and_refunds_it(tmp_path, backend, monkeypatch):
    settings = make_settings(tmp_path, database=backend)
    async with await ImageService.open(settings, sweeper=False) as service:
        task, job_id = await running_job(service, held_model(service, monkeypatch))
        assert (await service.quota(ALICE)).held == 3
        with pytest.raises(NotFoundError):
            await service.cancel(BOB, job_id)  # not his: it does not exist for him
        record = await service.cancel(ALICE, job_id)
        assert record.status == "cancelled" and record.credits_charged == 0
        with pytest.raises(JobCancelledError) as caught:
            await task
        assert caught.value.refunded and caught.value.job_id == job_id
        status = await service.quota(ALICE)
        assert (status.remaining, status.held, status.in_flight) == (50, 0, 0)
        assert [e.kind for e in await service.history(ALICE, ALICE)][:2] == ["release", "hold"]
        again = await service.cancel(ALICE, job_id)  # finished: nothing to do
        assert again.status == "cancelled"


async def test_a_job_in_another_process_is_cancelled_through_the_database(
    tmp_path, backend, monkeypatch
):
    settings = make_settings(tmp_path, database=backend)
    async with (
        await ImageService.open(settings) as running_here,
        await ImageService.open(settings, sweeper=False) as elsewhere,
    ):
        task, job_id = await running_job(running_here, held_model(running_here, monkeypatch))
        asked = await elsewhere.cancel(ALICE, job_id)
        assert asked.status == "running" and asked.cancel_requested
        with pytest.raises(JobCancelledError):
            await asyncio.wait_for(task, 30)  # the running process looks every second
        record = await elsewhere.job(ALICE, job_id)
        assert record.status == "cancelled"
        assert (await elsewhere.quota(ALICE)).remaining == 50


async def test_the_caller_cancelling_its_call_is_not_a_cancel_request(service, monkeypatch):
    started = held_model(service, monkeypatch)
    task = asyncio.create_task(service.generate(ALICE, ImageRequest(prompt="x")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [job] = (await service.jobs(ALICE)).jobs
    assert job.status == "cancelled" and not job.cancel_requested


async def test_jobs_and_images_come_in_pages_newest_first(tmp_path, backend):
    settings = make_settings(tmp_path, database=backend)
    async with await ImageService.open(settings, sweeper=False) as service:
        made = [await service.generate(ALICE, ImageRequest(prompt=f"p{i}", n=2)) for i in range(5)]
        await service.generate(BOB, ImageRequest(prompt="his"))
        seen, cursor = [], None
        while True:
            page = await service.jobs(ALICE, limit=2, cursor=cursor)
            seen.append([j.job_id for j in page.jobs])
            for job in page.jobs:
                assert job.status == "succeeded" and len(job.images) == 2
                assert job.credits_charged == 2 and job.request["prompt"].startswith("p")
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        newest_first = [m.job_id for m in reversed(made)]
        assert seen == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
        images, cursor = [], None
        while True:
            page = await service.images(ALICE, limit=3, cursor=cursor)
            images += [i.id for i in page.images]
            if (cursor := page.next_cursor) is None:
                break
        job_of = {i.id: m.job_id for m in made for i in m.images}
        assert [job_of[i] for i in images] == [j for j in newest_first for _ in range(2)]
        assert len(images) == 10
        for bad in ("nope", "12.a-b", "1" * 20 + ".x"):
            with pytest.raises(InvalidRequestError):
                await service.jobs(ALICE, cursor=bad)
        with pytest.raises(InvalidRequestError):
            await service.images(ALICE, limit=0)
        assert [j.request["prompt"] for j in (await service.jobs(BOB)).jobs] == ["his"]
