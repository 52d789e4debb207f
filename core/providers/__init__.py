"""Provider adapters, one module each; ``BUILTIN`` maps a config ``kind`` to its class."""

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

BUILTIN: dict[str, type[ImageModel]] = {
    "deepmode": DeepmodeImageModel,
    "deepimage": DeepImageImageModel,
    "hive": HiveImageModel,
    "hive_v3": HiveV3ImageModel,
    "nebulablock": NebulaBlockImageModel,
    "openai": OpenAIImageModel,
    "placeholder": PlaceholderImageModel,
    "sdwebui": SDWebUIImageModel,
    "comfyui": ComfyUIImageModel,
    "horde": HordeImageModel,
}

__all__ = ["BUILTIN", "Capabilities", "ImageModel", "Plan", "ProviderContext", "ProviderOptions"]
