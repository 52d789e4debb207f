"""The configured models as the bot's autocomplete and /models show them. Built once from
``ImageService.models()`` (in memory, so it is safe to use before acknowledging). Which model
serves an operation, and the default, are the core's choices (``ImageService.model_for``)."""

from __future__ import annotations

from discord import app_commands

from core import ImageService, ModelInfo


class Catalog:
    def __init__(self, service: ImageService) -> None:
        self.service = service
        self.models: list[ModelInfo] = service.models()
        self.by_ref = {m.ref: m for m in self.models}
        self.aliases: dict[str, list[ModelInfo]] = {}
        for model in self.models:
            for alias in model.aliases:
                self.aliases.setdefault(alias, []).append(model)

    def known(self, ref: str) -> bool:
        return ref in self.by_ref or ref in self.aliases

    def targets(self, ref: str) -> list[ModelInfo]:
        """The models a reference stands for (an alias may name several); [] if unknown."""
        if ref in self.by_ref:
            return [self.by_ref[ref]]
        return self.aliases.get(ref, [])

    def takes(self, ref: str, option: str) -> bool:
        """True when every model ``ref`` stands for takes ``option`` (``ModelInfo.options``)."""
        targets = self.targets(ref)
        return bool(targets) and all(option in m.options for m in targets)

    def price(self, ref: str, operation: str) -> int | None:
        targets = self.targets(ref)
        prices = [m.prices[operation] for m in targets if operation in m.prices]
        return max(prices) if prices else None

    def choices(self, current: str, operation: str | None = None) -> list[app_commands.Choice[str]]:
        """Up to 25 autocomplete choices whose reference contains ``current``."""
        needle = current.casefold().strip()
        found: list[app_commands.Choice[str]] = []
        for ref in [*self.aliases, *self.by_ref]:
            if needle and needle not in ref.casefold():
                continue
            if operation and not self.service.serves(ref, operation):
                continue
            price = self.price(ref, operation or "generate")
            label = ref if price is None else f"{ref} ({price} credit{'s' * (price != 1)}/image)"
            found.append(app_commands.Choice(name=label[:100], value=ref[:100]))
            if len(found) == 25:
                break
        return found
