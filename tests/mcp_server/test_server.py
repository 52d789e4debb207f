"""The MCP tools through the real ``mcp`` client, in memory."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.server.mcpserver import Context
from PIL import Image

from core import Caller, ImageService
from core.errors import ContentRejectedError, ProviderUnavailableError
from mcp_server.server import IDEMPOTENCY_KEY, _idempotency_key, build_server, connection_state
from tests.core.test_late_charges import charge_late

from .conftest import Gate, make_settings, png

IMAGE_TOOLS = ("generate_image", "edit_image", "upscale_image", "get_job")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def quota(client: Client) -> dict[str, Any]:
    result = await client.call_tool("get_quota", {})
    assert not result.is_error
    return result.structured_content


async def test_tools_are_listed_with_annotations_schemas_and_descriptions(service):
    async with Client(build_server(service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        [template] = (await client.list_resource_templates()).resource_templates
    assert template.uri_template == "imagegate://images/{image_id}"
    assert set(tools) == {*IMAGE_TOOLS, "cancel_job", "list_jobs", "list_models", "get_quota"}
    for name, tool in tools.items():
        assert tool.description and tool.annotations is not None
        readers = ("list_models", "get_quota", "get_job", "list_jobs")
        assert tool.annotations.read_only_hint is (name in readers)
        assert tool.output_schema is not None, name
        for param, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{name}.{param} has no description"
    for name in ("generate_image", "edit_image", "upscale_image"):
        assert tools[name].annotations.open_world_hint is True
        assert tools[name].annotations.destructive_hint is False
        assert set(tools[name].output_schema["properties"]) >= {
            "job_id",
            "images",
            "credits_charged",
            "credits_remaining",
            "warnings",
        }
    assert tools["edit_image"].input_schema["properties"]["mode"]["enum"] == [
        "variation",
        "sketch",
        "inpaint",
        "background",
        "avatar",
    ]
    assert tools["cancel_job"].annotations.destructive_hint is True


TOOLS_LIST_MAX_CHARS = 16_000  # frozen: every agent carries tools/list in its context


async def test_tools_list_stays_within_its_budget(service, capsys):
    async with Client(build_server(service)) as client:
        listed = await client.list_tools()
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    with capsys.disabled():
        print(f"\ntools/list JSON: {size} characters (budget {TOOLS_LIST_MAX_CHARS})")
    assert size <= TOOLS_LIST_MAX_CHARS, f"tools/list grew to {size} characters"
    for tool in listed.tools:
        text = tool.description or ""
        # Each says what it costs, and when to reach for it (its first sentence).
        assert re.search(r"\b(Free|Costs)\b", text), tool.name
        assert 40 <= len(text) <= 400, tool.name
        for schema in (tool.input_schema, tool.output_schema or {}):
            assert '"title"' not in json.dumps(schema.get("properties", {})), tool.name


async def test_generate_returns_text_preview_link_and_structured_content(service):
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with Client(build_server(service)) as client:
        result = await client.call_tool(
            "generate_image",
            {"prompt": "a red fox", "n": 2, "seed": 7},
            progress_callback=on_progress,
        )
        assert not result.is_error, result.content
        assert [b.type for b in result.content] == [
            "text",
            "image",
            "image",
            "resource_link",
            "resource_link",
        ]
        out = result.structured_content
        assert out["status"] == "succeeded" and out["credits_charged"] == 2
        assert out["credits_remaining"] == 8
        assert [i["seed"] for i in out["images"]] == [7, 8]
        for image, link in zip(out["images"], result.content[3:], strict=True):
            assert image["uri"].startswith("imagegate://images/") and link.uri == image["uri"]
            assert (image["mime"], image["width"], image["height"]) == ("image/png", 512, 512)
            assert image["uri"] in result.content[0].text
        assert out["job_id"] in result.content[0].text and "8 left" in result.content[0].text

        full = await client.read_resource(out["images"][0]["uri"])
        data = base64.b64decode(full.contents[0].blob)
        assert full.contents[0].mime_type == "image/png"
        assert Image.open(io.BytesIO(data)).size == (512, 512)
        assert (await quota(client))["remaining"] == 8

    values = [p for p, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values) and len(values) >= 2
    assert any(out["job_id"] in (m or "") for _, m in seen)


async def test_return_image_none_sends_no_image_content(service):
    async with Client(build_server(service)) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "return_image": "none"})
    assert [b.type for b in result.content] == ["text", "resource_link"]


async def test_large_image_stays_within_the_preview_budget(settings_factory):
    noise = Image.frombytes("RGB", (768, 768), os.urandom(768 * 768 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    settings = settings_factory(mcp={"result_max_bytes": 200_000})
    async with Client(build_server(settings)) as client:
        for mode in ("preview", "full"):
            result = await client.call_tool(
                "upscale_image", {"image": b64(buf.getvalue()), "return_image": mode}
            )
            assert not result.is_error, result.content
            assert result.structured_content["images"][0]["width"] == 1536
            images = [b for b in result.content if b.type == "image"]
            assert len(images) == 1 and len(images[0].data) <= 200_000
            assert max(Image.open(io.BytesIO(base64.b64decode(images[0].data))).size) <= 512
            assert len(result.model_dump_json(by_alias=True)) < 250_000
        assert any("previews sent instead" in w for w in result.structured_content["warnings"])


async def test_edit_and_upscale_take_uris_base64_and_data_uris(service):
    async with Client(build_server(service)) as client:
        made = await client.call_tool("generate_image", {"prompt": "cat", "return_image": "none"})
        uri = made.structured_content["images"][0]["uri"]
        variation = await client.call_tool(
            "edit_image", {"image": uri, "mode": "variation", "prompt": "a cat in snow"}
        )
        assert not variation.is_error, variation.content
        assert variation.structured_content["images"][0]["uri"] != uri
        inpaint = await client.call_tool(
            "edit_image",
            {
                "image": "data:image/png;base64," + b64(png((64, 64))),
                "mask": b64(png((64, 64), (255, 255, 255))),
                "mode": "inpaint",
                "prompt": "a hat",
            },
        )
        assert not inpaint.is_error, inpaint.content
        up = await client.call_tool("upscale_image", {"image": b64(png((80, 60))), "scale": 2})
        assert not up.is_error, up.content
        assert up.structured_content["images"][0]["width"] == 160
        assert (await quota(client))["remaining"] == 6


async def test_bad_input_is_an_actionable_error_that_costs_nothing(service):
    async with Client(build_server(service)) as client:
        cases = [
            ("edit_image", {"image": "not base64 !!", "mode": "variation"}),
            ("edit_image", {"image": "http://example.com/a.png", "mode": "variation"}),
            ("edit_image", {"image": "file:///etc/passwd", "mode": "variation"}),
            ("edit_image", {"image": b64(b"no image here"), "mode": "sketch"}),
            ("edit_image", {"image": b64(png()), "mode": "inpaint"}),
            ("generate_image", {"prompt": "x", "model": "nope:nothing"}),
            ("generate_image", {"prompt": "x", "size": "512x512", "aspect_ratio": "1:1"}),
            ("generate_image", {"prompt": "x", "size": "10x10"}),
            ("generate_image", {"prompt": "x", "n": 0}),
            ("generate_image", {"prompt": "x", "n": 99}),
        ]
        for tool, args in cases:
            result = await client.call_tool(tool, args)
            assert result.is_error, (tool, args)
            error = result.structured_content["error"]
            assert error["code"] == "invalid_input", (args, error)
            assert error["credits_refunded"] is False and error["retryable"] is False
            assert "Nothing was charged" in result.content[0].text
        schema = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        assert schema["generate_image"]["properties"]["n"]["maximum"] == 10  # still advertised
        refused = await client.call_tool("generate_image", {"prompt": "x", "n": 0})
        assert "n: the number of images must be between 1 and 10" in refused.content[0].text
        assert (await quota(client))["remaining"] == 10


async def test_quota_exceeded_says_what_is_left_and_when_to_retry(settings_factory):
    async with Client(build_server(settings_factory(quota={"allowance": 2}))) as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "n": 3})
        assert result.is_error
        error = result.structured_content["error"]
        assert error["code"] == "quota_exceeded"
        assert result.structured_content["credits_remaining"] == 2
        assert error["retry_after_s"] > 0 and error["credits_refunded"] is False
        assert "get_quota" in result.content[0].text


async def test_provider_failure_is_refunded_with_a_retry_hint(settings_factory, gate: Gate):
    gate.fail = ProviderUnavailableError("the provider is down", provider="placeholder")
    gate.released.set()
    async with Client(build_server(settings_factory(defaults={"max_retries": 0}))) as client:
        result = await client.call_tool("generate_image", {"prompt": "x"})
        assert result.is_error
        out = result.structured_content
        error = out["error"]
        assert error["code"] == "provider_unavailable" and error["retryable"] is True
        assert error["credits_refunded"] is True and out["job_id"] and out["status"] == "failed"
        assert out["credits_remaining"] == 10 and error["retry_after_s"] > 0
        gate.fail = ContentRejectedError("the prompt was refused")
        refused = await client.call_tool("generate_image", {"prompt": "x"})
        assert refused.structured_content["error"]["code"] == "content_rejected"
        assert refused.structured_content["error"]["retryable"] is False
        assert (await quota(client))["remaining"] == 10


async def test_cancelled_call_releases_its_hold(service, gate: Gate):
    server = build_server(service)
    async with Client(server) as client:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await client.call_tool("generate_image", {"prompt": "slow", "n": 3})

                tg.start_soon(call)
                await gate.entered.wait()
                held = await quota(client)
                assert held["held"] == 3 and held["remaining"] == 7
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught
        with anyio.fail_after(5):
            while (status := await quota(client))["held"]:
                await anyio.sleep(0.02)
        assert status["remaining"] == 10 and status["in_flight"] == 0
        assert gate.cancelled == 1
        [job_id] = server.jobs._jobs
        later = await client.call_tool("get_job", {"job_id": job_id, "wait_s": 0})
        error = later.structured_content["error"]
        assert error["code"] == "cancelled" and error["credits_refunded"] is True


async def test_long_job_returns_its_id_and_get_job_collects_it(settings_factory, gate: Gate):
    settings = settings_factory(mcp={"wait_bound_s": 0.2, "progress_interval_s": 0.05})
    service = await ImageService.open(settings, sweeper=False)
    try:
        async with Client(build_server(service)) as client:
            first = await client.call_tool("generate_image", {"prompt": "slow", "n": 2})
            assert not first.is_error
            out = first.structured_content
            assert out["status"] == "running" and out["images"] == [] and out["job_id"]
            assert "get_job" in first.content[0].text
            still = await client.call_tool("get_job", {"job_id": out["job_id"], "wait_s": 0})
            assert still.structured_content["status"] == "running"
            gate.released.set()
            # Each get_job waits at most wait_bound_s (0.2 s here): ask until it is done.
            with anyio.fail_after(30):
                while True:
                    done = await client.call_tool("get_job", {"job_id": out["job_id"], "wait_s": 5})
                    if done.structured_content["status"] != "running":
                        break
            assert not done.is_error, done.content
            assert done.structured_content["status"] == "succeeded"
            assert len(done.structured_content["images"]) == 2
            assert done.structured_content["credits_charged"] == 2
    finally:
        await service.aclose()
    # After the process forgot it, the job is read back from the store.
    async with Client(build_server(settings)) as client:
        again = await client.call_tool("get_job", {"job_id": out["job_id"], "wait_s": 0})
        assert again.structured_content["status"] == "succeeded"
        assert [b.type for b in again.content].count("resource_link") == 2


async def test_get_job_and_images_of_another_user_are_not_found(tmp_path):
    alice = await ImageService.open(make_settings(tmp_path, mcp={"stdio_user": "alice"}))
    bob = await ImageService.open(make_settings(tmp_path, mcp={"stdio_user": "bob"}))
    try:
        async with Client(build_server(alice)) as client:
            made = await client.call_tool("generate_image", {"prompt": "mine"})
        uri = made.structured_content["images"][0]["uri"]
        job_id = made.structured_content["job_id"]
        async with Client(build_server(bob)) as client:
            with pytest.raises(MCPError, match="of yours"):
                await client.read_resource(uri)
            edit = await client.call_tool("edit_image", {"image": uri, "mode": "variation"})
            assert edit.structured_content["error"]["code"] == "not_found"
            job = await client.call_tool("get_job", {"job_id": job_id, "wait_s": 0})
            assert job.structured_content["error"]["code"] == "not_found"
            assert (await quota(client))["user"] == "mcp:bob"
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_list_models_and_get_quota(service):
    async with Client(build_server(service)) as client:
        models = (await client.call_tool("list_models", {})).structured_content
        assert models["default_model"] == "placeholder:default"
        [model] = models["models"]
        assert model["ref"] == "placeholder:default" and model["price"] == 1
        assert "inpaint" in model["operations"]
        status = await quota(client)
    assert set(status) == {
        "user",
        "remaining",
        "allowance",
        "granted",
        "held",
        "in_flight",
        "period",
        "resets_at",
        "debt",
        "late_charged",
    }
    assert status["user"] == "mcp:local" and status["allowance"] == 10


async def test_get_quota_shows_late_charges_and_debt(service):
    await charge_late(service, Caller(frontend="mcp", user_id="local"), 4, spent=8)
    async with Client(build_server(service)) as client:
        status = await quota(client)
    assert (status["remaining"], status["debt"], status["late_charged"]) == (-2, 2, 4)
    assert status["held"] == 8


async def test_server_built_from_settings_opens_and_closes_its_service(settings_factory):
    server = build_server(settings_factory(mcp={"stdio_user": "robot"}))
    for mode in ("auto", "legacy"):
        async with Client(server, mode=mode) as client:
            assert (await quota(client))["user"] == "mcp:robot"
            result = await client.call_tool("generate_image", {"prompt": "x"})
            assert not result.is_error


async def test_idempotency_key_is_per_connection_and_request_id(service, caplog):
    """Against the real SDK objects: the connection state the key relies on is there, and
    the client's own key in _meta wins on every protocol."""
    server = build_server(service)
    caller = Caller(frontend="mcp", user_id="local")

    async def probe(ctx: Context) -> str:
        """Test only: this request's idempotency key."""
        assert isinstance(connection_state(ctx), dict)
        return _idempotency_key(ctx, caller) or ""

    server.add_tool(probe)
    async with Client(server) as client:  # the newest protocol: no connection beyond a request
        assert (await client.call_tool("probe", {})).structured_content["result"] == ""
        own = await client.call_tool("probe", {}, meta={IDEMPOTENCY_KEY: "abc"})
        assert own.structured_content["result"] == "mcp:mcp:local:key:abc"
    keys = []
    for _ in range(2):
        # A connection that lasts across requests (the handshake protocols).
        async with Client(server, mode="legacy") as client:
            for _ in range(2):
                result = await client.call_tool("probe", {})
                keys.append(result.structured_content["result"])
            own = await client.call_tool("probe", {}, meta={IDEMPOTENCY_KEY: "abc"})
            assert own.structured_content["result"] == "mcp:mcp:local:key:abc"
    assert all(k.startswith("mcp:mcp:local:") for k in keys)
    token = [k.rsplit(":", 2)[1] for k in keys]
    assert token[0] == token[1] != token[2] == token[3]  # one token per connection
    assert len(set(keys)) == 4  # request ids differ within a connection

    no_connection: Any = SimpleNamespace(
        session=SimpleNamespace(),
        request_context=SimpleNamespace(request_id=1, meta=None),
        protocol_version="2025-11-25",
    )
    with caplog.at_level("WARNING", logger="imagegate.mcp"):
        assert _idempotency_key(no_connection, caller) is None
        assert _idempotency_key(no_connection, caller) is None
    assert len([r for r in caplog.records if "connection state" in r.message]) <= 1


