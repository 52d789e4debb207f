"""Spending controls: dry runs, ``max_credits`` ceilings, and consent for larger spends."""

from __future__ import annotations

from typing import Any

import pytest

from core.providers.placeholder import PlaceholderImageModel

from .conftest import make_settings, png
from .test_server import b64, quota


def priced(tmp_path: Any, **mcp: Any) -> Any:
    """Generation at 2 credits per image, other operations 1; 10 credits per period."""
    return make_settings(
        tmp_path,
        pricing={"default": 1, "models": {"placeholder:default": {"generate": 2, "default": 1}}},
        quota={"allowance": 10},
        mcp=mcp,
    )


@pytest.fixture
def provider_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many images the placeholder provider was asked for, call by call."""
    calls: list[int] = []
    original = PlaceholderImageModel.do_generate

    async def counted(self: PlaceholderImageModel, plan: Any, count: int, deadline: float) -> Any:
        calls.append(count)
        return await original(self, plan, count, deadline)

    monkeypatch.setattr(PlaceholderImageModel, "do_generate", counted)
    return calls


async def test_dry_run_prices_the_job_and_spends_nothing(tmp_path, connect, provider_calls):
    async with connect(priced(tmp_path)) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a fox", "n": 3, "negative_prompt": "blur", "dry_run": True},
        )
        assert not result.is_error, result.content
        out = result.structured_content
        assert (out["status"], out["price"], out["credits_remaining"]) == ("dry_run", 6, 10)
        assert out["job_id"] is None and out["images"] == [] and out["credits_charged"] == 0
        assert any("negative_prompt is ignored" in w for w in out["warnings"])
        text = result.content[0].text
        assert "nothing spent" in text and "up to 6 credit(s)" in text and "10 left" in text
        up = await client.call_tool("upscale_image", {"image": b64(png()), "dry_run": True})
        assert up.structured_content["price"] == 1
        poor = await client.call_tool("generate_image", {"prompt": "x", "n": 10, "dry_run": True})
        assert any("up to 20" in w and "10 left" in w for w in poor.structured_content["warnings"])
        bad = await client.call_tool(
            "generate_image", {"prompt": "x", "model": "no:pe", "dry_run": True}
        )
        assert bad.is_error and bad.structured_content["error"]["code"] == "invalid_input"
        assert (await quota(client))["remaining"] == 10
    assert provider_calls == []


async def test_max_credits_refuses_before_reserving_and_says_the_price(
    tmp_path, connect, provider_calls
):
    async with connect(priced(tmp_path)) as client:
        refused = await client.call_tool(
            "generate_image", {"prompt": "x", "n": 3, "max_credits": 5}
        )
        assert refused.is_error
        out = refused.structured_content
        assert out["error"]["code"] == "over_max_credits" and out["price"] == 6
        assert out["job_id"] is None and out["credits_remaining"] == 10
        assert "up to 6 credits" in refused.content[0].text
        assert "Nothing was charged" in refused.content[0].text
        edit = await client.call_tool(
            "edit_image",
            {"image": b64(png()), "mode": "variation", "n": 2, "max_credits": 1},
        )
        assert edit.structured_content["error"]["code"] == "over_max_credits"
        assert provider_calls == []
        assert (await quota(client))["held"] == 0
        made = await client.call_tool("generate_image", {"prompt": "x", "n": 3, "max_credits": 6})
        assert not made.is_error and made.structured_content["credits_charged"] == 6
        assert (await quota(client))["remaining"] == 4
