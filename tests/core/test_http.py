"""The shared HTTP client: httpx in front, aiohttp underneath. Requests go out as httpx built
them, connections are reused, and every transport failure surfaces as the httpx error httpx's
own transport raises for the same cause."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import os
import subprocess
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from core.http import make_http_client
from core.providers.base import ProviderContext, call_api
from core.settings import ProviderSettings
from tests.emulators import Fault, create_emulator, running

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[tuple[str, list[int]]]:
    """A socket server answering each connection with ``reply``; yields its URL and a list
    that grows by one per accepted connection."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reply(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_requests_go_out_as_httpx_builds_them():
    seen: list[bytes] = []

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await read_head(reader):
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            seen.append(head + await reader.readexactly(length))
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(reply) as (url, _), make_http_client() as client:
        response = await client.post(
            f"{url}/v1/x?q=1", json={"a": 1}, headers={"Authorization": "Bearer k"}
        )
        upload = await client.post(f"{url}/up", files={"image": ("a.png", b"PNG", "image/png")})
    assert (response.status_code, response.reason_phrase, response.text) == (201, "Created", "ok")
    assert upload.status_code == 201
    json_request, multipart = (message.decode() for message in seen)
    assert json_request.startswith("POST /v1/x?q=1 HTTP/1.1\r\n")
    assert "authorization: Bearer k\r\n" in json_request
    assert json_request.lower().count("content-length") == 1
    assert json_request.endswith('\r\n\r\n{"a":1}')
    assert 'name="image"; filename="a.png"' in multipart


async def test_sequential_requests_reuse_one_connection():
    emu = create_emulator("nebulablock")
    async with running(emu) as url, make_http_client() as client:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        for _ in range(5):
            response = await client.get(f"{url}/api/v1/users/credits", headers=headers)
            assert response.status_code == 200
        session = client._transport._session  # type: ignore[attr-defined]
        assert sum(len(conns) for conns in session.connector._conns.values()) == 1


async def test_concurrent_requests_each_get_a_connection():
    emu = create_emulator("nebulablock")
    emu.inject(Fault(delay_s=0.2, path="/users/credits"), times=50)
    async with running(emu) as url, make_http_client() as client:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        start = time.monotonic()
        responses = await asyncio.gather(
            *(client.get(f"{url}/api/v1/users/credits", headers=headers) for _ in range(50))
        )
        assert [r.status_code for r in responses] == [200] * 50
        assert time.monotonic() - start < 5  # 50 x 0.2 s one after another would be 10 s


async def test_connection_refused_is_a_connect_error():
    async with make_http_client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/")  # discard port: nothing listens


async def test_a_silent_server_is_a_read_timeout():
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    async with raw_server(reply) as (url, _), make_http_client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url, timeout=0.3)


def answer_once(raw: bytes) -> Reply:
    """Read one request, send ``raw`` back, close the connection."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(raw)
        await writer.drain()

    return reply


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", httpx.RemoteProtocolError),
        (b"SSH-2.0-OpenSSH\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", httpx.ReadError),
    ],
    ids=["dropped", "not http", "truncated body"],
)
async def test_a_broken_reply_is_the_httpx_error_for_its_cause(raw, error):
    async with raw_server(answer_once(raw)) as (url, accepted), make_http_client() as client:
        for _ in range(2):
            with pytest.raises(error):
                await client.post(url, json={})
        # A broken connection is never reused, and a POST is never sent again by the transport
        # (a retry could be a second charge: only the orchestrator decides to retry).
        assert len(accepted) == 2


def serve_body(body: bytes, *, chunked: bool, head: bytes = b"") -> Reply:
    """A reply of ``body`` to every request on a connection: with a Content-Length (read at
    once by the client) or chunked (streamed)."""
    if chunked:
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head += b"Transfer-Encoding: chunked\r\n"
    else:
        framed, head = body, head + b"Content-Length: %d\r\n" % len(body)

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_head(reader):
            writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + framed)
            await writer.drain()

    return reply


async def test_an_unread_streamed_body_closes_its_connection():
    body = b"x" * 1_000_000
    async with (
        raw_server(serve_body(body, chunked=True)) as (url, accepted),
        make_http_client() as client,
    ):
        async with client.stream("GET", url) as response:
            assert response.status_code == 200  # the body is never read
        assert (await client.get(url)).content == body
        assert (await client.get(url)).status_code == 200
        assert len(accepted) == 2  # a fresh connection after the unread body, then reused


@pytest.mark.parametrize("chunked", [False, True])  # read at once, and streamed
async def test_compressed_bodies_are_decoded_either_way(chunked):
    body = b'{"pad": "' + os.urandom(200_000).hex().encode() + b'"}'
    reply = serve_body(gzip.compress(body), chunked=chunked, head=b"Content-Encoding: gzip\r\n")
    async with raw_server(reply) as (url, _), make_http_client() as client:
        response = await client.get(url)
        assert response.content == body
        async with client.stream("GET", url) as streamed:
            assert b"".join([chunk async for chunk in streamed.aiter_bytes()]) == body


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


FIRST_CALL = """
import asyncio, json, socket, sys, threading

on_loop_thread = []


def audit(event, args):
    if event == "import" and args[0] == "aiohttp":
        on_loop_thread.append(threading.current_thread() is threading.main_thread())


sys.addaudithook(audit)
from core import Caller, ImageGateError, ImageRequest, ImageService, parse_settings

closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
settings = parse_settings({
    "database": {"path": sys.argv[1] + "/db.sqlite"},
    "images": {"dir": sys.argv[1] + "/images"},
    "providers": {"p": {
        "kind": "openai", "base_url": f"http://127.0.0.1:{closed.getsockname()[1]}/v1",
        "api_key_env": "IG_TEST_FIRST_CALL_KEY", "models": ["dall-e-2"],
    }},
    "pricing": {"default": 1},
    "defaults": {"max_retries": 0},
})


async def main():
    async with await ImageService.open(settings) as service:
        request = ImageRequest(prompt="x", model="p:dall-e-2")
        try:
            await service.generate(Caller.parse("cli:t"), request)
        except ImageGateError:
            pass


asyncio.run(main())
print(json.dumps(on_loop_thread))
"""


def test_the_first_provider_call_never_imports_aiohttp_on_the_event_loop(tmp_path):
    """aiohttp takes 0.1-0.5 s to import: a service loads it in a worker thread from start-up,
    so its first provider call does not stop every other job for that long."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "IG_TEST_FIRST_CALL_KEY": "sk-test"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [False]  # imported once, off the event loop's thread
