"""Result buttons: reroll (also after a restart), variations, upscale k, delete; who pays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bot.conftest import FOLLOWUP, Running, bot_settings, custom_id, labels, running
from tests.discord_fake import FakeDiscord, InteractionHandle


async def result_of(fake: FakeDiscord, handle: InteractionHandle) -> dict[str, Any]:
    """The public result message an interaction produced (its follow-up with files)."""
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )
    return fake.get_message(call.response["id"])


def job_of(message: dict[str, Any]) -> str:
    return custom_id(message, "Delete").split(":")[2]


async def test_reroll_after_restart_uses_the_stored_job(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    settings = bot_settings(tmp_path)
    async with running(fake, settings) as env:
        first = await fake.slash("imagine", {"prompt": "lighthouse at dusk", "aspect": "16:9"})
        message = await result_of(fake, first)
        before = await env.remaining(fake.user)

    # A new process: new ImageService and new bot on the same database; nothing in memory.
    async with running(fake, settings) as env:
        click = await fake.click(message, custom_id(message, "Reroll"))
        assert (await click.wait_callback()).type == 5
        rerolled = await result_of(fake, click)
        assert job_of(rerolled) != job_of(message)
        embed = rerolled["embeds"][0]
        assert embed["description"] == "lighthouse at dusk"
        assert embed["title"] == "Imagine"
        assert rerolled["attachments"][0]["width"] > rerolled["attachments"][0]["height"]
        assert await env.remaining(fake.user) == before - 1


async def test_someone_else_rerolling_spends_their_own_credits(env: Running):
    fake = env.fake
    message = await result_of(fake, await fake.slash("imagine", {"prompt": "a teapot"}))
    alice_before = await env.remaining(fake.user)
    bob = fake.create_user("bob")
    bob_before = await env.remaining(bob)

    click = await fake.click(message, custom_id(message, "Reroll"), user=bob)
    rerolled = await result_of(fake, click)
    assert "bob" in rerolled["embeds"][0]["footer"]["text"]
    assert await env.remaining(fake.user) == alice_before
    assert await env.remaining(bob) == bob_before - 1


async def test_upscale_k_and_variations_picker(env: Running):
    fake = env.fake
    message = await result_of(fake, await fake.slash("imagine", {"prompt": "two cats", "count": 2}))
    assert labels(message)[-2:] == ["Upscale 1", "Upscale 2"]
    width = message["attachments"][1]["width"]

    upscale = await fake.click(message, custom_id(message, "Upscale 2"))
    upscaled = await result_of(fake, upscale)
    assert upscaled["embeds"][0]["title"] == "Upscale"
    assert upscaled["attachments"][0]["width"] == 2 * width
    assert labels(upscaled) == ["Variations", "Delete"]

    # Several images: Variations first asks which one (privately, no charge) ...
    before = await env.remaining(fake.user)
    ask = await fake.click(message, custom_id(message, "Variations"))
    reply = await ask.wait_callback()
    assert reply.type == 4 and reply.data["flags"] & 64
    picker = ask.original_message
    assert labels(picker) == ["Variations 1", "Variations 2"]
    assert await env.remaining(fake.user) == before
    # ... then makes as many variations of that image as the job had images.
    vary = await fake.click(picker, custom_id(picker, "Variations 2"))
    varied = await result_of(fake, vary)
    assert varied["embeds"][0]["title"] == "Variations"
    assert len(varied["attachments"]) == 2
    assert await env.remaining(fake.user) == before - 2


async def test_delete_by_requester_or_manage_messages_only(env: Running):
    fake = env.fake
    message = await result_of(fake, await fake.slash("imagine", {"prompt": "a boat"}))
    delete_id = custom_id(message, "Delete")

    stranger = await fake.click(message, delete_id, user=fake.create_user("carol"))
    refusal = await stranger.wait_followup()
    assert "Manage Messages" in refusal.json["content"] and refusal.json["flags"] & 64
    assert int(message["id"]) not in fake.deleted_message_ids

    moderator = await fake.click(message, delete_id, user=fake.admin)
    await fake.wait_until(lambda: int(message["id"]) in fake.deleted_message_ids, 5, "delete")

    own = await result_of(fake, await fake.slash("imagine", {"prompt": "a car"}))
    await fake.click(own, custom_id(own, "Delete"))
    await fake.wait_until(lambda: int(own["id"]) in fake.deleted_message_ids, 5, "delete own")
    assert moderator.acknowledged_type == 6


async def test_button_of_a_job_the_database_lacks_is_explained(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running(fake, bot_settings(tmp_path / "old")):
        message = await result_of(fake, await fake.slash("imagine", {"prompt": "a kite"}))
    async with running(fake, bot_settings(tmp_path / "new")) as env:
        click = await fake.click(message, custom_id(message, "Reroll"))
        await fake.wait_until(
            lambda: "no longer available" in (click.original_message or {}).get("content", ""),
            5,
            "explanation",
        )
        assert click.original_message["flags"] & 64
        assert await env.remaining(fake.user) == 50
