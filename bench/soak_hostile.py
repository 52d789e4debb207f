"""Hostile input: every case must be refused with a typed error and cost nothing.

Categories:

- ``ssrf-*``: image URLs aimed at loopback, private, link-local and metadata addresses, in
  every spelling (decimal, octal, hex, IPv4-mapped and NAT64 IPv6, ...), host names that
  resolve to them, redirects to any of them, and non-https schemes. They go through the MCP
  server's public ``mcp_server.inputs.resolve_image`` with a fake resolver (no DNS) and a
  transport factory that records every connection it is asked to pin: a case passes only if
  it is refused *and* no non-public address was ever pinned. Positive controls (a public URL,
  a public redirect) must be accepted, so the harness cannot pass by refusing everything.
- ``image-*``: decompression bombs, absurd dimensions, wrong MIME types, damaged files.
- ``request-*``: absurd sizes, counts and numbers, huge prompts, control characters.
- ``mask-*``: masks of the wrong size or marking nothing.
- ``path-*``: path traversal in image URIs and ids.
- ``other-user-*``: another user's images and jobs.
- ``callback-*``: callbacks with a wrong, forged or reused token.

Each case runs against ``HostileContext`` (an ``ImageService`` on the placeholder provider);
``run_case`` records the error, the credits and the holds before and after. A case is refused
cleanly when it raised the expected ``ImageGateError`` subclass, no credit moved and no hold
was even taken (bad input is refused before any reservation).
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import struct
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from core import (
    Caller,
    ImageGateError,
    ImageRequest,
    ImageService,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    parse_settings,
    parse_size,
)
from core.callbacks import CallbackHub

PUBLIC_IP = "93.184.216.34"
DNS: dict[str, list[str]] = {
    "public.example": [PUBLIC_IP],
    "internal.example": ["10.1.2.3"],
    "corp.example": ["172.20.0.5"],
    "home.example": ["192.168.0.10"],
    "mixed.example": [PUBLIC_IP, "127.0.0.1"],
    "metadata.google.internal": ["169.254.169.254"],
    "v6-loopback.example": ["::1"],
    "ula.example": ["fd00::1"],
    "mapped.example": ["::ffff:192.168.1.1"],
    "localtest.me": ["127.0.0.1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "cgnat.example": ["100.64.0.1"],
    "zero.example": ["0.0.0.0"],
    "linklocal6.example": ["fe80::1"],
    "localhost": ["127.0.0.1", "::1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    """DNS for the cases: unknown names do not resolve."""
    name = host.lower().rstrip(".")
    if name not in DNS:
        raise OSError(f"{host}: no such host")
    return DNS[name]


def _png(size: tuple[int, int] = (64, 64), colour: Any = (40, 90, 200), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


class GuardedTransports:
    """The fetcher's transport factory: answers from a script and records every pin."""

    def __init__(self) -> None:
        self.pins: list[dict[str, list[str]]] = []
        self.violations: list[str] = []
        self.png = _png()

    def __call__(self, pins: dict[str, list[str]]) -> httpx.AsyncBaseTransport:
        self.pins.append(pins)
        for host, ips in pins.items():
            for ip in ips:
                if not _public(ip):
                    self.violations.append(f"pinned {host} -> {ip}")
        return httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        target = request.url.params.get("to", "")
        if path == "/ok.png":
            return httpx.Response(200, content=self.png, headers={"content-type": "image/png"})
        if path == "/r":
            return httpx.Response(302, headers={"location": target})
        if path == "/chain":
            hop = "https://public.example/r?to=" + urllib.parse.quote(target, safe="")
            return httpx.Response(301, headers={"location": hop})
        return httpx.Response(404)


def _public(ip: str) -> bool:
    from mcp_server.inputs import is_public

    return is_public(ipaddress.ip_address(ip.split("%")[0]))


# --- the cases ----------------------------------------------------------------------------

