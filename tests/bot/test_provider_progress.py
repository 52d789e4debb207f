"""A backend's own progress (here the AI Horde's queue position) shows in the private
progress message of /imagine."""

from __future__ import annotations

from tests.bot.conftest import FOLLOWUP, running
from tests.discord_fake import FakeDiscord
from tests.emulators import create_emulator
from tests.emulators import running as serving


async def test_horde_queue_position_shows_in_the_progress_edits(
    fake_discord: FakeDiscord, settings_for, monkeypatch
):
    fake = fake_discord
    emu = create_emulator("horde", queue_s=1.5, queue_ahead=3, job_duration_s=0.01)
    monkeypatch.setenv("IG_BOT_HORDE_KEY", emu.api_key)
    async with serving(emu) as url:
        provider = {"kind": "horde", "base_url": url, "api_key_env": "IG_BOT_HORDE_KEY",
                    "models": ["stable_diffusion"], "poll_interval_s": 0.1}  # fmt: skip
        async with running(fake, settings_for(providers={"horde": provider})):
            handle = await fake.slash("imagine", {"prompt": "a fox"})
            await fake.wait_until(
                lambda: "queued at horde, position" in
                (handle.original_message or {}).get("content", ""), 10, "queue position",
            )  # fmt: skip
            assert (
                "Imagining 1 image with `horde:stable_diffusion`: queued"
                in handle.original_message["content"]
            )
            await fake.wait_for_call("POST", FOLLOWUP, predicate=lambda c: bool(c.files))


async def test_steps_and_guidance_reach_a_model_that_uses_them(
    fake_discord: FakeDiscord, settings_for, monkeypatch
):
    fake = fake_discord
    emu = create_emulator("horde", job_duration_s=0.01)
    monkeypatch.setenv("IG_BOT_HORDE_KEY", emu.api_key)
    async with serving(emu) as url:
        provider = {"kind": "horde", "base_url": url, "api_key_env": "IG_BOT_HORDE_KEY",
                    "models": ["stable_diffusion"], "poll_interval_s": 0.05}  # fmt: skip
        providers = {"horde": provider, "placeholder": {"kind": "placeholder"}}
        async with running(fake, settings_for(providers=providers)) as env:
            options = {"prompt": "a fox", "steps": 12, "guidance": 5.5}
            handle = await fake.slash("imagine", {**options, "model": "horde:stable_diffusion"})
            await fake.wait_for_call(
                "POST",
                FOLLOWUP,
                predicate=lambda c: bool(c.files) and c.interaction_id == handle.id,
            )
            refused = await fake.slash("imagine", {**options, "model": "placeholder:default"})
            await fake.wait_until(lambda: bool(refused.original_message), 5, "refusal")
            assert "does not use steps" in refused.original_message["content"]
            assert await env.remaining(fake.user) == 50 - 1  # the refusal cost nothing
    [sent] = [r for r in emu.requests if r.method == "POST" and "generate" in r.path]
    assert sent.json["params"]["steps"] == 12 and sent.json["params"]["cfg_scale"] == 5.5