async def test_save_dir_gets_full_size_copies_and_results_name_them(tmp_path, connect):
    out = tmp_path / "saved"
    async with connect(make_settings(tmp_path, mcp={"save_dir": str(out)})) as client:
        made = await client.call_tool("generate_image", {"prompt": "fox", "n": 2})
        assert not made.is_error, made.content
        images = made.structured_content["images"]
        for image in images:
            path = Path(image["path"])
            assert path.parent == out.resolve() and path.suffix == ".png"
            assert path.name.startswith(made.structured_content["job_id"])
            assert f"saved as {path}" in made.content[0].text
            full = await client.read_resource(image["uri"])
            assert path.read_bytes() == base64.b64decode(full.contents[0].blob)
        again = await client.call_tool(
            "get_job", {"job_id": made.structured_content["job_id"], "wait_s": 0}
        )
        assert [i["path"] for i in again.structured_content["images"]] == [
            i["path"] for i in images
        ]
    assert len(list(out.iterdir())) == 2


async def test_an_unwritable_save_dir_still_delivers_and_says_why(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = make_settings(tmp_path, mcp={"save_dir": str(blocker / "out")})
    async with Client(build_server(settings)) as client:
        made = await client.call_tool("generate_image", {"prompt": "fox"})
    assert not made.is_error and made.structured_content["images"][0]["path"] is None
    assert any("save_dir" in w for w in made.structured_content["warnings"])
    assert made.structured_content["credits_charged"] == 1
