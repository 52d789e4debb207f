"""Configured models by reference (``provider:model``), aliases and fallback chains, prices."""

from __future__ import annotations

import httpx

from .callbacks import CallbackHub
from .errors import ConfigError, InvalidRequestError, UnknownModelError
from .providers import BUILTIN, ImageModel, ProviderContext
from .providers.base import option_schema
from .settings import Settings
from .types import OPERATIONS, ModelInfo, Operation


class Registry:
    """Every configured model, built once at start-up.

    Raises (from the constructor):
        ConfigError: an unknown kind, an alias to an unknown model, or a model with no price.
    """

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, callbacks: CallbackHub | None = None
    ) -> None:
        self.settings = settings
        self.contexts: dict[str, ProviderContext] = {}
        self.models: dict[str, ImageModel] = {}
        for name, provider in settings.providers.items():
            if ":" in name:
                raise ConfigError(f"{settings.source}: [providers.{name}]: names cannot hold ':'")
            ctx = ProviderContext(
                name=name,
                settings=provider,
                http=http,
                api_key=provider.api_key(),
                callbacks=callbacks,
                max_download_bytes=settings.images.max_download_bytes,
                max_pixels=settings.images.max_pixels,
            )
            self.contexts[name] = ctx
            for model_name in provider.models or ["default"]:
                try:
                    model = BUILTIN[provider.kind](ctx, model_name)
                except ConfigError as exc:  # an adapter checking its own settings
                    raise ConfigError(f"{settings.source}: {exc.message}") from None
                self.models[model.ref] = model
        self.aliases = {
            alias: [target] if isinstance(target, str) else list(target)
            for alias, target in settings.aliases.items()
        }
        self._check_aliases()
        self.default_ref = settings.defaults.model or next(iter(self.models))
        self.default_problem = self._check_default()
        for model in self.models.values():
            for operation in model.capabilities.operations:
                self.price(model.ref, operation)

    def _check_aliases(self) -> None:
        for alias, targets in self.aliases.items():
            for target in targets:
                if target not in self.models:
                    raise ConfigError(
                        f"{self.settings.source}: [aliases] {alias}: {target!r} is not a"
                        f" configured model (known: {', '.join(self.models)})"
                    )

    def _check_default(self) -> ConfigError | None:
        """What is wrong with ``[defaults] model``, if anything. Kept, not raised, so that
        ``imagegate models`` can still list the models; opening a service raises it."""
        try:
            self.resolve(self.default_ref)
        except UnknownModelError as exc:
            return ConfigError(f"{self.settings.source}: [defaults] model: {exc.message}")
        return None

    def resolve(self, ref: str | None) -> list[ImageModel]:
        """The fallback chain for a reference (an alias may name several models).

        Raises:
            UnknownModelError: neither a configured ``provider:model`` nor an alias.
            ConfigError: no reference given, and ``[defaults] model`` is unknown.
        """
        if ref is None and self.default_problem is not None:
            raise self.default_problem
        ref = ref or self.default_ref
        if ref in self.models:
            return [self.models[ref]]
        if ref in self.aliases:
            return [self.models[target] for target in self.aliases[ref]]
        known = ", ".join([*self.models, *self.aliases])
        hint = ""
        if ref.startswith("placeholder:") and "placeholder" not in self.contexts:
            hint = (
                " (the offline placeholder exists only while no [providers.*] is configured;"
                ' add [providers.placeholder] with kind = "placeholder" to keep it)'
            )
        raise UnknownModelError(f"unknown model {ref!r}; choose one of: {known}{hint}")

    def serves(self, ref: str | None, operation: str) -> bool:
        """True when the reference (default: the default model) names a model that can do
        ``operation``; False for an unknown reference."""
        try:
            return any(operation in m.capabilities.operations for m in self.resolve(ref))
        except UnknownModelError:
            return False

    def model_for(self, operation: Operation, *preferred: str | None) -> str:
        """The model to use for ``operation``: the first preferred reference that serves it,
        else the default model if it does, else the first configured model that does.

        Raises:
            InvalidRequestError: no configured model can do ``operation``.
        """
        for ref in (*preferred, self.default_ref):
            if ref and self.serves(ref, operation):
                return ref
        for ref, model in self.models.items():
            if operation in model.capabilities.operations:
                return ref
        raise InvalidRequestError(f"no configured model can do {operation}")

    def check_model(self, ref: str, operation: Operation) -> None:
        """Refuse a model the user named that is unknown or cannot do ``operation``.

        Raises:
            UnknownModelError: not a configured model or alias.
            InvalidRequestError: it cannot do ``operation``.
        """
        self.resolve(ref)
        if not self.serves(ref, operation):
            raise InvalidRequestError(
                f"{ref} cannot do {operation}; list the models to find one that can"
            )

    def price(self, ref: str, operation: Operation) -> int:
        """Credits per delivered image.

        Raises:
            ConfigError: no per-model, per-operation or default price applies.
        """
        pricing = self.settings.pricing
        per_model = pricing.models.get(ref)
        if isinstance(per_model, int):
            return per_model
        if isinstance(per_model, dict):
            found = per_model.get(operation, per_model.get("default"))
            if found is not None:
                return found
        if operation in pricing.operations:
            return pricing.operations[operation]
        if pricing.default is not None:
            return pricing.default
        raise ConfigError(
            f"{self.settings.source}: [pricing] has no price for {ref} ({operation});"
            " set [pricing] default or a per-model price"
        )

    def info(self) -> list[ModelInfo]:
        """Every configured model with its operations and prices."""
        out = []
        for ref, model in self.models.items():
            caps = model.capabilities
            operations = [op for op in OPERATIONS if op in caps.operations]
            prices: dict[str, int] = {op: self.price(ref, op) for op in operations}
            out.append(
                ModelInfo(
                    ref=ref,
                    provider=model.ctx.name,
                    kind=model.kind,
                    model=model.model,
                    operations=operations,
                    max_images=caps.max_images_per_call,
                    price=prices[operations[0]],
                    prices=prices,
                    aliases=[a for a, targets in self.aliases.items() if ref in targets],
                    description=caps.description,
                    options=option_schema(model),
                )
            )
        return out
