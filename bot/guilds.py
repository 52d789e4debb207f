"""Per-server settings (allowed channels, default model, banned words, NSFW policy, delivery).

Stored by the core as a settings document under the scope ``discord:guild:<id>`` and cached
here in memory, so checks that run before an interaction is acknowledged need no I/O. Admin
changes write through the cache; one bot process per token owns these settings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from core import Caller, ImageService

log = logging.getLogger("imagegate.bot")

SCOPE_PREFIX = "discord:guild:"
NSFW_POLICIES = ("age_restricted", "strict", "off")
DELIVERY_MODES = ("public", "private")
MAX_BANNED_WORDS = 200
MAX_CHANNELS = 100


def scope_of(guild_id: int) -> str:
    return f"{SCOPE_PREFIX}{guild_id}"


@dataclass(frozen=True)
class GuildConfig:
    """One server's settings; the defaults apply to servers (and DMs) with none stored.

    ``nsfw``: ``age_restricted`` (NSFW terms only in age-restricted channels), ``strict``
    (never) or ``off`` (no word filter; the providers' own moderation still applies).
    ``delivery``: ``public`` results in the channel, ``private`` only the requester sees them;
    None (unset): each member's ``/settings`` delivery decides (public by default).
    """

    channels: tuple[int, ...] = ()
    default_model: str | None = None
    banned_words: tuple[str, ...] = ()
    nsfw: str = "age_restricted"
    delivery: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuildConfig:
        """Read a stored document, ignoring anything malformed (a bad row never breaks a server)."""
        known = {"channels", "default_model", "banned_words", "nsfw", "delivery"}
        channels = tuple(int(c) for c in _items(data.get("channels")) if str(c).isdecimal())
        words = tuple(str(w) for w in _items(data.get("banned_words")) if str(w).strip())
        model = data.get("default_model")
        nsfw = data.get("nsfw", "age_restricted")
        delivery = data.get("delivery")
        return cls(
            channels=channels[:MAX_CHANNELS],
            default_model=str(model) if model else None,
            banned_words=words[:MAX_BANNED_WORDS],
            nsfw=nsfw if nsfw in NSFW_POLICIES else "age_restricted",
            delivery=delivery if delivery in DELIVERY_MODES else None,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data["channels"] = [str(c) for c in self.channels]  # snowflakes exceed JS-safe ints
        data["banned_words"] = list(self.banned_words)
        return {**extra, **data}

    def allows_channel(self, channel_id: int | None, parent_id: int | None = None) -> bool:
        """True when no channel list is set, or the channel (or a thread's parent) is listed."""
        if not self.channels:
            return True
        return channel_id in self.channels or (parent_id is not None and parent_id in self.channels)

    @property
    def private(self) -> bool:
        return self.delivery == "private"


DEFAULT = GuildConfig()


class GuildSettings:
    """The cache of every server's settings, loaded once at start-up."""

    def __init__(self, service: ImageService) -> None:
        self._service = service
        self._configs: dict[int, GuildConfig] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        stored = await self._service.all_scope_settings(SCOPE_PREFIX)
        self._configs = {}
        for scope, data in stored.items():
            guild = scope.removeprefix(SCOPE_PREFIX)
            if guild.isdigit():
                self._configs[int(guild)] = GuildConfig.from_dict(data)
        log.info("loaded settings of %d server(s)", len(self._configs))

    def get(self, guild_id: int | None) -> GuildConfig:
        """A server's settings (defaults for DMs and servers without any); no I/O."""
        return self._configs.get(guild_id, DEFAULT) if guild_id is not None else DEFAULT

    async def update(self, admin: Caller, guild_id: int, **changes: Any) -> GuildConfig:
        """Apply ``changes`` to the stored settings and cache the result.

        Raises:
            PermissionDeniedError: ``admin`` is not an admin caller.
        """
        scope = scope_of(guild_id)
        async with self._lock:  # read-modify-write: one update at a time
            current = GuildConfig.from_dict(await self._service.get_scope_settings(scope))
            updated = replace(current, **changes)
            values = {} if updated == DEFAULT and not updated.extra else updated.to_dict()
            stored = await self._service.set_scope_settings(admin, scope, values)
            config = GuildConfig.from_dict(stored)
            self._configs[guild_id] = config
            return config


def _items(value: Any) -> list[Any]:
    """A stored list, or nothing when the stored value is not a list."""
    return value if isinstance(value, list) else []
