"""Image work never stalls other users: a caller who cannot pay is refused before any pixel of
their upload is decoded, and the decoding and re-encoding an edit needs (the full check of
each upload, OpenAI's RGBA image and transparent mask) runs off the event loop.

Decodes are observed on Pillow itself (``ImageFile.load``, where every pixel decode happens),
so the real code path runs unchanged.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp import Client
from PIL import Image, ImageFile

from core import ImageService
from mcp_server.server import build_server
from tests.emulators import create_emulator, running

from .conftest import make_settings


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, tuple[int, int]]]:
    """Every pixel decode in this process from now on: (thread id, image size)."""
    seen: list[tuple[int, tuple[int, int]]] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        seen.append((threading.get_ident(), self.size))
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def encoded(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def half_mask(size: tuple[int, int]) -> str:
    """White (repaint) on the left half."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return encoded(mask, "PNG")


@pytest.fixture
async def openai(tmp_path, monkeypatch) -> AsyncIterator[Any]:
    """``await openai(allowance)``: an MCP client over a service whose only model is OpenAI's
    gpt-image-1, served by the emulator in its own thread (its decodes are not ours)."""
    emu = create_emulator("openai")
    monkeypatch.setenv("IG_WORK_OPENAI_KEY", emu.api_key)
    async with running(emu) as url, httpx.AsyncClient() as http:
        services: list[ImageService] = []

        async def open_client(allowance: int) -> Any:
            settings = make_settings(
                tmp_path,
                providers={"openai": {"kind": "openai", "base_url": url + emu.base_path,
                                      "api_key_env": "IG_WORK_OPENAI_KEY",
                                      "models": ["gpt-image-1"]}},
                quota={"allowance": allowance},
            )  # fmt: skip
            service = await ImageService.open(settings, http=http, sweeper=False)
            services.append(service)
            return Client(build_server(service))

        yield open_client, emu
        for service in services:
            await service.aclose()


async def test_a_caller_who_cannot_pay_is_refused_before_any_decode(openai, decodes):
    open_client, emu = openai
    big = encoded(Image.new("RGB", (4000, 4000), (200, 40, 40)), "JPEG")
    async with await open_client(allowance=0) as client:
        decodes.clear()
        result = await client.call_tool(
            "edit_image",
            {"image": big, "mask": half_mask((4000, 4000)), "mode": "inpaint", "prompt": "a boat"},
        )
    assert result.is_error and result.structured_content["error"]["code"] == "quota_exceeded"
    assert not [size for _, size in decodes if size == (4000, 4000)]
    assert not [r for r in emu.requests if r.path.endswith("/images/edits")]


async def test_an_edit_decodes_and_reencodes_off_the_event_loop(openai, decodes):
    open_client, emu = openai
    image = Image.linear_gradient("L").resize((1536, 1024)).convert("RGB")
    async with await open_client(allowance=10) as client:
        decodes.clear()
        result = await client.call_tool(
            "edit_image",
            {"image": encoded(image, "PNG"), "mask": half_mask(image.size), "mode": "inpaint",
             "prompt": "a boat", "return_image": "none"},
        )  # fmt: skip
    assert not result.is_error, result.content
    assert result.structured_content["credits_remaining"] == 9
    ours = [thread for thread, size in decodes if size == (1536, 1024)]
    # The full check of the image and the mask, the image as RGBA, the mask normalised.
    assert len(ours) >= 4
    assert threading.get_ident() not in {thread for thread, _ in decodes}
    sent = [r for r in emu.requests if r.path.endswith("/images/edits")]
    assert len(sent) == 1 and {u.name for u in sent[0].uploads} == {"image", "mask"}