LITERAL_TARGETS = [
    "https://127.0.0.1/x.png",
    "https://127.1/x.png",
    "https://127.000.000.001/x.png",
    "https://2130706433/x.png",
    "https://017700000001/x.png",
    "https://0177.0.0.1/x.png",
    "https://0x7f.0.0.1/x.png",
    "https://0x7f000001/x.png",
    "https://0/x.png",
    "https://0.0.0.0/x.png",
    "https://10.0.0.1/x.png",
    "https://10.255.255.254/x.png",
    "https://012.0.0.1/x.png",
    "https://167772161/x.png",
    "https://172.16.0.1/x.png",
    "https://172.31.255.254/x.png",
    "https://0xac100001/x.png",
    "https://192.168.0.1/x.png",
    "https://192.168.255.254/x.png",
    "https://3232235521/x.png",
    "https://0300.0250.0.1/x.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://2852039166/latest/meta-data/",
    "https://0xa9fea9fe/latest/meta-data/",
    "https://100.100.100.200/latest/meta-data/",
    "https://100.64.0.1/x.png",
    "https://224.0.0.1/x.png",
    "https://255.255.255.255/x.png",
    "https://198.18.0.1/x.png",
    "https://[::1]/x.png",
    "https://[0:0:0:0:0:0:0:1]/x.png",
    "https://[::]/x.png",
    "https://[fc00::1]/x.png",
    "https://[fd12:3456:789a::1]/x.png",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://[fe80::1]/x.png",
    "https://[fec0::1]/x.png",
    "https://[ff02::1]/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "https://[::ffff:7f00:1]/x.png",
    "https://[::ffff:10.0.0.1]/x.png",
    "https://[::ffff:172.16.0.1]/x.png",
    "https://[::ffff:192.168.1.1]/x.png",
    "https://[::ffff:169.254.169.254]/x.png",
    "https://[0:0:0:0:0:ffff:c0a8:0101]/x.png",
    "https://[::127.0.0.1]/x.png",
    "https://[64:ff9b::a9fe:a9fe]/x.png",
    "https://[2002:7f00:1::]/x.png",
    "https://[2002:c0a8:101::1]/x.png",
]
NAME_TARGETS = [
    "https://localhost/x.png",
    "https://LOCALHOST/x.png",
    "https://localhost./x.png",
    "https://internal.example/x.png",
    "https://corp.example/x.png",
    "https://home.example/x.png",
    "https://mixed.example/x.png",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://v6-loopback.example/x.png",
    "https://ula.example/x.png",
    "https://mapped.example/x.png",
    "https://localtest.me/x.png",
    "https://127.0.0.1.nip.io/x.png",
    "https://cgnat.example/x.png",
    "https://zero.example/x.png",
    "https://linklocal6.example/x.png",
    "https://unresolvable.example/x.png",
]
SCHEME_TARGETS = [
    "http://public.example/ok.png",
    "http://127.0.0.1/x.png",
    "ftp://public.example/ok.png",
    "file:///etc/passwd",
    "file://localhost/etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stats",
    "ws://127.0.0.1/",
    "javascript:alert(1)",
    "https://user:password@public.example/ok.png",
    "https://public.example@127.0.0.1/x.png",
    "https://[::1/x.png",
    "https:///x.png",
]
REDIRECT_TARGETS = [
    "https://127.0.0.1/x.png",
    "https://2130706433/x.png",
    "https://0177.0.0.1/x.png",
    "https://10.0.0.1/x.png",
    "https://172.16.0.1/x.png",
    "https://192.168.0.1/x.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/x.png",
    "https://[fc00::1]/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "https://internal.example/x.png",
    "https://mixed.example/x.png",
    "https://localhost/x.png",
    "http://public.example/ok.png",
    "file:///etc/passwd",
    "//10.0.0.1/x.png",
]
CONTROLS = [
    "https://public.example/ok.png",
    "https://public.example/r?to=" + urllib.parse.quote("https://public.example/ok.png", safe=""),
]

Run = Callable[["HostileContext"], Awaitable[Any]]


