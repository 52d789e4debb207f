"""Plain data types shared by the fake Discord server: recorded calls, faults, users, guilds."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import discord

DISCORD_EPOCH_MS = 1420070400000

# Error bodies Discord really returns; handy for ``fake.fail_next(...)``.
UNKNOWN_INTERACTION = {"code": 10062, "message": "Unknown interaction"}
UNKNOWN_WEBHOOK = {"code": 10015, "message": "Unknown Webhook"}
UNKNOWN_MESSAGE = {"code": 10008, "message": "Unknown Message"}
UNKNOWN_CHANNEL = {"code": 10003, "message": "Unknown Channel"}
INVALID_WEBHOOK_TOKEN = {"code": 50027, "message": "Invalid Webhook Token"}
ALREADY_ACKNOWLEDGED = {"code": 40060, "message": "Interaction has already been acknowledged."}
MISSING_PERMISSIONS = {"code": 50013, "message": "Missing Permissions"}
MISSING_ACCESS = {"code": 50001, "message": "Missing Access"}
REQUEST_TOO_LARGE = {"code": 40005, "message": "Request entity too large"}
EMPTY_MESSAGE = {"code": 50006, "message": "Cannot send an empty message"}

# Permission sets used by the default guild.
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
    change_nickname=True,
    create_instant_invite=True,
    connect=True,
    speak=True,
).value
MODERATOR_PERMISSIONS = discord.Permissions(manage_guild=True, manage_messages=True).value
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
ALL_PERMISSIONS = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Snowflakes:
    """Unique, increasing, realistic snowflake IDs."""

    def __init__(self) -> None:
        self._counter = 0
        self._last = 0

    def next(self) -> int:
        self._counter += 1
        value = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (self._counter & 0x3FFFFF)
        if value <= self._last:
            value = self._last + 1
        self._last = value
        return value


class UploadedFile(NamedTuple):
    """One multipart file part as the bot uploaded it (a tuple: filename, data, content_type)."""

    filename: str
    data: bytes
    content_type: str
    field: str = ""  # multipart field name, e.g. "files[0]"


@dataclass
class Call:
    """One HTTP request the fake received (REST API call or CDN download).

    ``path`` has the ``/api/v10`` prefix stripped (``/webhooks/1/tok``); CDN downloads keep their
    path (``/cdn/attachments/...``). ``json`` is the JSON body, or the parsed ``payload_json`` part
    of a multipart body, or ``None``. ``timestamp`` is ``time.monotonic()`` when the request
    arrived (compare with ``InteractionHandle.dispatched_at``). ``status``/``response`` are what the
    fake answered; ``fault`` is the injected fault that produced the answer, if any.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    headers: dict[str, str]
    timestamp: float
    form: dict[str, str] = field(default_factory=dict)
    status: int = 0
    response: Any = None
    fault: Fault | None = None
    interaction_id: int | None = None
    unhandled: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def data(self) -> Any:
        """For interaction callbacks: ``json["data"]`` (the message/modal/choices payload)."""
        if isinstance(self.json, dict):
            return self.json.get("data")
        return None

    @property
    def type(self) -> int | None:
        """For interaction callbacks: the callback type (4, 5, 6, 7, 8, 9...)."""
        if isinstance(self.json, dict):
            return self.json.get("type")
        return None

    def __repr__(self) -> str:
        extra = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"<Call {self.method} {self.path} -> {self.status}{extra}>"


@dataclass
class Fault:
    """An injected failure (or delay). See ``FakeDiscord.fail_next``."""

    method: str | None
    pattern: re.Pattern[str]
    status: int | None
    body: Any
    headers: dict[str, str]
    times: int | None
    delay: float = 0.0
    hits: list[Call] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        return self.pattern.fullmatch(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.times <= 0


@dataclass(eq=False)
class FakeUser:
    """A Discord user. Membership/roles live in ``FakeGuild.members``."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=now_iso)


@dataclass(eq=False)
class FakeGuild:
    """A guild with roles, channels and members.

    ``text_channel`` is a normal text channel, ``nsfw_channel`` an age-restricted one
    (``nsfw: true``). ``everyone_role`` has ID == guild ID; ``moderator_role`` grants
    Manage Server + Manage Messages; ``bot_role`` is the bot's managed role.
    """

    id: int
    name: str
    owner_id: int
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    channels: dict[int, dict[str, Any]] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    text_channel: dict[str, Any] = field(default_factory=dict)
    nsfw_channel: dict[str, Any] = field(default_factory=dict)
    everyone_role: dict[str, Any] = field(default_factory=dict)
    moderator_role: dict[str, Any] = field(default_factory=dict)
    bot_role: dict[str, Any] = field(default_factory=dict)
    joined_at: str = field(default_factory=now_iso)

    # -- helpers -----------------------------------------------------------------------------

    def add_role(
        self, role_id: int, name: str, permissions: int, *, bot_id: int | None = None
    ) -> dict[str, Any]:
        role: dict[str, Any] = {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": len(self.roles),
            "permissions": str(permissions),
            "managed": bot_id is not None,
            "mentionable": False,
            "flags": 0,
        }
        if bot_id is not None:
            role["tags"] = {"bot_id": str(bot_id)}
        self.roles[role_id] = role
        return role

    def add_text_channel(self, channel_id: int, name: str, *, nsfw: bool = False) -> dict[str, Any]:
        channel = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(self.id),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        self.channels[channel_id] = channel
        return channel

    def permissions_for(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        perms = int(self.everyone_role.get("permissions", "0"))
        member = self.members.get(user_id)
        if member is not None:
            for role_id in member.roles:
                role = self.roles.get(role_id)
                if role is not None:
                    perms |= int(role["permissions"])
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def member_payload(self, user_id: int, *, with_user: bool = True) -> dict[str, Any]:
        member = self.members[user_id]
        data: dict[str, Any] = {
            "roles": [str(r) for r in member.roles],
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "joined_at": member.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = member.user.to_dict()
        return data

    def rest_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": list(self.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.text_channel["id"]) if self.text_channel else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
        }

    def gateway_payload(self) -> dict[str, Any]:
        data = self.rest_payload()
        data.update(
            {
                "unavailable": False,
                "large": False,
                "member_count": len(self.members),
                "joined_at": self.joined_at,
                "members": [self.member_payload(uid) for uid in self.members],
                "channels": [dict(c) for c in self.channels.values()],
                "threads": [],
                "presences": [],
                "voice_states": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
                "embedded_activities": [],
            }
        )
        return data

    def interaction_guild(self) -> dict[str, Any]:
        return {"id": str(self.id), "locale": "en-US", "features": []}

    def find_channel(self, channel: Any) -> dict[str, Any]:
        cid = int(channel["id"]) if isinstance(channel, dict) else int(channel)
        try:
            return self.channels[cid]
        except KeyError:
            raise LookupError(f"channel {cid} is not in guild {self.id}") from None
