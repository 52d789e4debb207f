"""/imagine end to end: defer within 3 s, progress, follow-up with files, embed and buttons."""

from __future__ import annotations

import itertools
import re

import pytest

from core import Caller, ContentRejectedError
from core.errors import ProviderAuthError
from tests.bot.conftest import FOLLOWUP, ProviderGate, Running, labels, running
from tests.core.test_late_charges import charge_late
from tests.discord_fake import FakeDiscord


async def test_imagine_defers_then_follows_up_with_files_embed_and_buttons(env: Running):
    fake = env.fake
    before = await env.remaining(fake.user)
    handle = await fake.slash("imagine", {"prompt": "a red fox in snow", "count": 2, "seed": 7})

    callback = await handle.wait_callback()
    assert callback.type == 5 and callback.data["flags"] == 64  # private "thinking"
    assert callback.timestamp - handle.dispatched_at < 3.0

    followup = await fake.wait_for_call("POST", FOLLOWUP, predicate=lambda c: bool(c.files))
    assert [f.data[:8] for f in followup.files] == [b"\x89PNG\r\n\x1a\n"] * 2
    payload = followup.json
    assert not payload.get("flags", 0) & 64  # public result
    (embed,) = payload["embeds"]
    assert embed["description"] == "a red fox in snow"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Model"] == "placeholder:default"
    assert fields["Seeds"] == "7, 8"
    assert fields["Cost"] == "2 credits"
    assert fields["Credits left"] == str(before - 2)
    message = next(m for m in fake.messages if m["id"] == followup.response["id"])
    assert labels(message) == [
        "Reroll",
        "Variations",
        "Remix",
        "Delete",
        "Upscale 1",
        "Upscale 2",
    ]
    job = re.search(r"job (\w+)", embed["footer"]["text"])[1]
    assert all(
        job in b["custom_id"] and len(b["custom_id"]) <= 100
        for b in message["components"][0]["components"]
    )
    assert await env.remaining(fake.user) == before - 2

    # The private deferred message ends as a summary.
    await fake.wait_until(
        lambda: "Done" in (handle.original_message or {}).get("content", ""), 5, "summary"
    )
    assert handle.original_message["flags"] & 64
    assert not fake.unhandled_calls


async def test_acknowledges_before_any_provider_call(env: Running, gate: ProviderGate):
    fake = env.fake
    handle = await fake.slash("imagine", {"prompt": "first things first"})
    callback = await handle.wait_callback()
    await fake.wait_until(lambda: gate.started == 1, 5, "provider call")
    assert callback.timestamp < gate.times[0]
    gate.open()
    await fake.wait_for_call("POST", FOLLOWUP, predicate=lambda c: bool(c.files))


async def test_progress_is_edited_at_a_bounded_rate(env: Running, gate: ProviderGate):
    fake = env.fake
    handle = await fake.slash("imagine", {"prompt": "a slow one", "count": 3})
    await fake.wait_until(lambda: len(handle.edits) >= 3, 5, "three progress edits")
    texts = [c.json["content"] for c in handle.edits]
    assert texts[0] == "⏳ Imagining 3 images…"
    assert all("Imagining 3 images with `placeholder:default`" in t for t in texts[1:])
    assert re.search(r"\(\d+ s\)$", texts[-1])
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(handle.edits)]
    assert min(gaps) >= 0.45  # [discord] progress_interval_s = 0.5 in these tests
    gate.open()
    await fake.wait_for_call("POST", FOLLOWUP, predicate=lambda c: bool(c.files))