@dataclass(frozen=True)
class HostileCase:
    id: str
    category: str
    run: Run
    refusal: tuple[type[ImageGateError], ...] = (InvalidRequestError,)
    ssrf: bool = False


def _redirect(target: str, chain: bool) -> str:
    return f"https://public.example/{'chain' if chain else 'r'}?to=" + urllib.parse.quote(
        target, safe=""
    )


def _resolve(value: str, what: str = "image") -> Run:
    async def run(ctx: HostileContext) -> Any:
        from mcp_server.inputs import resolve_image

        return await resolve_image(ctx.service, ctx.attacker, value, ctx.fetcher, what=what)

    return run


def _load(data: bytes | Callable[[], bytes]) -> Run:
    """Upload ``data`` and edit it: ``load_input`` reads only the header, the job decodes the
    rest (before it reserves anything)."""

    async def run(ctx: HostileContext) -> Any:
        image = await ctx.service.load_input(data() if callable(data) else data)
        request = ImageRequest(operation="variation", image=image)
        return await ctx.service.edit(ctx.attacker, request)

    return run


def _request(**fields: Any) -> Run:
    async def run(ctx: HostileContext) -> Any:
        request = ImageRequest.checked(**fields)  # raises for every case below
        return await ctx.service.generate(ctx.attacker, request)

    return run


def ssrf_cases() -> list[HostileCase]:
    out = []
    for url in LITERAL_TARGETS:
        out.append(HostileCase(f"ssrf-literal {url}", "ssrf-literal", _resolve(url), ssrf=True))
    for url in NAME_TARGETS:
        out.append(HostileCase(f"ssrf-name {url}", "ssrf-name", _resolve(url), ssrf=True))
    for url in SCHEME_TARGETS:
        out.append(HostileCase(f"ssrf-scheme {url}", "ssrf-scheme", _resolve(url), ssrf=True))
    for url in REDIRECT_TARGETS:
        for chain in (False, True):
            name = f"ssrf-redirect{'-chain' if chain else ''} {url}"
            out.append(
                HostileCase(name, "ssrf-redirect", _resolve(_redirect(url, chain)), ssrf=True)
            )
    mask = _resolve("https://[::1]/m.png", "mask")
    out.append(HostileCase("ssrf-mask https://[::1]/m.png", "ssrf-literal", mask, ssrf=True))
    return out


# --- image bytes ------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the rest is "missing"
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def png_zlib_bomb(side: int = 3000) -> bytes:
    """A real, complete PNG of ``side``^2 black pixels: kilobytes that inflate to megabytes."""
    raw = (b"\x00" + b"\x00" * side) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )  # fmt: skip


def png_text_bomb() -> bytes:
    """A 16x16 PNG with a zTXt chunk that inflates to 32 MB."""
    png = _png((16, 16))
    ztxt = b"Comment\x00\x00" + zlib.compress(b"A" * 32_000_000, 9)
    return png[:-12] + _chunk(b"zTXt", ztxt) + png[-12:]


def gif_header_bomb() -> bytes:
    """A GIF whose logical screen is 65535 x 65535."""
    return (
        b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
        + b",\x00\x00\x00\x00" + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02D\x01\x00;"
    )  # fmt: skip


def _jpeg_header_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def _bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="BMP")
    return buf.getvalue()


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    return buf.getvalue()


WRONG_TYPES: dict[str, bytes | Callable[[], bytes]] = {
    "html": b"<!doctype html><html><script>alert(1)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF",
    "zip": b"PK\x03\x04" + b"\x00" * 26,
    "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
    "text": b"just some words",
    "empty": b"",
    "one-byte": b"\x89",
    "bmp": _bmp,
    "tiff": _tiff,
    "png-signature-then-junk": b"\x89PNG\r\n\x1a\n" + b"junk" * 64,
    "jpeg-marker-then-junk": b"\xff\xd8\xff\xe0" + b"junk" * 64,
    "gif-header-then-junk": b"GIF89a" + b"junk" * 64,
    "webp-header-then-junk": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"junk" * 8,
    "png-truncated": lambda: _png((200, 200), (10, 200, 30))[:100],
    "junk-then-png": lambda: b"junk" + _png(),
    "html-with-png-extension-data-uri": b"<html></html>",
}


