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

# (tool, arguments, expected error code; None: a success; "sdk": refused by the SDK itself)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("edit_image", {"image": "not base64 !!", "mode": "variation"}, "invalid_input"),
    ("upscale_image", {"image": "http://example.com/a.png"}, "invalid_input"),
    ("generate_image", {"prompt": "x", "model": "nope:nothing"}, "invalid_input"),
    ("generate_image", {"prompt": "x", "n": 99}, "sdk"),
    ("get_job", {"job_id": "nosuchjob", "wait_s": 0}, "not_found"),
    ("no_such_tool", {}, "sdk"),
    ("generate_image", {"prompt": "fine", "return_image": "none"}, None),
    ("generate_image", {"prompt": "x", "n": 3}, "quota_exceeded"),
    ("generate_image", {"prompt": "x", "n": 2, "max_credits": 1}, "over_max_credits"),
    ("upscale_image", {"image": PNG, "dry_run": True}, None),
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
    elif expected != "sdk":
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