async def test_queued_job_shows_its_position(
    fake_discord: FakeDiscord, settings_for, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    one_at_a_time = {"placeholder": {"kind": "placeholder", "max_concurrency": 1}}
    async with running(fake, settings_for(providers=one_at_a_time)) as env:
        gate = ProviderGate(env.service, monkeypatch)
        env.service.queues.get("placeholder", 1).record(30.0)  # as if a 30 s job had run
        first = await fake.slash("imagine", {"prompt": "first"})
        await fake.wait_until(lambda: gate.started == 1, 5, "first job running")
        second = await fake.slash("imagine", {"prompt": "second"}, user=fake.admin)
        await fake.wait_until(
            lambda: "position 1" in (second.original_message or {}).get("content", ""),
            5,
            "queue position",
        )
        assert "queued for placeholder" in second.original_message["content"]
        assert "position 1, starts in about 30 s" in second.original_message["content"]
        assert gate.started == 1  # the second job waits in the provider's queue
        status = await env.service.quota(Caller(frontend="discord", user_id=str(fake.admin.id)))
        assert (status.held, status.in_flight) == (1, 1)  # queued: held and in flight
        gate.open()
        for handle in (first, second):
            await fake.wait_for_call(
                "POST",
                FOLLOWUP,
                predicate=lambda c, h=handle: bool(c.files) and c.interaction_id == h.id,
            )


async def test_quota_exhausted_is_a_private_refusal(fake_discord: FakeDiscord, settings_for):
    fake = fake_discord
    async with running(fake, settings_for(quota={"allowance": 1})) as env:
        handle = await fake.slash("imagine", {"prompt": "two please", "count": 2})
        await fake.wait_until(
            lambda: "not enough credits" in (handle.original_message or {}).get("content", ""),
            5,
            "refusal",
        )
        text = handle.original_message["content"]
        assert handle.original_message["flags"] & 64
        assert "needs 2" in text and "1 left" in text
        assert not [c for c in fake.calls_to("POST", FOLLOWUP) if c.files]
        assert await env.remaining(fake.user) == 1

        quota = await fake.slash("quota")
        await fake.wait_until(lambda: bool((quota.original_message or {}).get("content")), 5, "q")
        assert quota.original_message["content"] == "You have **1** credit left."
        fields = {f["name"]: f["value"] for f in quota.original_message["embeds"][0]["fields"]}
        assert fields["Remaining"] == "1" and fields["Allowance per day"] == "1"
        assert fields["Jobs in flight"] == "0 jobs" and "<t:" in fields["Allowance resets"]


async def test_quota_shows_a_late_charge_and_what_is_owed(fake_discord: FakeDiscord, settings_for):
    fake = fake_discord
    async with running(fake, settings_for(quota={"allowance": 2})) as env:
        caller = Caller(frontend="discord", user_id=str(fake.user.id))
        await charge_late(env.service, caller, 2, spent=1)
        quota = await fake.slash("quota")
        await fake.wait_until(lambda: bool((quota.original_message or {}).get("content")), 5, "q")
        assert quota.original_message["content"] == (
            "You owe **1** credit; your next allowance pays it first."
        )
        fields = {f["name"]: f["value"] for f in quota.original_message["embeds"][0]["fields"]}
        assert fields["Charged late this day"] == (
            "2 credits for images delivered after their reservation was released;"
            " 1 credit owed, paid first by your next allowance"
        )


async def test_in_flight_cap_refuses_a_second_job(
    fake_discord: FakeDiscord, settings_for, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    async with running(fake, settings_for(quota={"max_in_flight": 1})) as env:
        gate = ProviderGate(env.service, monkeypatch)
        first = await fake.slash("imagine", {"prompt": "one"})
        await fake.wait_until(lambda: gate.started == 1, 5, "first job running")
        quota = await fake.slash("quota")
        await fake.wait_until(lambda: bool((quota.original_message or {}).get("embeds")), 5, "q")
        fields = {f["name"]: f["value"] for f in quota.original_message["embeds"][0]["fields"]}
        assert fields["Jobs in flight"].startswith("1 job")
        second = await fake.slash("imagine", {"prompt": "two"})
        await fake.wait_until(
            lambda: "limit is 1" in (second.original_message or {}).get("content", ""), 5, "cap"
        )
        gate.open()
        await fake.wait_for_call(
            "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == first.id
        )
        assert await env.remaining(fake.user) == 49


async def test_out_of_range_options_are_rechecked_by_the_bot(env: Running):
    fake = env.fake
    cases = [
        ({"prompt": "many", "count": 9}, "Count must be between 1 and 4"),
        ({"prompt": "none", "count": 0}, "Count must be between 1 and 4"),
        ({"prompt": "x" * 1600}, "1 to 1500 characters"),
        ({"prompt": "seed", "seed": -5}, "seed must be between"),
        ({"prompt": "shape", "aspect": "7:1"}, "aspect must be one of"),
        ({"prompt": "which", "model": "nope:nothing"}, "no model called"),
    ]
    for options, expected in cases:
        handle = await fake.slash("imagine", options, validate=False)
        reply = await handle.wait_callback()
        assert reply.type == 4 and reply.data["flags"] & 64, options
        assert expected in reply.data["content"], reply.data["content"]
    assert await env.remaining(fake.user) == 50
    assert not fake.calls_to("POST", FOLLOWUP)


async def test_model_autocomplete_and_models_list(env: Running):
    fake = env.fake
    handle = await fake.autocomplete("imagine", {"prompt": "x", "model": "place"}, focused="model")
    choices = await handle.wait_choices()
    assert [c["value"] for c in choices] == ["placeholder:default"]
    assert "credit" in choices[0]["name"]

    listing = await fake.slash("models")
    reply = await listing.wait_callback()
    assert reply.type == 5 and reply.data["flags"] & 64
    edit = await listing.wait_edit()
    assert "placeholder:default" in edit.json["embeds"][0]["description"]


AUTOCOMPLETED = [  # command, option typed into, other options given so far
    ("imagine", "model", {"prompt": "x"}),
    ("imagine", "style", {"prompt": "x"}),
    ("edit", "model", {"mode": "sketch"}),
    ("edit", "style", {"mode": "sketch"}),
    ("upscale", "model", {}),
    ("settings", "model", {}),
    ("settings", "style", {}),
    ("imagegate settings model", "model", {}),
    ("imagegate styles add", "model", {"name": "x", "prompt": "{prompt}"}),
    ("imagegate styles remove", "name", {}),
]


async def test_every_model_and_style_option_autocompletes(fake_discord: FakeDiscord, settings_for):
    fake = fake_discord
    styles = {"noir": {"prompt": "{prompt}, film noir"}}
    async with running(fake, settings_for(styles=styles)):
        for name, focused, given in AUTOCOMPLETED:
            typed = {**given, focused: "o"}
            handle = await fake.autocomplete(name, typed, focused=focused, user=fake.admin)
            expected = "placeholder:default" if focused == "model" else "noir"
            assert [c["value"] for c in await handle.wait_choices()] == [expected], name


async def test_audit_channel_gets_requester_prompt_job_and_link(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    audit = fake.guild.nsfw_channel["id"]
    async with running(fake, settings_for(discord={"audit_channel_id": int(audit)})):
        handle = await fake.slash("imagine", {"prompt": "a lantern"})
        post = await fake.wait_for_call("POST", rf"/channels/{audit}/messages")
        (embed,) = post.json["embeds"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert embed["description"] == "a lantern"
        assert str(fake.user.id) in fields["Requester"]
        job = fields["Job"].split("`")[1]
        assert job in (await handle.wait_followup()).json["embeds"][0]["footer"]["text"]
        assert fields["Link"].startswith("https://discord.com/channels/")
        assert post.json["allowed_mentions"]["parse"] == []

        refused = await fake.slash("imagine", {"prompt": "naked"})
        await refused.wait_callback()
        post = await fake.wait_for_call(
            "POST",
            rf"/channels/{audit}/messages",
            predicate=lambda c: c.json["embeds"][0]["title"] == "Refused prompt",
        )
        assert post.json["embeds"][0]["description"] == "naked"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ContentRejectedError("the prompt was flagged", provider="placeholder"), "safety filter"),
        (ProviderAuthError("the provider refused our API key"), "provider failed"),
        (RuntimeError("internal detail /etc/secret"), "Something went wrong on our side"),
    ],
    ids=["moderation", "provider-down", "bug"],
)
async def test_failures_are_private_explained_and_free(
    env: Running, monkeypatch: pytest.MonkeyPatch, error: Exception, shown: str
):
    fake = env.fake

    async def fail(*args, **kwargs):
        raise error

    for model in env.service.registry.models.values():
        monkeypatch.setattr(model, "do_generate", fail)
    handle = await fake.slash("imagine", {"prompt": "anything"})
    await fake.wait_until(
        lambda: shown in (handle.original_message or {}).get("content", ""), 10, "explanation"
    )
    text = handle.original_message["content"]
    assert handle.original_message["flags"] & 64
    assert "Traceback" not in text and "/etc/secret" not in text
    assert await env.remaining(fake.user) == 50
    assert not [c for c in fake.calls_to("POST", FOLLOWUP) if c.files]


async def test_a_role_allowance_applies_to_members_with_that_role(
    fake_discord: FakeDiscord, settings_for
):
    fake = fake_discord
    patron = int(fake.guild.add_role(fake.snowflakes.next(), "Patron", 0)["id"])
    member = fake.create_user("patron-member", roles=[patron])
    settings = settings_for(quota={"allowance": 5, "roles": [{"role_id": patron, "allowance": 40}]})
    async with running(fake, settings):
        for user, allowance in ((member, "40"), (fake.user, "5")):
            handle = await fake.slash("quota", user=user)
            await fake.wait_until(
                lambda h=handle: bool((h.original_message or {}).get("embeds")), 5, "quota"
            )
            embed = handle.original_message["embeds"][0]
            fields = {f["name"]: f["value"] for f in embed["fields"]}
            assert fields["Allowance per day"] == allowance, user
