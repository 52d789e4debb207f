"""Remix (new text, same settings, a new charge) and spoilers."""

from __future__ import annotations

from core import Caller
from tests.bot.conftest import FOLLOWUP, Running, custom_id
from tests.bot.test_buttons import job_of, result_of


def inputs(modal: dict) -> dict[str, dict]:
    found = [
        c for row in modal["components"] for c in row.get("components", [row.get("component")])
    ]
    return {c["label"]: c for c in found}


async def test_remix_changes_only_the_text(env: Running):
    fake = env.fake
    first = await fake.slash(
        "imagine",
        {"prompt": "a red barn", "negative": "people", "count": 2, "aspect": "3:2", "seed": 11},
    )
    message = await result_of(fake, first)
    before = await env.remaining(fake.user)

    opener = await fake.click(message, custom_id(message, "Remix"), user=fake.admin)
    modal = await opener.wait_modal()
    fields = inputs(modal)
    assert fields["Prompt"]["value"] == "a red barn"
    assert fields["Negative prompt"]["value"] == "people"
    submit = await fake.submit_modal(
        modal["custom_id"],
        {fields["Prompt"]["custom_id"]: "a blue barn", fields["Negative prompt"]["custom_id"]: ""},
        user=fake.admin,
    )
    remixed = await result_of(fake, submit)
    assert remixed["embeds"][0]["description"] == "a blue barn"

    admin = Caller(frontend="discord", user_id=str(fake.admin.id))
    old = await env.service.job(admin, job_of(message), shared=True)
    new = await env.service.job(admin, job_of(remixed))
    assert new.user == admin.key and old.job_id != new.job_id
    changed = {
        k
        for k in old.request.keys() | new.request.keys()
        if old.request.get(k) != new.request.get(k)
    }
    assert changed == {"prompt", "negative_prompt"}
    assert [i.seed for i in new.images] == [i.seed for i in old.images] == [11, 12]
    assert await env.remaining(fake.user) == before  # the presser paid, as for a new job
    assert (await env.service.quota(admin)).remaining == 50 - 2


async def test_a_refused_remix_is_told_privately_and_costs_nothing(env: Running):
    fake = env.fake
    message = await result_of(fake, await fake.slash("imagine", {"prompt": "a red barn"}))
    opener = await fake.click(message, custom_id(message, "Remix"))
    modal = await opener.wait_modal()
    fields = inputs(modal)
    blank = {fields["Prompt"]["custom_id"]: "   ", fields["Negative prompt"]["custom_id"]: ""}
    submit = await fake.submit_modal(modal["custom_id"], blank)
    reply = await submit.wait_callback()
    assert reply.type == 4 and reply.data["flags"] & 64
    assert "The prompt must be" in reply.data["content"]
    assert await env.remaining(fake.user) == 49  # the first image only


async def test_spoiler_option_hides_the_images(env: Running):
    fake = env.fake
    handle = await fake.slash("imagine", {"prompt": "a plot twist", "spoiler": True})
    call = await fake.wait_for_call(
        "POST", FOLLOWUP, predicate=lambda c: bool(c.files) and c.interaction_id == handle.id
    )
    assert all(f.filename.startswith("SPOILER_") for f in call.files)