def image_cases() -> list[HostileCase]:
    out = [
        HostileCase("image-png-header-bomb 100000x100000", "image-bomb", _load(png_header_bomb)),
        HostileCase("image-png-zlib-bomb 3000x3000", "image-bomb", _load(png_zlib_bomb)),
        HostileCase("image-png-ztxt-bomb 32 MB", "image-bomb", _load(png_text_bomb)),
        HostileCase("image-gif-header-bomb 65535x65535", "image-bomb", _load(gif_header_bomb)),
        HostileCase("image-jpeg-header-bomb 65000x65000", "image-bomb", _load(_jpeg_header_bomb)),
        HostileCase(
            "image-bomb-as-base64",
            "image-bomb",
            _resolve(base64.b64encode(png_header_bomb()).decode()),
        ),
        HostileCase(
            "image-bomb-as-data-uri",
            "image-bomb",
            _resolve("data:image/png;base64," + base64.b64encode(png_header_bomb()).decode()),
        ),
        HostileCase("image-over-max-bytes", "image-size", _load(lambda: b"\x89PNG" * 600_000)),
        HostileCase("image-base64-over-cap", "image-size", _resolve("A" * 3_000_000)),
        HostileCase("image-base64-not-base64", "image-type", _resolve("not*base64!")),
        HostileCase("image-data-uri-not-base64", "image-type", _resolve("data:image/png,%89PNG")),
    ]  # fmt: skip
    for name, data in WRONG_TYPES.items():
        out.append(HostileCase(f"image-type {name}", "image-type", _load(data)))
        if name == "html-with-png-extension-data-uri":
            uri = "data:image/png;base64," + base64.b64encode(data).decode()  # type: ignore[arg-type]
            out.append(HostileCase(f"image-type {name} (as URI)", "image-type", _resolve(uri)))
    return out


def request_cases() -> list[HostileCase]:
    bad: dict[str, dict[str, Any]] = {
        "size 0x0": {"size": (0, 0)},
        "size 100000x100000": {"size": (100_000, 100_000)},
        "size 64x1000000000": {"size": (64, 10**9)},
        "size -64x64": {"size": (-64, 64)},
        "aspect 1000:1": {"aspect_ratio": "1000:1"},
        "aspect 0:1": {"aspect_ratio": "0:1"},
        "aspect -16:9": {"aspect_ratio": "-16:9"},
        "aspect 16:9:1": {"aspect_ratio": "16:9:1"},
        "aspect superscript": {"aspect_ratio": "\u00b2:1"},
        "size and aspect": {"size": (64, 64), "aspect_ratio": "1:1"},
        "n 0": {"n": 0},
        "n 11": {"n": 11},
        "n 10^12": {"n": 10**12},
        "n -1": {"n": -1},
        "seed -1": {"seed": -1},
        "seed 2^40": {"seed": 2**40},
        "steps 10^6": {"steps": 10**6},
        "guidance nan": {"guidance": float("nan")},
        "guidance inf": {"guidance": float("inf")},
        "strength 1.5": {"strength": 1.5},
        "scale 100": {"scale": 100},
        "prompt 4001 chars": {"prompt": "x" * 4001},
        "prompt 10 MB": {"prompt": "x" * 10_000_000},
        "prompt only control characters": {"prompt": "\x00\x1b\x07\x7f\u202e\u200b\u2066"},
        "negative prompt 10 MB": {"negative_prompt": "x" * 10_000_000},
        "unknown operation": {"operation": "rm -rf"},
        "unknown field": {"shell": "rm -rf /"},
        "provider options not an object": {"provider_options": {"placeholder": "x"}},
        "unknown model": {"model": "../../etc/passwd"},
    }
    out = []
    for name, fields in bad.items():
        fields = {"prompt": "a cat", **fields}
        out.append(HostileCase(f"request-{name}", "request", _request(**fields)))
    for text in ("\u00b2x\u00b2", "99999x99999", "1e3x5", "-5x5", "0x0", "64x64x64", "64 x 64"):

        async def sized(ctx: HostileContext, text: str = text) -> Any:
            return await _request(prompt="a cat", size=parse_size(text))(ctx)

        out.append(HostileCase(f"request-size text {text!r}", "request", sized))
    return out


