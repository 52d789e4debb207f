"""Provider adapters, one module each. Each class declares its ``kind``, default base URL,
capabilities and options; ``BUILTIN`` (config ``kind`` -> class), ``KINDS`` and
``DEFAULT_BASE_URLS`` are derived from ``ADAPTERS``, the one list to add a new adapter to."""

from __future__ import annotations

from .base import Capabilities, ImageModel, Plan, ProviderContext, ProviderOptions
from .comfyui import ComfyUIImageModel
from .deepimage import DeepImageImageModel
from .deepmode import DeepmodeImageModel
from .hive import HiveImageModel
from .hive_v3 import HiveV3ImageModel
from .horde import HordeImageModel
from .nebulablock import NebulaBlockImageModel
from .openai import OpenAIImageModel
from .placeholder import PlaceholderImageModel
from .sdwebui import SDWebUIImageModel

ADAPTERS: tuple[type[ImageModel], ...] = (
    DeepmodeImageModel,
    DeepImageImageModel,
    HiveImageModel,
    HiveV3ImageModel,
    NebulaBlockImageModel,
    OpenAIImageModel,
    PlaceholderImageModel,
    SDWebUIImageModel,
    ComfyUIImageModel,
    HordeImageModel,
)
BUILTIN: dict[str, type[ImageModel]] = {cls.kind: cls for cls in ADAPTERS}
KINDS: tuple[str, ...] = tuple(BUILTIN)
DEFAULT_BASE_URLS: dict[str, str] = {cls.kind: cls.default_base_url for cls in ADAPTERS}

__all__ = [
    "ADAPTERS",
    "BUILTIN",
    "DEFAULT_BASE_URLS",
    "KINDS",
    "Capabilities",
    "ImageModel",
    "Plan",
    "ProviderContext",
    "ProviderOptions",
]
