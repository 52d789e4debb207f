"""Cancel (requester or Manage Messages; mid-generation and while queued), /history pages
and /show, against the fake Discord and the real core."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from core import Caller, ImageRequest, ImageService
from tests.bot.conftest import FOLLOWUP, ProviderGate, Running, custom_id, labels, running
from tests.bot.test_buttons import job_of, result_of
from tests.conftest import PG_URL_ENV
from tests.discord_fake import FakeDiscord, FakeUser


def buttons_of(message: dict[str, Any]) -> list[str]:
    return [label for label in labels(message) if label]


def content(handle) -> str:
    return (handle.original_message or {}).get("content", "")


async def cancel_button(fake: FakeDiscord, handle) -> dict[str, Any]:
    """The private progress message once it carries the Cancel button."""
    await fake.wait_until(
        lambda: "Cancel" in labels(handle.original_message or {}), 5, "Cancel button"
    )
    return handle.original_message


async def test_cancel_mid_generation_refunds_and_says_so(env: Running, gate: ProviderGate):
    fake = env.fake
    handle = await fake.slash("imagine", {"prompt": "a long night", "count": 2})
    message = await cancel_button(fake, handle)
    assert await env.remaining(fake.user) == 48  # held while it runs

    stranger = await fake.click(
        message, custom_id(message, "Cancel"), user=fake.create_user("carol")
    )
    await fake.wait_until(lambda: "Manage Messages" in content(stranger), 5, "refusal")
    click = await fake.click(message, custom_id(message, "Cancel"))
    await fake.wait_until(lambda: "2 credits given back" in content(click), 5, "cancel reply")
    await fake.wait_until(lambda: "cancelled" in content(handle), 5, "job cancelled")
    assert "credits were returned" in content(handle)
    assert "Cancel" not in labels(handle.original_message)  # the button is gone
    assert await env.remaining(fake.user) == 50
    assert not [c for c in fake.calls_to("POST", FOLLOWUP) if c.files]
    gate.open()


async def test_cancel_while_queued_is_free(
    fake_discord: FakeDiscord, settings_for, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    one_at_a_time = {"placeholder": {"kind": "placeholder", "max_concurrency": 1}}
    async with running(fake, settings_for(providers=one_at_a_time)) as env:
        gate = ProviderGate(env.service, monkeypatch)
        first = await fake.slash("imagine", {"prompt": "first"})
        await fake.wait_until(lambda: gate.started == 1, 5, "first job running")
        second = await fake.slash("imagine", {"prompt": "second", "count": 3}, user=fake.admin)
        message = await cancel_button(fake, second)
        assert "position 1" in message["content"]
        await fake.click(message, custom_id(message, "Cancel"), user=fake.admin)
        await fake.wait_until(lambda: "cancelled" in content(second), 5, "cancelled while queued")
        assert "credits were returned" in content(second)
        admin = Caller(frontend="discord", user_id=str(fake.admin.id))
        assert (await env.service.quota(admin)).remaining == 50
        assert gate.started == 1  # it never reached the provider
        gate.open()
        await result_of(fake, first)


async def test_history_pages_and_reshow_with_working_buttons(env: Running):
    fake = env.fake
    made = []
    for i in range(6):
        made.append(job_of(await result_of(fake, await fake.slash("imagine", {"prompt": f"p{i}"}))))
    listing = await fake.slash("history")
    await fake.wait_until(lambda: bool((listing.original_message or {}).get("embeds")), 5, "page")
    page1 = listing.original_message
    text = page1["embeds"][0]["description"]
    assert [job in text for job in made] == [False] + [True] * 5  # newest five first
    assert text.index(made[5]) < text.index(made[1])
    assert "1 credit" in text and "done" in text
    assert buttons_of(page1) == ["Older"]
    older = await fake.click(page1, custom_id(page1, "Older"))
    await older.wait_callback()
    await fake.wait_until(
        lambda: made[0] in fake.get_message(page1["id"])["embeds"][0]["description"], 5, "page 2"
    )
    assert buttons_of(fake.get_message(page1["id"])) == ["Newer"]

    shown = await fake.select(fake.get_message(page1["id"]), "imagegate:history-show", [made[0]])
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == shown.id
    )
    again = fake.get_message(call.response["id"])
    assert call.json["flags"] & 64 and again["embeds"][0]["description"] == "p0"
    reroll = await fake.click(again, custom_id(again, "Reroll"))
    assert (await result_of(fake, reroll))["embeds"][0]["description"] == "p0"


async def test_show_own_or_public_here_and_never_deleted(env: Running):
    fake = env.fake
    made = await fake.slash("imagine", {"prompt": "a comet"})
    message = await result_of(fake, made)
    job = job_of(message)
    # Recorded as public once the delivery is done (the summary follows it).
    await fake.wait_until(lambda: "Done" in content(made), 5, "summary")
    bob = fake.create_user("bob")
    for user in (fake.user, bob):  # the owner, and anyone here: it was posted publicly
        show = await fake.slash("show", {"job_id": job}, user=user)
        call = await fake.wait_for_call(
            "POST", FOLLOWUP, predicate=lambda c, s=show: bool(c.files) and c.interaction_id == s.id
        )
        assert call.json["flags"] & 64
    elsewhere = fake.add_guild("other")
    away = await fake.slash("show", {"job_id": job}, user=fake.user, guild=elsewhere)
    await away.wait_callback()
    mine_elsewhere = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == away.id
    )
    assert mine_elsewhere  # the owner sees their own job anywhere

    await fake.click(message, custom_id(message, "Delete"))
    await fake.wait_until(lambda: int(message["id"]) in fake.deleted_message_ids, 5, "delete")
    gone = await fake.slash("show", {"job_id": job}, user=bob)
    await fake.wait_until(lambda: "deleted" in content(gone), 5, "deleted")
    listing = await fake.slash("history")
    await fake.wait_until(lambda: bool((listing.original_message or {}).get("embeds")), 5, "page")
    assert "(deleted)" in listing.original_message["embeds"][0]["description"]
    assert not listing.original_message.get("components")  # nothing to show again


async def running_job(service: ImageService, user: FakeUser) -> str:
    """The id of the user's job once it is recorded as running."""
    caller = Caller(frontend="discord", user_id=str(user.id))
    with anyio.fail_after(10):
        while not (jobs := (await service.jobs(caller)).jobs):
            await asyncio.sleep(0.02)
    assert jobs[0].status == "running"
    return jobs[0].job_id


