"""The shared HTTP client's transport: small pools per provider, connections kept alive at
ordinary load, one pool per connection in use under load."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import httpx
import pytest

from core.http import ShardedTransport, make_http_client
from core.providers.base import ProviderContext, call_api
from core.settings import ProviderSettings
from tests.emulators import Fault, create_emulator, running


async def test_sequential_requests_reuse_one_connection():
    emu = create_emulator("nebulablock")
    transport = ShardedTransport()
    async with running(emu) as url, httpx.AsyncClient(transport=transport) as client:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        for _ in range(5):
            response = await client.get(f"{url}/api/v1/users/credits", headers=headers)
            assert response.status_code == 200
        ((origin, shards),) = transport._shards.items()
        assert len(shards) == 1
        assert len(shards[0]._pool.connections) == 1
        assert transport._in_flight[origin] == [0]


async def test_concurrent_requests_get_a_pool_each_and_give_it_back():
    emu = create_emulator("nebulablock")
    emu.inject(Fault(delay_s=0.2, path="/users/credits"), times=8)
    transport = ShardedTransport(keep_alive_shards=3)
    async with running(emu) as url, httpx.AsyncClient(transport=transport) as client:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        responses = await asyncio.gather(
            *(client.get(f"{url}/api/v1/users/credits", headers=headers) for _ in range(8))
        )
        assert [r.status_code for r in responses] == [200] * 8
        ((origin, shards),) = transport._shards.items()
        assert len(shards) == 8
        assert transport._in_flight[origin] == [0] * 8
        # Only the first pools keep their connection open after the burst.
        open_after = [len(shard._pool.connections) for shard in shards]
        assert open_after == [1, 1, 1, 0, 0, 0, 0, 0]


async def test_a_failed_request_gives_its_slot_back():
    transport = ShardedTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/")  # discard port: nothing listens
    assert list(transport._in_flight.values()) == [[0]]


async def test_the_service_client_follows_no_redirects():
    async with make_http_client() as client:
        assert client.follow_redirects is False
        assert client.timeout.connect == 15.0


async def test_a_read_response_is_freed_without_the_garbage_collector():
    body = b'{"b64_json": "' + b"A" * 1_000_000 + b'"}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        ctx = ProviderContext("p", ProviderSettings(kind="openai"), http)
        gc.disable()
        try:
            response = await call_api(ctx, "GET", "https://p.test/", deadline=time.monotonic() + 5)
            assert response.content == body
            ref = weakref.ref(response)
            del response
            assert ref() is None  # with httpx's reference loop it would wait for gc
        finally:
            gc.enable()
