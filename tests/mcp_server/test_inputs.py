"""Input images: the SSRF-safe https fetch, base64 caps, and the tool-level refusals.

No DNS and no network: a fake resolver stands in for DNS and ``httpx.MockTransport`` serves
the hops that pass the checks.
"""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest
from mcp import Client

from core import InvalidRequestError
from mcp_server.inputs import (
    PinnedTransport,
    UrlFetcher,
    decode_base64,
    decode_data_uri,
    is_public,
    literal_ip,
)
from mcp_server.server import build_server

from .conftest import png

PUBLIC = "93.184.216.34"
DNS = {
    "images.example": [PUBLIC],
    "internal.example": ["10.0.0.5"],
    "mixed.example": [PUBLIC, "192.168.0.10"],
    "v6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "loop.example": ["::1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError("no such host")
    return DNS[host]


class Recorder:
    """A transport factory over MockTransport that records every pinned hop."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.pins: list[dict[str, list[str]]] = []
        self.requests: list[str] = []

    def __call__(self, pins: dict[str, list[str]]) -> httpx.AsyncBaseTransport:
        self.pins.append(pins)

        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(str(request.url))
            return self.routes.get(str(request.url), httpx.Response(404))

        return httpx.MockTransport(handle)


def fetcher(routes: dict[str, httpx.Response] | None = None) -> tuple[UrlFetcher, Recorder]:
    recorder = Recorder(routes or {})
    return UrlFetcher(resolver=fake_resolver, transport_factory=recorder), recorder


def redirect(location: str) -> httpx.Response:
    return httpx.Response(302, headers={"Location": location})


REFUSED = [
    "https://127.0.0.1/x.png",
    "https://10.1.2.3/x.png",
    "https://172.16.0.1/x.png",
    "https://172.31.255.254/x.png",
    "https://192.168.1.1/x.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/x.png",
    "https://0.0.0.0/x.png",
    "https://224.0.0.1/x.png",
    "https://[::1]/x.png",
    "https://[fc00::1]/x.png",
    "https://[fd00:ec2::254]/x.png",
    "https://[fe80::1]/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "https://[::ffff:a9fe:a9fe]/x.png",
    "https://[64:ff9b::a00:1]/x.png",
    "https://[2002:a00:1::1]/x.png",
    "https://[::7f00:1]/x.png",
    "https://2130706433/x.png",
    "https://0177.0.0.1/x.png",
    "https://0x7f.0.0.1/x.png",
    "https://0x7f000001/x.png",
    "https://127.1/x.png",
    "https://017700000001/x.png",
    "https://internal.example/x.png",
    "https://mixed.example/x.png",
    "https://mapped.example/x.png",
    "https://loop.example/x.png",
    "https://nowhere.example/x.png",
    "http://images.example/x.png",
    "ftp://images.example/x.png",
    "file:///etc/passwd",
    "https://user:pw@images.example/x.png",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_private_local_and_non_https_urls_are_refused_before_any_request(url):
    fetch, recorder = fetcher()
    with pytest.raises(InvalidRequestError):
        await fetch.fetch(url, max_bytes=1_000_000)
    assert recorder.requests == []


@pytest.mark.parametrize(
    "location",
    [
        "https://127.0.0.1/x.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://internal.example/x.png",
        "https://[::ffff:10.0.0.1]/x.png",
        "https://2130706433/",
        "http://images.example/y.png",
        "file:///etc/passwd",
    ],
)
async def test_redirects_to_private_addresses_or_other_schemes_are_refused(location):
    fetch, recorder = fetcher({"https://images.example/x.png": redirect(location)})
    with pytest.raises(InvalidRequestError):
        await fetch.fetch("https://images.example/x.png", max_bytes=1_000_000)
    assert recorder.requests == ["https://images.example/x.png"]


async def test_public_url_is_fetched_from_the_checked_addresses_following_redirects():
    body = png()
    fetch, recorder = fetcher(
        {
            "https://images.example/a.png": redirect("/b.png"),
            "https://images.example/b.png": redirect("https://v6.example/c.png"),
            "https://v6.example/c.png": httpx.Response(200, content=body),
        }
    )
    assert await fetch.fetch("https://images.example/a.png", max_bytes=1_000_000) == body
    assert recorder.pins == [
        {"images.example": [PUBLIC]},
        {"images.example": [PUBLIC]},
        {"v6.example": DNS["v6.example"]},
    ]


async def test_redirect_loops_stop():
    fetch, _ = fetcher({"https://images.example/a.png": redirect("/a.png")})
    with pytest.raises(InvalidRequestError, match="redirected more than"):
        await fetch.fetch("https://images.example/a.png", max_bytes=1_000_000)


async def test_size_is_capped_by_header_and_while_streaming():
    big = b"x" * 5000

    async def stream():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    fetch, _ = fetcher(
        {
            "https://images.example/declared.png": httpx.Response(
                200, headers={"Content-Length": "5000"}, content=big
            ),
            "https://images.example/streamed.png": httpx.Response(200, content=stream()),
            "https://images.example/missing.png": httpx.Response(404),
        }
    )
    for name in ("declared", "streamed"):
        with pytest.raises(InvalidRequestError, match="limit"):
            await fetch.fetch(f"https://images.example/{name}.png", max_bytes=4000)
    with pytest.raises(InvalidRequestError, match="HTTP 404"):
        await fetch.fetch("https://images.example/missing.png", max_bytes=4000)


def test_literal_ip_understands_legacy_ipv4_spellings():
    loopback = ipaddress.ip_address("127.0.0.1")
    for spelling in ("2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "0x7f000001"):
        assert literal_ip(spelling) == loopback, spelling
    assert literal_ip("[::1]") == ipaddress.ip_address("::1")
    assert literal_ip("images.example") is None and literal_ip("cafe") is None
    assert is_public(ipaddress.ip_address(PUBLIC))
    assert not is_public(ipaddress.ip_address("::ffff:192.168.0.1"))


async def test_pinned_transport_connects_only_to_the_pinned_address():
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = PinnedTransport({"pinned.test": ["127.0.0.1"]})
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"http://pinned.test:{port}/x")
            assert response.text == "ok"
            assert b"Host: pinned.test" in seen[0]
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://other.test:{port}/x")
    finally:
        server.close()
        await server.wait_closed()


def test_base64_is_capped_before_decoding_and_must_be_valid():
    data = png()
    import base64

    text = base64.b64encode(data).decode()
    assert decode_base64(text, max_bytes=10_000) == data
    assert (
        decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("="), max_bytes=10_000) == data
    )
    assert decode_data_uri("data:image/png;base64," + text, max_bytes=10_000) == data
    with pytest.raises(InvalidRequestError, match="limit"):
        decode_base64("A" * 20_000, max_bytes=10_000)
    with pytest.raises(InvalidRequestError, match="base64"):
        decode_base64("%%%%", max_bytes=10_000)
    with pytest.raises(InvalidRequestError, match="must be base64"):
        decode_data_uri("data:image/png," + text, max_bytes=10_000)


async def test_tools_refuse_private_urls_and_fetch_public_ones(service):
    fetch, recorder = fetcher(
        {
            "https://images.example/cat.png": httpx.Response(200, content=png((80, 80))),
            "https://images.example/hop.png": redirect("https://169.254.169.254/"),
        }
    )
    async with Client(build_server(service, fetcher=fetch)) as client:
        for url in (
            "https://internal.example/a.png",
            "https://images.example/hop.png",
            "https://[::ffff:7f00:1]/",
        ):
            result = await client.call_tool("upscale_image", {"image": url})
            assert result.is_error
            assert result.structured_content["error"]["code"] == "invalid_input"
        ok = await client.call_tool("upscale_image", {"image": "https://images.example/cat.png"})
        assert not ok.is_error, ok.content
        assert ok.structured_content["images"][0]["width"] == 160
        quota = (await client.call_tool("get_quota", {})).structured_content
    assert quota["remaining"] == 9
