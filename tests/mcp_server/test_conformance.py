"""Error results every client accepts: the same calls through the Python SDK client and the
TypeScript SDK client (which validates ``structuredContent`` against the tool's output schema
even on ``isError`` results, and throws on a mismatch)."""

from __future__ import annotations

from typing import Any

import jsonschema
from mcp import Client

from .conftest import make_settings, png, running
from .test_server import b64
from .tsclient import run_ts

PNG = b64(png())

# (tool, arguments, expected error code; None: a success; "plain": an error in text alone,
# from the SDK itself or a tool whose output schema has no error object)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("edit_image", {"image": "not base64 !!", "mode": "variation"}, "invalid_input"),
    ("upscale_image", {"image": "http://example.com/a.png"}, "invalid_input"),
    ("generate_image", {"prompt": "x", "model": "nope:nothing"}, "invalid_input"),
    ("generate_image", {"prompt": "x", "n": 99}, "plain"),
    ("get_job", {"job_id": "nosuchjob", "wait_s": 0}, "not_found"),
    ("no_such_tool", {}, "plain"),
    ("generate_image", {"prompt": "fine", "return_image": "none"}, None),
    ("generate_image", {"prompt": "x", "n": 3}, "quota_exceeded"),
    ("generate_image", {"prompt": "x", "n": 2, "max_credits": 1}, "over_max_credits"),
    ("upscale_image", {"image": PNG, "dry_run": True}, None),
    ("cancel_job", {"job_id": "nosuchjob"}, "plain"),
    ("list_jobs", {"limit": 2}, None),
    ("list_jobs", {"cursor": "not-a-cursor"}, "plain"),
    ("list_models", {}, None),
    ("get_quota", {}, None),
]


def check(name: str, expected: str | None, result: dict[str, Any], schemas: dict) -> None:
    """One result as a client sees it (wire JSON): right error flag, facts in the text,
    structured content (when present) valid against the tool's output schema."""
    text = " ".join(b.get("text", "") for b in result["content"] if b["type"] == "text")
    assert bool(result.get("isError")) is (expected is not None), (name, text)
    structured = result.get("structuredContent")
    if expected is None:
        assert structured is not None, name
    elif expected != "plain":
        assert text.startswith(f"{expected}: "), text
        assert structured["error"]["code"] == expected and structured["error"]["message"] in text
        assert "charged" in text
    if structured is not None and schemas.get(name):
        jsonschema.validate(structured, schemas[name])


async def test_error_results_are_valid_for_the_python_and_typescript_clients(tmp_path):
    settings = make_settings(tmp_path, quota={"allowance": 2})
    calls = [{"name": tool, "arguments": args} for tool, args, _ in CASES]
    async with running(settings) as url:
        async with Client(url) as client:
            listed = (await client.list_tools()).tools
            schemas = {t.name: t.output_schema for t in listed}
            python = [
                (await client.call_tool(c["name"], c["arguments"])).model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
                for c in calls
            ]
        typescript = await run_ts(url, calls)
    assert set(typescript["tools"]) == set(schemas)
    for (tool, _, expected), py, ts in zip(CASES, python, typescript["results"], strict=True):
        check(tool, expected, py, schemas)
        assert "thrown" not in ts, (tool, ts)
        check(tool, expected, ts["result"], schemas)


async def test_the_error_text_alone_carries_the_facts(tmp_path):
    """For clients that show only text: what failed, what it cost, what is left, what to do."""
    settings = make_settings(tmp_path, quota={"allowance": 1})
    async with running(settings) as url:
        [seen] = (
            await run_ts(url, [{"name": "generate_image", "arguments": {"n": 2, "prompt": "x"}}])
        )["results"]
    text = seen["result"]["content"][0]["text"]
    assert text.startswith("quota_exceeded: ") and "Nothing was charged" in text
    assert "1 credit(s) left" in text and "get_quota" in text


async def test_spend_consent_through_the_typescript_client(tmp_path):
    """Form elicitation as the TypeScript SDK client answers it (during the call, 2025-11-25):
    accepted with an allowance, then covered by it, then declined once it is used up."""
    settings = make_settings(tmp_path, quota={"allowance": 10}, mcp={"confirm_over": 1})
    args = {"prompt": "a fox", "n": 2, "return_image": "none"}
    calls = [{"name": "generate_image", "arguments": args}] * 3
    answers = [
        {"action": "accept", "content": {"also_allow": 2, "minutes": 5}},
        {"action": "decline"},
    ]
    async with running(settings) as url:
        seen = await run_ts(url, calls, elicit=answers)
        async with Client(url) as client:
            left = (await client.call_tool("get_quota", {})).structured_content["remaining"]
    first, second, third = (r["result"] for r in seen["results"])
    assert len(seen["asked"]) == 2 and "up to 2 credits" in seen["asked"][0]["message"]
    assert seen["asked"][0]["requestedSchema"]["properties"]["also_allow"]["type"] == "integer"
    assert not first.get("isError") and not second.get("isError")
    assert third["isError"] and third["structuredContent"]["error"]["code"] == "spend_declined"
    assert left == 6