async def test_show_waits_for_a_job_running_on_another_replica(
    fake_discord: FakeDiscord, settings_for, pg_url: str, monkeypatch: pytest.MonkeyPatch
):
    """Replica A runs the job (its provider call held open); /show through a bot whose service
    is replica B, on the same PostgreSQL database, answers with the result once A finishes."""
    fake = fake_discord
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    settings = settings_for(database={"url_env": PG_URL_ENV})
    alice = Caller(frontend="discord", user_id=str(fake.user.id))
    async with (
        await ImageService.open(settings, sweeper=False) as replica_a,
        running(fake, settings) as on_b,
    ):
        gate = ProviderGate(replica_a, monkeypatch)
        made = asyncio.create_task(replica_a.generate(alice, ImageRequest(prompt="made on A")))
        job_id = await running_job(replica_a, fake.user)
        polled = asyncio.Event()  # B read the job as running and is looking again
        job_status = on_b.service.store.job_status

        async def observed(job: str) -> str | None:
            polled.set()
            return await job_status(job)

        monkeypatch.setattr(on_b.service.store, "job_status", observed)
        show = await fake.slash("show", {"job_id": job_id})
        assert (await show.wait_callback()).type == 5  # deferred while it waits
        with anyio.fail_after(10):
            await polled.wait()
        assert not [c for c in fake.calls_to("POST", FOLLOWUP) if c.files]
        gate.open()
        assert (await made).job_id == job_id
        again = await result_of(fake, show)
        assert again["flags"] & 64 and again["embeds"][0]["description"] == "made on A"
        await fake.wait_until(lambda: "again below" in content(show), 5, "summary")
        assert await on_b.remaining(fake.user) == 49  # charged once, by A


async def test_show_of_a_job_still_running_after_the_wait_says_so(
    fake_discord: FakeDiscord, settings_for, monkeypatch: pytest.MonkeyPatch
):
    async with running(fake_discord, settings_for(discord={"show_wait_s": 0.2})) as env:
        gate = ProviderGate(env.service, monkeypatch)
        made = await env.fake.slash("imagine", {"prompt": "slow"})
        job_id = await running_job(env.service, env.fake.user)
        show = await env.fake.slash("show", {"job_id": job_id})
        told = f"try `/show {job_id}` again"
        await env.fake.wait_until(lambda: told in content(show), 5, "still running")
        gate.open()
        await result_of(env.fake, made)
