"""The configured models as the bot needs them: autocomplete, provider of a reference, and
which model to use for an operation when the user names none. Built once from
``ImageService.models()`` (in memory, so it is safe to use before acknowledging)."""

from __future__ import annotations

from discord import app_commands

from core import ImageService, ModelInfo


class Catalog:
    def __init__(self, service: ImageService) -> None:
        self.models: list[ModelInfo] = service.models()
        self.by_ref = {m.ref: m for m in self.models}
        self.aliases: dict[str, list[ModelInfo]] = {}
        for model in self.models:
            for alias in model.aliases:
                self.aliases.setdefault(alias, []).append(model)
        default = service.settings.defaults.model
        self.default_ref = default or (self.models[0].ref if self.models else None)

    def known(self, ref: str) -> bool:
        return ref in self.by_ref or ref in self.aliases

    def targets(self, ref: str | None) -> list[ModelInfo]:
        """The models a reference stands for (an alias may name several); [] if unknown."""
        ref = ref or self.default_ref
        if ref is None:
            return []
        if ref in self.by_ref:
            return [self.by_ref[ref]]
        return self.aliases.get(ref, [])

    def provider_of(self, ref: str | None) -> str:
        """The provider that serves a reference first; the reference itself if unknown."""
        targets = self.targets(ref)
        if targets:
            return targets[0].provider
        return (ref or "default").partition(":")[0]

    def serves(self, ref: str | None, operation: str) -> bool:
        return any(operation in m.operations for m in self.targets(ref))

    def pick(self, operation: str, *preferred: str | None) -> str | None:
        """The first preferred reference that serves ``operation``, else the configured default
        if it does, else the first model that does; None lets the service choose (and explain)."""
        for ref in (*preferred, self.default_ref):
            if ref and self.serves(ref, operation):
                return ref
        for model in self.models:
            if operation in model.operations:
                return model.ref
        return None

    def price(self, ref: str | None, operation: str) -> int | None:
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
            if operation and not self.serves(ref, operation):
                continue
            price = self.price(ref, operation or "generate")
            label = ref if price is None else f"{ref} ({price} credit{'s' * (price != 1)}/image)"
            found.append(app_commands.Choice(name=label[:100], value=ref[:100]))
            if len(found) == 25:
                break
        return found
