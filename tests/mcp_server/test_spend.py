"""Spending controls: dry runs, ``max_credits`` ceilings, and consent for larger spends."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

from core.providers.placeholder import PlaceholderImageModel
from mcp_server.consent import Budgets

from .conftest import make_settings, png, running
from .test_server import b64, quota


def priced(tmp_path: Any, allowance: int = 10, **mcp: Any) -> Any:
    """Generation at 2 credits per image, other operations 1; 10 credits per period."""
    return make_settings(
        tmp_path,
        pricing={"default": 1, "models": {"placeholder:default": {"generate": 2, "default": 1}}},
        quota={"allowance": allowance},
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


class User:
    """The person behind the client: answers each spend question in turn, and remembers them."""

    def __init__(self, *answers: dict[str, Any] | str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params.message)
        answer = self.answers.pop(0)
        if isinstance(answer, str):
            return ElicitResult(action=answer)
        return ElicitResult(action="accept", content=answer)


# 2026-07-28 (the question rides the result, the client calls again) and 2025-11-25 (the
# server asks during the call).
ERAS = pytest.mark.parametrize("mode", ["auto", "legacy"])


@ERAS
async def test_a_larger_spend_runs_once_the_user_accepts(tmp_path, connect, mode):
    user = User({"also_allow": 0, "minutes": 60}, {"also_allow": 0, "minutes": 60})
    settings = priced(tmp_path, confirm_over=3)
    async with connect(settings, mode=mode, elicitation_callback=user) as client:
        assert (client.protocol_version == "2026-07-28") is (mode == "auto")
        small = await client.call_tool("generate_image", {"prompt": "x", "return_image": "none"})
        assert not small.is_error and user.asked == []  # 2 credits: under the threshold
        made = await client.call_tool("generate_image", {"prompt": "a red fox", "n": 2})
        assert not made.is_error, made.content
        assert made.structured_content["credits_charged"] == 4
        [question] = user.asked
        assert "up to 4 credits" in question and '"a red fox"' in question
        again = await client.call_tool("generate_image", {"prompt": "a red fox", "n": 2})
        assert not again.is_error and len(user.asked) == 2  # no allowance: asked again
        assert (await quota(client))["remaining"] == 10 - 2 - 4 - 4


@ERAS
@pytest.mark.parametrize("answer", ["decline", "cancel"])
async def test_a_declined_or_dismissed_spend_costs_nothing(
    tmp_path, connect, provider_calls, mode, answer
):
    user = User(answer)
    settings = priced(tmp_path, confirm_over=3)
    async with connect(settings, mode=mode, elicitation_callback=user) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "n": 2})
        assert result.is_error and len(user.asked) == 1
        out = result.structured_content
        assert out["error"]["code"] == "spend_declined" and out["price"] == 4
        assert out["error"]["advice"] == "resend_if_wanted" and out["job_id"] is None
        assert "Nothing was charged" in result.content[0].text
        status = await quota(client)
    assert (status["remaining"], status["held"]) == (10, 0) and provider_calls == []


@ERAS
async def test_an_allowance_spares_questions_until_it_is_used_up(tmp_path, connect, mode):
    user = User({"also_allow": 6, "minutes": 30}, {"also_allow": 0, "minutes": 60})
    settings = priced(tmp_path, allowance=20, confirm_over=3)
    async with connect(settings, mode=mode, elicitation_callback=user) as client:
        args = {"prompt": "x", "n": 2, "return_image": "none"}
        for _ in range(2):  # asked once; the second call (4 of the 6 allowed) just runs
            assert not (await client.call_tool("generate_image", args)).is_error
        assert len(user.asked) == 1
        # 2 allowed credits left: not enough for 4, so the user is asked again.
        assert not (await client.call_tool("generate_image", args)).is_error
        assert len(user.asked) == 2
        assert (await quota(client))["remaining"] == 20 - 3 * 4


async def test_a_client_without_elicitation_is_told_how_to_allow_the_call(
    tmp_path, connect, provider_calls
):
    async with connect(priced(tmp_path, confirm_over=3)) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "n": 2})
        assert result.is_error
        out = result.structured_content
        assert out["error"]["code"] == "confirmation_required" and out["price"] == 4
        text = result.content[0].text
        assert "3 credits or less" in text and "confirm_over" in text and "elicitation" in text
        # Under the threshold, a dry run, or refused by max_credits anyway: nothing to ask.
        assert not (await client.call_tool("generate_image", {"prompt": "x"})).is_error
        dry = await client.call_tool("generate_image", {"prompt": "x", "n": 5, "dry_run": True})
        assert dry.structured_content["price"] == 10
        capped = await client.call_tool("generate_image", {"prompt": "x", "n": 2, "max_credits": 3})
        assert capped.structured_content["error"]["code"] == "over_max_credits"
        assert (await quota(client))["remaining"] == 8
    assert provider_calls == [1]


def test_an_allowance_lasts_its_minutes():
    now = [1000.0]
    budgets = Budgets(clock=lambda: now[0])
    budgets.grant("mcp:ann|t1", 6, minutes=1)
    assert budgets.take("mcp:ann|t1", 4) and not budgets.take("mcp:ann|t1", 4)
    assert budgets.left("mcp:ann|t1") == 2 and budgets.left("mcp:ann|t2") == 0
    now[0] += 61
    assert budgets.left("mcp:ann|t1") == 0 and not budgets.take("mcp:ann|t1", 1)


async def test_an_allowance_belongs_to_the_token_it_was_given_on(tmp_path):
    tokens = ["first-token-of-ann-0123456789", "second-token-of-ann-987654321"]
    clients = [
        {"user": "ann", "token_sha256": hashlib.sha256(t.encode()).hexdigest()} for t in tokens
    ]
    settings = priced(tmp_path, allowance=20, confirm_over=3, clients=clients)
    args = {"prompt": "x", "n": 2, "return_image": "none"}
    user = User({"also_allow": 8, "minutes": 30}, {"also_allow": 0, "minutes": 60})
    async with running(settings) as url:
        for token in (tokens[0], tokens[0], tokens[1]):
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
                transport = streamable_http_client(url, http_client=http)
                async with Client(transport, elicitation_callback=user) as client:
                    assert not (await client.call_tool("generate_image", args)).is_error
    # The second call on the first token used its allowance; the other token was asked.
    assert len(user.asked) == 2
