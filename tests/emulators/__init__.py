"""Local emulators of the image-generation provider APIs imagegate talks to.

    emu = create_emulator("nebulablock", image_size=(64, 64))
    with running(emu) as url:
        base_url = f"{url}{emu.base_path}"   # what an adapter's base_url would be
        ...                                  # call it with emu.api_key
    emu.requests                             # every request received, in order
    emu.inject(Fault(status=503, retry_after=1))

Each emulator is a Starlette app (`emu.app`, also usable with httpx.ASGITransport). The module
docstrings of deepmode, deepimage, hive, nebulablock, openai, sdwebui, comfyui and horde describe
each API as emulated and mark what is the emulator's choice where the real API is undocumented.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from .base import ApiError, Emulator, Fault, Recorded, Upload, render_image, wait_until
from .comfyui import ComfyUIEmulator
from .deepimage import DeepImageEmulator
from .deepmode import DeepmodeEmulator
from .hive import HiveEmulator
from .horde import HordeEmulator
from .nebulablock import ModelSpec, NebulaBlockEmulator
from .openai import OpenAIEmulator
from .sdwebui import SDWebUIEmulator
from .server import running

KINDS = ("deepmode", "deepimage", "hive", "nebulablock", "openai", "sdwebui", "comfyui", "horde")

_CLASSES: dict[str, type[Emulator]] = {
    "deepmode": DeepmodeEmulator,
    "deepimage": DeepImageEmulator,
    "hive": HiveEmulator,
    "nebulablock": NebulaBlockEmulator,
    "openai": OpenAIEmulator,
    "sdwebui": SDWebUIEmulator,
    "comfyui": ComfyUIEmulator,
    "horde": HordeEmulator,
}


@overload
def create_emulator(kind: Literal["deepmode"], **options: Any) -> DeepmodeEmulator: ...
@overload
def create_emulator(kind: Literal["deepimage"], **options: Any) -> DeepImageEmulator: ...
@overload
def create_emulator(kind: Literal["hive"], **options: Any) -> HiveEmulator: ...
@overload
def create_emulator(kind: Literal["nebulablock"], **options: Any) -> NebulaBlockEmulator: ...
@overload
def create_emulator(kind: Literal["openai"], **options: Any) -> OpenAIEmulator: ...
@overload
def create_emulator(kind: Literal["sdwebui"], **options: Any) -> SDWebUIEmulator: ...
@overload
def create_emulator(kind: Literal["comfyui"], **options: Any) -> ComfyUIEmulator: ...
@overload
def create_emulator(kind: Literal["horde"], **options: Any) -> HordeEmulator: ...
@overload
def create_emulator(kind: str, **options: Any) -> Emulator: ...


def create_emulator(kind: str, **options: Any) -> Emulator:
    """A fresh emulator of provider `kind` (one of KINDS); options go to its constructor.

    Common options: api_key, image_size (w, h), url_ttl_s, callback_delay_s. Provider options
    are listed in each module (e.g. deepimage: credits, max_concurrent_jobs, sync_wait_s).

    Raises:
        ValueError: unknown kind.
    """
    try:
        cls = _CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown emulator kind {kind!r}; expected one of {KINDS}") from None
    return cls(**options)


__all__ = [
    "KINDS",
    "ApiError",
    "ComfyUIEmulator",
    "DeepImageEmulator",
    "DeepmodeEmulator",
    "Emulator",
    "Fault",
    "HiveEmulator",
    "HordeEmulator",
    "ModelSpec",
    "NebulaBlockEmulator",
    "OpenAIEmulator",
    "Recorded",
    "SDWebUIEmulator",
    "Upload",
    "create_emulator",
    "render_image",
    "running",
    "wait_until",
]
