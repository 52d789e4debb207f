"""Provider test harness: an ``ImageService`` wired to one emulator, in process.

The emulator app is reached through ``httpx.ASGITransport`` (no sockets, fast); callback tests
add a real uvicorn server for the ``CallbackHub`` on the test's own event loop, and the CLI
tests run the emulator with ``running()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image

from core import Caller, ImageRequest, ImageResult, ImageService, InputImage, parse_settings
from core.images import load_input
from core.providers import BUILTIN, ImageModel, ProviderContext
from core.settings import ProviderSettings
from tests.emulators import Emulator, Recorded, create_emulator, running


@dataclass(frozen=True)
class Kind:
    """How to test one adapter kind against its emulator."""

    kind: str
    emulator: str
    model: str
    api_path: str  # the path of the call that makes images
    key_attr: str = "api_key"
    emulator_options: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # a size it serves (None: sizes are refused)
    bad_size: tuple[int, int] | None = None  # a size beyond its limits
    image_size: tuple[int, int] = (64, 64)
    provider: dict[str, Any] = field(default_factory=dict)  # more [providers.*] settings
    moderation: bool = True  # the API has a moderation refusal to emulate
    cancel_paths: tuple[str, ...] = ()  # POSTs that stop a remote job (not generation calls)


DM_MODEL = "668f1a2bdb4c27d16052c82b"
WORKFLOWS = Path(__file__).resolve().parents[3] / "docs" / "comfyui"
COMFY_WORKFLOWS = {  # the example workflows the docs ship
    "generate": str(WORKFLOWS / "txt2img.json"),
    "variation": str(WORKFLOWS / "img2img.json"),
    "inpaint": str(WORKFLOWS / "inpaint.json"),
    "upscale": str(WORKFLOWS / "upscale.json"),
}
KINDS: dict[str, Kind] = {
    "deepmode": Kind(
        "deepmode", "deepmode", DM_MODEL, "/api/images/generate", bad_size=(512, 512)
    ),
    "deepimage": Kind(
        "deepimage", "deepimage", "default", "/rest_api/process_result",
        emulator_options={"job_duration_s": 0.01}, size=(128, 192),
    ),
    "hive": Kind(
        "hive", "hive", "hive-v2", "/api/v2/task/sync",
        size=(1024, 1024), bad_size=(512, 512), image_size=(1024, 1024),
    ),
    "hive_v3": Kind(
        "hive_v3", "hive", "black-forest-labs/flux-schnell",
        "/api/v3/black-forest-labs/flux-schnell", key_attr="v3_api_key",
        size=(256, 384), bad_size=(128, 128),
    ),
    "nebulablock": Kind(
        "nebulablock", "nebulablock", "black-forest-labs/FLUX.1-schnell",
        "/api/v1/images/generation", size=(128, 192),
    ),
    "openai": Kind(
        "openai", "openai", "dall-e-2", "/v1/images/generations",
        size=(256, 256), bad_size=(300, 300),
    ),
    "sdwebui": Kind(
        "sdwebui", "sdwebui", "default", "/sdapi/v1/txt2img",
        size=(128, 192), bad_size=(100, 100), moderation=False,
    ),
    "comfyui": Kind(
        "comfyui", "comfyui", "default", "/prompt",
        size=(128, 192), bad_size=(100, 100), moderation=False,
        provider={"workflows": COMFY_WORKFLOWS}, cancel_paths=("/queue", "/interrupt"),
    ),
    "horde": Kind(
        "horde", "horde", "stable_diffusion", "/api/v2/generate/async",
        emulator_options={"job_duration_s": 0.005}, size=(128, 192), bad_size=(100, 100),
    ),
}  # fmt: skip


@dataclass
class Harness:
    """One configured provider (named ``name``) in front of ``emu``."""

    spec: Kind
    name: str
    model: str
    emu: Emulator
    service: ImageService
    caller: Caller = field(default_factory=lambda: Caller.parse("cli:tester"))

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.model}"

    @property
    def key(self) -> str:
        return getattr(self.emu, self.spec.key_attr)

    def calls(self, path: str | None = None) -> list[Recorded]:
        """API requests the emulator received (not image downloads), optionally on ``path``."""
        api = [r for r in self.emu.requests if not r.path.startswith("/_files/")]
        return [r for r in api if path is None or r.path == path]

    def request(self, **fields: Any) -> ImageRequest:
        fields.setdefault("prompt", "a red fox in the snow")
        return ImageRequest(model=self.ref, **fields)

    async def generate(self, **fields: Any) -> ImageResult:
        return await self.service.generate(self.caller, self.request(**fields))

    async def run(self, request: ImageRequest) -> ImageResult:
        """The service method for ``request.operation``."""
        if request.operation == "generate":
            return await self.service.generate(self.caller, request)
        if request.operation == "upscale":
            return await self.service.upscale(self.caller, request)
        return await self.service.edit(self.caller, request)

    async def remaining(self) -> int:
        return (await self.service.quota(self.caller)).remaining

    async def captured(self) -> int:
        """Credits actually charged, from the ledger."""
        entries = await self.service.history(self.caller, self.caller)
        return sum(-e.d_held for e in entries if e.kind == "capture")


@pytest.fixture
async def harness(tmp_path, monkeypatch) -> AsyncIterator[Any]:
    """``await harness(kind, ...)`` opens a service on a fresh emulator of that kind."""
    stack = contextlib.AsyncExitStack()

    async def open_harness(
        kind: str,
        *,
        name: str | None = None,
        model: str | None = None,
        emulator: Emulator | None = None,
        provider: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        key: bool = True,
        callbacks: bool = False,
        real_http: bool = False,
    ) -> Harness:
        spec = KINDS[kind]
        emu = emulator or create_emulator(
            spec.emulator, image_size=spec.image_size, **spec.emulator_options
        )
        name = name or kind
        base_url = f"http://{spec.emulator}.test"
        if real_http:  # a real server (in a thread): needed for timeouts, which ASGI ignores
            base_url = await stack.enter_async_context(running(emu))
        env = f"IG_TEST_{name.upper()}_KEY"
        if key:
            monkeypatch.setenv(env, getattr(emu, spec.key_attr))
        else:
            monkeypatch.delenv(env, raising=False)
        model = model or spec.model
        data: dict[str, Any] = {
            "database": {"path": str(tmp_path / f"{name}.db")},
            "images": {"dir": str(tmp_path / "images")},
            "providers": {
                name: {
                    "kind": kind,
                    "base_url": base_url + emu.base_path,
                    "api_key_env": env,
                    "models": [model],
                    "timeout_s": 5,
                    "poll_interval_s": 0.02,
                    **spec.provider,
                    **(provider or {}),
                }
            },
            "pricing": {"default": 1},
            "quota": {"allowance": 100},
            "defaults": {"job_deadline_s": 10},
        }
        if callbacks:
            data["callbacks"] = {"public_url": "http://127.0.0.1:9"}  # replaced below
        for section, values in (settings or {}).items():
            data.setdefault(section, {}).update(values)
        transport = None if real_http else httpx.ASGITransport(app=emu.app)
        client = httpx.AsyncClient(transport=transport)
        stack.push_async_callback(client.aclose)
        service = await ImageService.open(
            parse_settings(data), http=client, sweeper=False, receive_callbacks=callbacks
        )
        stack.push_async_callback(service.aclose)
        service.orchestrator.base_delay_s = 0.01
        if callbacks:
            assert service.callbacks is not None
            url = await stack.enter_async_context(serve_in_loop(service.callbacks.app))
            service.callbacks.public_url = url
        return Harness(spec, name, model, emu, service)

    yield open_harness
    await stack.aclose()


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on this event loop (the ``CallbackHub`` resolves futures of
    the loop it runs on, so it must share the service's loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def png(size: tuple[int, int] = (64, 64), colour: tuple[int, ...] = (30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB" if len(colour) == 3 else "RGBA", size, colour).save(buf, "PNG")
    return buf.getvalue()


def half_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    """White (repaint) on the left half, black (keep) on the right."""
    img = Image.new("L", size, 0)
    img.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def input_image(data: bytes | None = None, **extra: Any) -> InputImage:
    loaded = load_input(data or png(), max_bytes=10_000_000, max_pixels=10_000_000)
    return loaded.model_copy(update=extra)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def adapter(
    kind: str, model: str | None = None, *, name: str | None = None, api_key: str = "sk-secret-1"
) -> ImageModel:
    """An adapter with no HTTP client at all: enough for ``plan()``, which must be pure."""
    extra = KINDS[kind].provider if kind in KINDS else {}
    settings = ProviderSettings(
        kind=kind,  # type: ignore[arg-type]
        api_key_env="IG_UNUSED",
        models=[model or "m"],
        **extra,
    )
    ctx = ProviderContext(name=name or kind, settings=settings, http=None, api_key=api_key)  # type: ignore[arg-type]
    return BUILTIN[kind](ctx, model or KINDS[kind].model)
