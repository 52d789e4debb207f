"""Styles and personal defaults on MCP: the same core rules as Discord, through the real client
in memory and over streamable HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core import Caller, ImageService, Settings
from tests.core.test_personal import STYLES

from .conftest import call, make_settings, png, running
from .test_server import b64, quota

LOCAL = Caller(frontend="mcp", user_id="local")  # the stdio user, also tokenless HTTP's
PROVIDERS = {
    "placeholder": {"kind": "placeholder", "models": ["default"]},
    "studio": {"kind": "placeholder", "models": ["hd"]},
}


def styled_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        styles=STYLES,
        providers=PROVIDERS,
        pricing={"default": 1, "models": {"studio:hd": 3}},
    )


async def stored_request(settings: Settings, caller: Caller, job_id: str) -> dict[str, Any]:
    """The request as the job stored it (what was sent to the provider)."""
    async with await ImageService.open(settings, sweeper=False) as service:
        return (await service.job(caller, job_id)).request


async def test_a_style_is_listed_and_wraps_the_prompt(tmp_path, connect):
    settings = styled_settings(tmp_path)
    async with connect(settings) as client:
        listed = (await client.call_tool("list_models", {})).structured_content
        assert listed["styles"] == [{"name": "noir", "description": "black and white crime film"}]
        assert all("options" in model for model in listed["models"])
        made = await client.call_tool(
            "generate_image",
            {"prompt": "a cat", "style": "noir", "negative_prompt": "dogs", "return_image": "none"},
        )
        assert not made.is_error, made.content
        uri = made.structured_content["images"][0]["uri"]
        edited = await client.call_tool(
            "edit_image",
            {"image": uri, "mode": "variation", "prompt": "a dog", "style": "NOIR"},
        )
        assert not edited.is_error, edited.content
        jobs = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
    assert [j["prompt"] for j in jobs] == [
        "a dog, film noir, high contrast",
        "a cat, film noir, high contrast",
    ]
    sent = await stored_request(settings, LOCAL, made.structured_content["job_id"])
    assert (sent["prompt"], sent["negative_prompt"], sent["aspect_ratio"]) == (
        "a cat, film noir, high contrast",
        "dogs, colour",
        "16:9",
    )


async def test_an_unknown_style_is_refused_at_no_cost(tmp_path, connect):
    async with connect(styled_settings(tmp_path)) as client:
        for tool, args in (
            ("generate_image", {"prompt": "x", "n": 3, "style": "vaporwave"}),
            ("edit_image", {"image": b64(png()), "mode": "variation", "style": "vaporwave"}),
        ):
            refused = await client.call_tool(tool, args)
            assert refused.is_error, tool
            error = refused.structured_content["error"]
            assert (error["code"], error["advice"]) == ("invalid_input", "fix_request")
            assert "vaporwave" in error["message"] and "list_models" in error["message"]
            assert "Nothing was charged" in refused.content[0].text
        status = await quota(client)
        jobs = (await client.call_tool("list_jobs", {})).structured_content["jobs"]
    assert (status["remaining"], status["held"], jobs) == (10, 0, [])


async def test_personal_defaults_apply_and_explicit_arguments_win(tmp_path, connect):
    settings = styled_settings(tmp_path)
    async with await ImageService.open(settings, sweeper=False) as service:
        await service.set_preferences(LOCAL, model="studio:hd", count=2, style="noir")
    async with connect(settings) as client:
        priced = await client.call_tool("generate_image", {"prompt": "a boat", "dry_run": True})
        assert (priced.structured_content["model"], priced.structured_content["price"]) == (
            "studio:hd",
            6,
        )
        mine = await client.call_tool("generate_image", {"prompt": "a boat"})
        out = mine.structured_content
        assert (out["model"], len(out["images"]), out["credits_charged"]) == ("studio:hd", 2, 6)
        explicit = await client.call_tool(
            "generate_image",
            {"prompt": "a boat", "n": 1, "model": "placeholder:default", "aspect_ratio": "1:1"},
        )
        out = explicit.structured_content
        assert (out["model"], len(out["images"]), out["credits_charged"]) == (
            "placeholder:default",
            1,
            1,
        )
    first = await stored_request(settings, LOCAL, mine.structured_content["job_id"])
    assert (first["prompt"], first["aspect_ratio"]) == ("a boat, film noir, high contrast", "16:9")
    second = await stored_request(settings, LOCAL, explicit.structured_content["job_id"])
    assert (second["prompt"], second["aspect_ratio"]) == ("a boat, film noir, high contrast", "1:1")


async def test_a_discord_members_token_brings_their_settings(tmp_path):
    settings = styled_settings(tmp_path)
    member = Caller(frontend="discord", user_id="42")
    async with await ImageService.open(settings, sweeper=False) as service:
        token, _ = await service.mint_own_token(member)
        other, _ = await service.mint_own_token(Caller(frontend="mcp", user_id="erin"))
        await service.set_preferences(member, model="studio:hd")
    async with running(settings) as url:
        made = await call(url, token, "generate_image", {"prompt": "a kite"})
        erins = await call(url, other, "generate_image", {"prompt": "a kite"})
    assert made.structured_content["model"] == "studio:hd"
    assert erins.structured_content["model"] == "placeholder:default"
