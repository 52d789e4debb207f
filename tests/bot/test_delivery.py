"""Delivery when Discord misbehaves: expired tokens, 429s, uploads too large, no channel access."""

from __future__ import annotations

from tests.bot.conftest import FOLLOWUP, ProviderGate, Running, labels
from tests.discord_fake import (
    MISSING_PERMISSIONS,
    REQUEST_TOO_LARGE,
    UNKNOWN_INTERACTION,
)


def channel_posts(fake, channel_id) -> list:
    return [
        c for c in fake.calls_to("POST", rf"/channels/{channel_id}/messages") if c.ok and c.files
    ]


async def test_expired_interaction_falls_back_to_the_channel(env: Running):
    fake = env.fake
    channel = fake.guild.text_channel["id"]
    fault = fake.fail_next("POST", FOLLOWUP, 404, UNKNOWN_INTERACTION)
    handle = await fake.slash("imagine", {"prompt": "a slow painting"})
    post = await fake.wait_for_call(
        "POST", rf"/channels/{channel}/messages", predicate=lambda c: bool(c.files)
    )
    assert fault.hits and fault.hits[0].status == 404
    assert f"<@{fake.user.id}>" in post.json["content"]
    assert [str(u) for u in post.json["allowed_mentions"]["users"]] == [str(fake.user.id)]
    message = fake.get_message(post.response["id"])
    assert labels(message)[:4] == ["Reroll", "Variations", "Remix", "Delete"]
    assert message["embeds"][0]["description"] == "a slow painting"
    await fake.wait_until(
        lambda: "posted in the channel" in (handle.original_message or {}).get("content", ""),
        5,
        "summary",
    )
    assert await env.remaining(fake.user) == 49


async def test_token_expired_after_15_minutes_posts_to_the_channel(
    env: Running, gate: ProviderGate
):
    fake = env.fake
    channel = fake.guild.text_channel["id"]
    handle = await fake.slash("imagine", {"prompt": "a very long job"})
    await handle.wait_callback()
    await fake.wait_until(lambda: bool(handle.edits), 5, "first progress edit")
    handle.expire()
    gate.open()
    await fake.wait_for_call(
        "POST", rf"/channels/{channel}/messages", predicate=lambda c: bool(c.files)
    )
    failed = [c for c in handle.calls if c.method == "POST" and c.path.startswith("/webhooks/")]
    assert [c.status for c in failed] == [401]


async def test_discord_429_is_survived(env: Running):
    fake = env.fake
    fault = fake.fail_next("POST", FOLLOWUP, 429, retry_after=0.2)
    handle = await fake.slash("imagine", {"prompt": "patience"})
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )
    assert [c.status for c in fault.hits] == [429]
    assert call.timestamp - fault.hits[0].timestamp >= 0.19
    assert await env.remaining(fake.user) == 49


async def test_upload_too_large_is_retried_with_previews(env: Running):
    fake = env.fake
    fake.fail_next("POST", FOLLOWUP, 413, REQUEST_TOO_LARGE)
    handle = await fake.slash("imagine", {"prompt": "huge detail"})
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )
    assert call.files


async def test_no_channel_access_after_expiry_falls_back_to_a_dm(env: Running):
    fake = env.fake
    channel = fake.guild.text_channel["id"]
    fake.fail_next("POST", FOLLOWUP, 404, UNKNOWN_INTERACTION)
    fake.fail_next("POST", rf"/channels/{channel}/messages", 403, MISSING_PERMISSIONS)
    handle = await fake.slash("imagine", {"prompt": "a secret garden"})
    dm = fake.dm_channel(fake.user)
    await fake.wait_for_call(
        "POST", rf"/channels/{dm['id']}/messages", predicate=lambda c: bool(c.files)
    )
    await fake.wait_until(
        lambda: "DM" in (handle.original_message or {}).get("content", ""), 5, "summary"
    )
    assert not channel_posts(fake, channel)
