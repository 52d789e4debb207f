"""Provider adapters, one module each; ``BUILTIN`` maps a config ``kind`` to its class."""

from __future__ import annotations

from .base import Capabilities, ImageModel, Plan, ProviderContext
from .placeholder import PlaceholderImageModel

BUILTIN: dict[str, type[ImageModel]] = {
    "placeholder": PlaceholderImageModel,
}

__all__ = ["BUILTIN", "Capabilities", "ImageModel", "Plan", "ProviderContext"]