def mask_cases() -> list[HostileCase]:
    async def wrong_size(ctx: HostileContext) -> Any:
        image = await ctx.service.load_input(_png((64, 64)))
        mask = await ctx.service.load_input(_png((32, 32), 255, "L"), what="mask")
        request = ImageRequest(operation="inpaint", prompt="hat", image=image, mask=mask)
        return await ctx.service.edit(ctx.attacker, request)

    async def blank(ctx: HostileContext) -> Any:
        image = await ctx.service.load_input(_png((64, 64)))
        mask = await ctx.service.load_input(_png((64, 64), 0, "L"), what="mask")
        request = ImageRequest(operation="inpaint", prompt="hat", image=image, mask=mask)
        return await ctx.service.edit(ctx.attacker, request)

    async def wrong_size_by_uri(ctx: HostileContext) -> Any:
        image = "data:image/png;base64," + base64.b64encode(_png((64, 64))).decode()
        mask = "data:image/png;base64," + base64.b64encode(_png((65, 64), 255, "L")).decode()
        from mcp_server.inputs import resolve_image

        source = await resolve_image(ctx.service, ctx.attacker, image, ctx.fetcher)
        matte = await resolve_image(ctx.service, ctx.attacker, mask, ctx.fetcher, what="mask")
        request = ImageRequest(operation="inpaint", prompt="hat", image=source, mask=matte)
        return await ctx.service.edit(ctx.attacker, request)

    return [
        HostileCase("mask-wrong-size", "mask", wrong_size),
        HostileCase("mask-wrong-size (data URIs)", "mask", wrong_size_by_uri),
        HostileCase("mask-marks-nothing", "mask", blank),
    ]


TRAVERSALS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "a/b",
    "./x",
    "..\\..\\windows\\win.ini",
    "%00",
    "x\x00.png",
    "",
    "a" * 65,
    "abc?path=../../etc/passwd",
    "abc#../..",
]


def path_cases() -> list[HostileCase]:
    out = []
    for text in TRAVERSALS:
        out.append(
            HostileCase(
                f"path-uri imagegate://images/{text!r}",
                "path",
                _resolve(f"imagegate://images/{text}"),
                refusal=(NotFoundError, InvalidRequestError),
            )
        )

        async def by_id(ctx: HostileContext, text: str = text) -> Any:
            return await ctx.service.image(ctx.attacker, text)

        async def job_by_id(ctx: HostileContext, text: str = text) -> Any:
            return await ctx.service.job(ctx.attacker, text)

        out.append(HostileCase(f"path-image-id {text!r}", "path", by_id, (NotFoundError,)))
        out.append(HostileCase(f"path-job-id {text!r}", "path", job_by_id, (NotFoundError,)))
    for value in (
        "IMAGEGATE://images/../x",
        "imagegate://images/../../../../etc/passwd",
        "imagegate://jobs/../images/x",
        "/etc/passwd",
        "../../etc/passwd",
        "C:\\Windows\\win.ini",
        "\\\\server\\share\\x.png",
    ):
        out.append(
            HostileCase(
                f"path-value {value!r}",
                "path",
                _resolve(value),
                refusal=(NotFoundError, InvalidRequestError),
            )
        )
    return out


