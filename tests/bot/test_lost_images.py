"""A result image whose file was lost (missing or damaged) is never sent by a button: the
user is told, and nothing is charged."""

from __future__ import annotations

from pathlib import Path

from tests.bot.conftest import bot_settings, custom_id, running
from tests.bot.test_buttons import job_of, result_of
from tests.discord_fake import FakeDiscord


async def test_upscale_of_a_lost_image_is_explained_and_free(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    settings = bot_settings(tmp_path)
    async with running(fake, settings) as env:
        message = await result_of(fake, await fake.slash("imagine", {"prompt": "a kite"}))
        job = await env.service.store.job(job_of(message))
    assert job is not None
    job.images[0].path.unlink()  # gone in a power cut

    async with running(fake, settings) as env:  # a new process: the start-up check
        before = await env.remaining(fake.user)
        click = await fake.click(message, custom_id(message, "Upscale 1"))
        await fake.wait_until(
            lambda: "is lost (missing at the start-up check" in _content(click.original_message),
            5,
            "the explanation",
        )
        assert not [c for c in fake.calls if c.files and c.interaction_id == click.id]
        assert await env.remaining(fake.user) == before


def _content(message: dict | None) -> str:
    return (message or {}).get("content") or ""
