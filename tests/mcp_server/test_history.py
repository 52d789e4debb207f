"""Cancel and history: cancel_job, list_jobs and resources/list, each caller seeing only
their own jobs and images."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import mcp_server.server

from .conftest import Gate, make_settings, running
from .test_server import quota

TOKENS = {"ann": "token-of-ann-0123456789", "bob": "token-of-bob-9876543210"}
CLIENTS = [
    {"user": user, "token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    for user, token in TOKENS.items()
]


async def test_cancel_job_stops_a_running_job_and_refunds_it(tmp_path, connect, gate: Gate):
    settings = make_settings(tmp_path, mcp={"wait_bound_s": 0.2, "progress_interval_s": 0.05})
    async with connect(settings) as client:
        started = await client.call_tool("generate_image", {"prompt": "slow", "n": 3})
        job_id = started.structured_content["job_id"]
        assert started.structured_content["status"] == "running"
        assert (await quota(client))["held"] == 3
        cancelled = await client.call_tool("cancel_job", {"job_id": job_id})
        assert not cancelled.is_error, cancelled.content
        out = cancelled.structured_content
        assert (out["status"], out["credits_charged"], out["credits_remaining"]) == (
            "cancelled",
            0,
            10,
        )
        assert "was cancelled" in cancelled.content[0].text
        later = await client.call_tool("get_job", {"job_id": job_id, "wait_s": 0})
        assert later.structured_content["status"] == "cancelled"
        again = await client.call_tool("cancel_job", {"job_id": job_id})
        assert again.structured_content["status"] == "cancelled" and not again.is_error
        missing = await client.call_tool("cancel_job", {"job_id": "nosuchjob"})
        assert missing.is_error and missing.content[0].text.startswith("not_found: ")
        status = await quota(client)
    assert (status["remaining"], status["held"]) == (10, 0) and gate.cancelled == 1


async def test_list_jobs_pages_newest_first(tmp_path, connect):
    async with connect(make_settings(tmp_path)) as client:
        assert "No jobs yet" in (await client.call_tool("list_jobs", {})).content[0].text
        made = []
        for prompt in ("one", "two", "three"):
            result = await client.call_tool("generate_image", {"prompt": prompt, "n": 2})
            made.append(result.structured_content)
        first = await client.call_tool("list_jobs", {"limit": 2})
        assert not first.is_error, first.content
        page = first.structured_content
        assert [j["prompt"] for j in page["jobs"]] == ["three", "two"]
        newest = page["jobs"][0]
        assert newest["job_id"] == made[2]["job_id"] and newest["status"] == "succeeded"
        assert newest["credits_charged"] == 2
        assert newest["images"] == [i["uri"] for i in made[2]["images"]]
        assert page["next_cursor"] and page["next_cursor"] in first.content[0].text
        second = await client.call_tool("list_jobs", {"limit": 2, "cursor": page["next_cursor"]})
        assert [j["prompt"] for j in second.structured_content["jobs"]] == ["one"]
        assert second.structured_content["next_cursor"] is None
        done = await client.call_tool("cancel_job", {"job_id": made[0]["job_id"]})
        assert "already ended (succeeded); nothing to cancel" in done.content[0].text
        bad = await client.call_tool("list_jobs", {"cursor": "not-a-cursor"})
        assert bad.is_error and bad.structured_content is None
        assert "invalid_input" in bad.content[0].text


async def test_resources_list_pages_the_callers_images(tmp_path, connect, monkeypatch):
    monkeypatch.setattr(mcp_server.server, "RESOURCES_PAGE", 3)
    async with connect(make_settings(tmp_path)) as client:
        made = await client.call_tool("generate_image", {"prompt": "x", "n": 4})
        more = await client.call_tool("generate_image", {"prompt": "y", "n": 1})
        first = await client.list_resources()
        assert len(first.resources) == 3 and first.next_cursor
        second = await client.list_resources(cursor=first.next_cursor)
        assert len(second.resources) == 2 and second.next_cursor is None
        listed = [r.uri for r in first.resources + second.resources]
        expected = [
            i["uri"]
            for i in (*more.structured_content["images"], *made.structured_content["images"])
        ]
        assert listed[0] == expected[0] and set(listed) == set(expected)
        newest = first.resources[0]
        assert newest.mime_type == "image/png" and newest.size and newest.name.endswith(".png")
        read = await client.read_resource(newest.uri)
        assert read.contents[0].mime_type == "image/png"
        [template] = (await client.list_resource_templates()).resource_templates
        assert template.uri_template == "imagegate://images/{image_id}"


async def test_other_users_jobs_and_images_stay_invisible(tmp_path, gate: Gate):
    settings = make_settings(
        tmp_path, mcp={"clients": CLIENTS, "wait_bound_s": 0.2, "progress_interval_s": 0.05}
    )
    async with running(settings) as url:
        async with connected(url, TOKENS["ann"]) as ann, connected(url, TOKENS["bob"]) as bob:
            started = await ann.call_tool("generate_image", {"prompt": "ann's", "n": 2})
            job_id = started.structured_content["job_id"]
            stolen = await bob.call_tool("cancel_job", {"job_id": job_id})
            assert stolen.is_error and stolen.content[0].text.startswith("not_found: ")
            gate.released.set()
            with anyio.fail_after(30):
                while (await ann.call_tool("get_job", {"job_id": job_id})).structured_content[
                    "status"
                ] == "running":
                    pass
            assert (await bob.call_tool("list_jobs", {})).structured_content["jobs"] == []
            assert (await bob.list_resources()).resources == []
            jobs = (await ann.call_tool("list_jobs", {})).structured_content["jobs"]
            assert [j["job_id"] for j in jobs] == [job_id] and len(jobs[0]["images"]) == 2
            assert len((await ann.list_resources()).resources) == 2


@asynccontextmanager
async def connected(url: str, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client
