"""A user's own jobs: cancel (queued: free; generating: delivered images charged, the rest
released), history pages, results shown publicly and deleted; on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core import Caller, ImageRequest, ImageService, JobCancelledError, NotFoundError
from tests.conftest import make_settings

ALICE = Caller(frontend="discord", user_id="1")
BOB = Caller(frontend="discord", user_id="2")
SERVER = "discord:guild:9"


@pytest.fixture
async def service(tmp_path, backend):
    providers = {"placeholder": {"kind": "placeholder", "max_concurrency": 1}}
    settings = make_settings(tmp_path, database=backend, providers=providers)
    svc = await ImageService.open(settings, sweeper=False)
    yield svc
    await svc.aclose()


class Held:
    """Provider calls for ``held_count`` images wait until released; others run at once."""

    def __init__(self, service: ImageService, monkeypatch: pytest.MonkeyPatch, held_count: int):
        self.release = asyncio.Event()
        self.waiting = 0
        self.returned = 0
        for model in service.registry.models.values():
            original = model.do_generate

            async def call(plan: Any, count: int, *rest: Any, _original: Any = original) -> Any:
                if count == held_count:
                    self.waiting += 1
                    await self.release.wait()
                images = await _original(plan, count, *rest)
                self.returned += 1
                return images

            monkeypatch.setattr(model, "do_generate", call)


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_cancel_mid_generation_charges_only_the_delivered_images(service, monkeypatch):
    held = Held(service, monkeypatch, held_count=1)  # 5 images: a call for 4, one for 1
    job_ids: list[str] = []

    async def progress(stage: str, info: dict[str, Any]) -> None:
        job_ids.append(info["job_id"])

    task = asyncio.create_task(
        service.generate(ALICE, ImageRequest(prompt="five", n=5), progress=progress)
    )
    await until(lambda: held.waiting == 1 and held.returned == 1)
    with pytest.raises(NotFoundError):
        await service.cancel(BOB, job_ids[0])  # not Bob's
    assert (await service.cancel(ALICE, job_ids[0])).status == "cancelled"
    result = await task
    assert len(result.images) == 4 and result.credits_charged == 4
    assert "4 credit(s) charged for those, 1 released" in result.warnings[-1]
    job = await service.job(ALICE, result.job_id)
    assert (job.status, job.credits_charged, job.credits_refunded) == ("cancelled", 4, 1)
    status = await service.quota(ALICE)
    assert (status.remaining, status.held, status.in_flight) == (50 - 4, 0, 0)
    assert (await service.cancel(ALICE, result.job_id)).status == "cancelled"  # nothing to stop


async def test_cancel_while_queued_is_free_and_a_moderator_may_cancel(service, monkeypatch):
    held = Held(service, monkeypatch, held_count=1)
    first = asyncio.create_task(service.generate(ALICE, ImageRequest(prompt="first")))
    await until(lambda: held.waiting == 1)
    queued_ids: list[str] = []

    async def progress(stage: str, info: dict[str, Any]) -> None:
        queued_ids.append(info["job_id"])

    second = asyncio.create_task(
        service.generate(BOB, ImageRequest(prompt="second", n=2), progress=progress)
    )
    await until(lambda: bool(queued_ids))
    assert (await service.quota(BOB)).held == 2
    assert (await service.cancel(ALICE, queued_ids[0], moderator=True)).status == "cancelled"
    with pytest.raises(JobCancelledError) as caught:
        await second
    assert caught.value.credits_charged == 0 and caught.value.refunded
    job = await service.job(BOB, queued_ids[0])
    assert (job.status, job.credits_charged, job.credits_refunded) == ("cancelled", 0, 2)
    assert (await service.quota(BOB)).remaining == 50
    held.release.set()
    assert len((await first).images) == 1


async def test_history_pages_sharing_and_deletion(service):
    made = [
        (await service.generate(ALICE, ImageRequest(prompt=f"picture {i}"))).job_id
        for i in range(3)
    ]
    await service.generate(BOB, ImageRequest(prompt="bob's"))
    page1 = await service.jobs(ALICE, limit=2)
    page2 = await service.jobs(ALICE, limit=2, cursor=page1.next_cursor)
    assert [j.job_id for j in page1.jobs + page2.jobs] == made[::-1]  # newest first, Alice's
    assert page1.jobs[0].credits_charged == 1 and page1.jobs[0].credits_refunded == 0

    with pytest.raises(NotFoundError):
        await service.shown_job(BOB, made[0], SERVER)  # not shown publicly there
    await service.share_job(ALICE, made[0], SERVER)
    assert (await service.shown_job(BOB, made[0], SERVER)).job_id == made[0]
    with pytest.raises(NotFoundError):
        await service.shown_job(BOB, made[0], "discord:guild:10")  # another server
    with pytest.raises(NotFoundError):
        await service.share_job(BOB, made[1], SERVER)  # only the owner shares

    with pytest.raises(NotFoundError):
        await service.delete_job(BOB, made[0])
    await service.delete_job(BOB, made[0], moderator=True)
    with pytest.raises(NotFoundError, match="deleted"):
        await service.shown_job(ALICE, made[0], SERVER)
    assert [j.deleted for j in (await service.jobs(ALICE, limit=5)).jobs] == [False, False, True]