def other_user_cases() -> list[HostileCase]:
    async def uri(ctx: HostileContext) -> Any:
        return await _resolve(f"imagegate://images/{ctx.victim_image}")(ctx)

    async def image(ctx: HostileContext) -> Any:
        return await ctx.service.image(ctx.attacker, ctx.victim_image)

    async def job(ctx: HostileContext) -> Any:
        return await ctx.service.job(ctx.attacker, ctx.victim_job)

    async def reroll(ctx: HostileContext) -> Any:
        return await ctx.service.rerun(ctx.attacker, ctx.victim_job)

    async def history(ctx: HostileContext) -> Any:
        return await ctx.service.history(ctx.attacker, ctx.victim)

    async def grant(ctx: HostileContext) -> Any:
        return await ctx.service.grant(ctx.attacker, ctx.attacker, 1000)

    return [
        HostileCase("other-user-image-uri", "other-user", uri, (NotFoundError,)),
        HostileCase("other-user-image", "other-user", image, (NotFoundError,)),
        HostileCase("other-user-job", "other-user", job, (NotFoundError,)),
        HostileCase("other-user-reroll", "other-user", reroll, (NotFoundError,)),
        HostileCase("other-user-history", "other-user", history, (PermissionDeniedError,)),
        HostileCase("self-grant-without-admin", "other-user", grant, (PermissionDeniedError,)),
    ]


class CallbackRefused(InvalidRequestError):
    """Raised by the callback cases when the receiver refused or ignored the POST (as it must)."""


def callback_cases() -> list[HostileCase]:
    async def post(hub: CallbackHub, token: str, body: bytes) -> int:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            response = await client.post(f"{hub.path}/{token}", content=body)
        return response.status_code

    def expecting(make: Callable[[CallbackHub, Any], Awaitable[tuple[int, bool]]]) -> Run:
        async def run(ctx: HostileContext) -> Any:
            hub = CallbackHub("http://127.0.0.1:9")
            waiter = hub.expect()
            status, resolved = await make(hub, waiter)
            waiter.close()
            if status in (200, 400, 404) and not resolved:
                raise CallbackRefused(f"refused with HTTP {status}")
            return f"accepted with HTTP {status}, resolved={resolved}"

        return run

    async def wrong(hub: CallbackHub, waiter: Any) -> tuple[int, bool]:
        status = await post(hub, "x" * 32, b'{"images": []}')
        return status, waiter.future.done()

    async def traversal(hub: CallbackHub, waiter: Any) -> tuple[int, bool]:
        status = await post(hub, f"..%2F{waiter.token}", b"{}")
        return status, waiter.future.done()

    async def reused(hub: CallbackHub, waiter: Any) -> tuple[int, bool]:
        assert await post(hub, waiter.token, b'{"first": true}') == 200
        first = waiter.future.result()
        status = await post(hub, waiter.token, b'{"forged": true}')
        return status, waiter.future.result() != first

    async def after_close(hub: CallbackHub, waiter: Any) -> tuple[int, bool]:
        waiter.close()
        status = await post(hub, waiter.token, b'{"late": true}')
        return status, waiter.future.done()

    async def not_json(hub: CallbackHub, waiter: Any) -> tuple[int, bool]:
        status = await post(hub, waiter.token, b"<xml/>")
        return status, waiter.future.done()

    return [
        HostileCase("callback-wrong-token", "callback", expecting(wrong)),
        HostileCase("callback-token-traversal", "callback", expecting(traversal)),
        HostileCase("callback-reused-token", "callback", expecting(reused)),
        HostileCase("callback-after-the-job-ended", "callback", expecting(after_close)),
        HostileCase("callback-not-json", "callback", expecting(not_json)),
    ]


def all_cases() -> list[HostileCase]:
    return [
        *ssrf_cases(),
        *image_cases(),
        *request_cases(),
        *mask_cases(),
        *path_cases(),
        *other_user_cases(),
        *callback_cases(),
    ]


# --- running them -----------------------------------------------------------------------------


@dataclass
class HostileContext:
    service: ImageService
    attacker: Caller
    victim: Caller
    victim_image: str
    victim_job: str
    transports: GuardedTransports
    fetcher: Any


@contextlib.asynccontextmanager
async def hostile_context(tmp: Path) -> AsyncIterator[HostileContext]:
    """A service on the placeholder provider with a victim who owns one image."""
    from mcp_server.inputs import UrlFetcher

    settings = parse_settings(
        {
            "database": {"path": str(tmp / "hostile.db")},
            "images": {"dir": str(tmp / "images"), "max_pixels": 1_000_000,
                       "max_input_bytes": 2_000_000},
            "mcp": {"max_input_bytes": 2_000_000},
            "quota": {"allowance": 20},
        }
    )  # fmt: skip
    service = await ImageService.open(settings, sweeper=False)
    try:
        victim = Caller(frontend="mcp", user_id="victim")
        made = await service.generate(victim, ImageRequest(prompt="mine", size=(64, 64)))
        transports = GuardedTransports()
        fetcher = UrlFetcher(resolver=fake_resolver, transport_factory=transports, timeout_s=5)
        yield HostileContext(
            service,
            Caller(frontend="mcp", user_id="attacker"),
            victim,
            made.images[0].id,
            made.job_id,
            transports,
            fetcher,
        )
    finally:
        await service.aclose()


@dataclass
class CaseResult:
    case: HostileCase
    error: BaseException | None = None
    credits_moved: int = 0
    holds_taken: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def refused(self) -> bool:
        """Refused with the expected typed error, nothing spent, nothing reserved, no leak."""
        return (
            isinstance(self.error, self.case.refusal)
            and not self.credits_moved
            and not self.holds_taken
            and not self.violations
        )

    def describe(self) -> str:
        error = f"{type(self.error).__name__}: {self.error}" if self.error else "no error"
        return (
            f"{self.case.id}: {error}; credits moved {self.credits_moved}, holds taken"
            f" {self.holds_taken}, violations {self.violations}"
        )


async def _snapshot(ctx: HostileContext) -> tuple[int, int, int]:
    status = await ctx.service.quota(ctx.attacker)
    victim = await ctx.service.quota(ctx.victim)
    holds = await ctx.service.db.fetchone("SELECT count(*) FROM hold")
    return status.remaining + status.held, victim.remaining + victim.held, holds[0]


async def run_case(ctx: HostileContext, case: HostileCase) -> CaseResult:
    result = CaseResult(case)
    before = await _snapshot(ctx)
    pins = len(ctx.transports.violations)
    started = time.monotonic()
    try:
        await case.run(ctx)
    except Exception as exc:  # any type: the result says whether it was the right one
        result.error = exc
    result.seconds = time.monotonic() - started
    after = await _snapshot(ctx)
    result.credits_moved = abs(after[0] - before[0]) + abs(after[1] - before[1])
    result.holds_taken = after[2] - before[2]
    result.violations = ctx.transports.violations[pins:]
    return result


async def run_controls(ctx: HostileContext) -> list[str]:
    """The positive controls; returns the problems (empty: every control was accepted)."""
    from mcp_server.inputs import resolve_image

    problems = []
    for url in CONTROLS:
        try:
            await resolve_image(ctx.service, ctx.attacker, url, ctx.fetcher)
        except Exception as exc:
            problems.append(f"control {url} was refused: {type(exc).__name__}: {exc}")
    try:
        await resolve_image(
            ctx.service, ctx.victim, f"imagegate://images/{ctx.victim_image}", ctx.fetcher
        )
    except Exception as exc:  # the owner can use their own image
        problems.append(f"the owner could not use their image: {exc}")
    return problems  # fmt: skip


async def run_all(tmp: Path) -> dict[str, Any]:
    """Every case and control; the figures for the soak report."""
    cases = all_cases()
    results: list[CaseResult] = []
    async with hostile_context(tmp) as ctx:
        controls = await run_controls(ctx)
        for case in cases:
            results.append(await run_case(ctx, case))
    ssrf = [r for r in results if r.case.ssrf]
    failed = [r.describe() for r in results if not r.refused]
    return {
        "ssrf_cases": len(ssrf),
        "ssrf_refused": sum(r.refused for r in ssrf),
        "hostile_cases": len(results),
        "hostile_refused": sum(r.refused for r in results),
        "hostile_controls_failed": len(controls),
        "hostile_failures": (controls + failed)[:20],
    }
