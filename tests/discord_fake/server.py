"""FakeDiscord: an aiohttp server emulating Discord REST v10, the gateway and the CDN."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import discord
import yarl
from aiohttp import BodyPartReader, WSMsgType, web

from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionHandle,
)
from .models import (
    ALREADY_ACKNOWLEDGED,
    BOT_PERMISSIONS,
    EVERYONE_PERMISSIONS,
    INVALID_WEBHOOK_TOKEN,
    MODERATOR_PERMISSIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    Call,
    FakeGuild,
    FakeMember,
    FakeUser,
    Fault,
    Snowflakes,
    UploadedFile,
    now_iso,
)
from .validation import (
    InvalidInteraction,
    find_component,
    form_error,
    validate_commands,
    validate_message,
    validate_modal,
    walk_components,
)

T = TypeVar("T")

EPHEMERAL = 1 << 6
LOADING = 1 << 7
COMPONENTS_V2 = 1 << 15
_CREATE_FLAGS = (1 << 2) | EPHEMERAL | (1 << 12) | (1 << 13) | COMPONENTS_V2
_EDIT_FLAGS = (1 << 2) | COMPONENTS_V2
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

_API_PREFIX = re.compile(r"^/api/v\d+(/.*)$")
_TRUE = {"1", "true", "True"}

Handler = Callable[..., Awaitable[Any]]


class _HTTPError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


class _GatewaySession:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self.seq = 0
        self.identify: dict[str, Any] | None = None
        self.ready = False
        self.lock = asyncio.Lock()
        self.events: list[tuple[str, Any]] = []  # every DISPATCH sent: (event name, data)

    @property
    def shard(self) -> tuple[int, int]:
        """(shard id, shard count) from IDENTIFY; (0, 1) for an unsharded bot."""
        shard = (self.identify or {}).get("shard") or [0, 1]
        return int(shard[0]), int(shard[1])

    def serves(self, guild_id: int | None) -> bool:
        """Whether Discord sends this session the events of ``guild_id`` (None: DMs, which
        go to shard 0): shard id = (guild_id >> 22) % shard count."""
        shard_id, count = self.shard
        return shard_id == (0 if guild_id is None else (guild_id >> 22) % count)

    async def send(self, op: int, d: Any, t: str | None = None) -> None:
        async with self.lock:
            s = None
            if op == 0:
                self.seq += 1
                s = self.seq
                self.events.append((t or "", d))
            if not self.ws.closed:
                await self.ws.send_str(json.dumps({"op": op, "d": d, "s": s, "t": t}))


def _jsonable_id(value: Any) -> int:
    if isinstance(value, FakeUser):
        return value.id
    if isinstance(value, dict):
        return int(value["id"])
    return int(value)


class FakeDiscord:
    """Local fake of Discord's REST API v10, gateway and attachment CDN.

    See the package docstring (``tests.discord_fake``) for the full interface.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        application_id: int = 1100000000000000001,
        bot_name: str = "imagegate",
        callback_deadline: float | None = 3.0,
        require_synced: bool = True,
        validate: bool = True,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        heartbeat_interval_ms: int = 41250,
    ) -> None:
        self.host = host
        self.port = port
        self.application_id = application_id
        self.callback_deadline = callback_deadline
        self.require_synced = require_synced
        self.validate = validate
        self.upload_limit = upload_limit
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.snowflakes = Snowflakes()

        # Recorded traffic and state.
        self.calls: list[Call] = []
        self.messages: list[dict[str, Any]] = []
        self.user_messages: list[dict[str, Any]] = []
        self.deleted_message_ids: set[int] = set()
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.interactions: dict[int, InteractionHandle] = {}
        self.modals: list[tuple[InteractionHandle, dict[str, Any]]] = []
        self.faults: list[Fault] = []
        self.gateway_received: list[dict[str, Any]] = []
        self.identify_payloads: list[dict[str, Any]] = []
        self.attachments: dict[int, dict[str, Any]] = {}
        self._messages_by_id: dict[int, dict[str, Any]] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._cdn: dict[str, tuple[bytes, str]] = {}
        self._sessions: list[_GatewaySession] = []
        self.recommended_shards = 1  # GET /gateway/bot: what an AutoShardedBot asks for
        self._sessions_by_id: dict[str, _GatewaySession] = {}
        self._dm_channels: dict[int, dict[str, Any]] = {}
        self._change: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._build_routes()

        # Users and the default guild.
        self.users: dict[int, FakeUser] = {}
        self.bot_user = self._add_user(FakeUser(application_id, bot_name, bot=True))
        self.owner = self._add_user(FakeUser(1200000000000000001, "owner", "Guild Owner"))
        self.admin = self._add_user(FakeUser(1200000000000000002, "admin", "Moderator Mo"))
        self.user = self._add_user(FakeUser(1200000000000000003, "alice", "Alice"))
        self.guilds: dict[int, FakeGuild] = {}
        self.guild = self.add_guild("Imagegate Test Guild", guild_id=1300000000000000001)
        # The application's team (Discord's team object), when ``set_team`` made it team-owned.
        self.team: dict[str, Any] | None = None
        self.guild.members[self.admin.id].roles.append(int(self.guild.moderator_role["id"]))

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        self._change = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gw", self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        for sess in list(self._sessions):
            with contextlib.suppress(Exception):
                await sess.ws.close(code=1001, message=b"fake shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (and READY's resume_gateway_url)."""
        return f"ws://{self.host}:{self.port}/gw"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[FakeDiscord]:
        """Point discord.py at this fake (outside pytest; the fixture uses monkeypatch)."""
        from discord.gateway import DiscordWebSocket

        old_base, old_gw = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield self
        finally:
            discord.http.Route.BASE = old_base
            DiscordWebSocket.DEFAULT_GATEWAY = old_gw

    # ------------------------------------------------------------------------------------------
    # Waiting
    # ------------------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    def notify(self) -> None:
        """Wake every ``wait_until`` so it re-evaluates its predicate."""
        self._changed()

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait (no polling) until ``predicate()`` is truthy; re-checked on every call/frame."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = predicate()
                    if result:
                        return result
                    assert self._change is not None, "FakeDiscord.start() was not awaited"
                    await self._change.wait()
        except TimeoutError:
            recent = "\n  ".join(repr(c) for c in self.calls[-15:]) or "(none)"
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what}; last calls:\n  {recent}"
            ) from None

    async def wait_for_call(
        self,
        method: str | None,
        path_regex: str,
        timeout: float = 5.0,
        *,
        since: int = 0,
        predicate: Callable[[Call], bool] | None = None,
        include_failed: bool = False,
    ) -> Call:
        """First call in ``calls[since:]`` with this method (None/"*" = any) whose path
        *fullmatches* ``path_regex`` (and is 2xx unless ``include_failed``)."""
        pattern = re.compile(path_regex)

        def found() -> Call | None:
            for c in self.calls[since:]:
                if method not in (None, "*") and c.method != method.upper():
                    continue
                if not pattern.fullmatch(c.path):
                    continue
                if not include_failed and not c.ok:
                    continue
                if predicate is not None and not predicate(c):
                    continue
                return c
            return None

        return await self.wait_until(found, timeout, f"{method} {path_regex}")

    async def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
        *,
        since: int = 0,
    ) -> dict[str, Any]:
        """First bot message in ``messages[since:]`` (live dicts) matching ``predicate``."""

        def found() -> dict[str, Any] | None:
            for m in self.messages[since:]:
                if predicate is None or predicate(m):
                    return m
            return None

        return await self.wait_until(found, timeout, "bot message")

    async def wait_for_gateway_op(
        self, op: int, timeout: float = 5.0, *, since: int = 0
    ) -> dict[str, Any]:
        """First frame the bot sent over the gateway (in ``gateway_received[since:]``) with op."""
        return await self.wait_until(
            lambda: next((f for f in self.gateway_received[since:] if f.get("op") == op), None),
            timeout,
            f"gateway op {op}",
        )

    # ------------------------------------------------------------------------------------------
    # Fault injection
    # ------------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str | None,
        path_regex: str,
        status: int,
        body: Any = None,
        retry_after: float | None = None,
        times: int | None = 1,
        *,
        global_: bool = False,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Answer the next ``times`` matching calls (None = forever) with ``status``/``body``.

        ``path_regex`` must fullmatch the API path (``/interactions/\\d+/[^/]+/callback``,
        ``/webhooks/\\d+/[^/]+``, ``/cdn/.*``...). For 429 a Discord-shaped body and
        ``Retry-After``/``X-RateLimit-*``/``Via`` headers are produced (``retry_after`` defaults
        to 0.05 s; ``global_=True`` makes it a global limit), so discord.py sleeps and retries.
        Returns the Fault; ``fault.hits`` lists the calls it answered.
        """
        hdrs: dict[str, str] = {}
        if status == 429:
            ra = 0.05 if retry_after is None else retry_after
            if body is None:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": ra,
                    "global": global_,
                    "code": 0,
                }
            hdrs.update(
                {
                    "Retry-After": str(max(1, round(ra))),
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + ra:.3f}",
                    "X-RateLimit-Reset-After": f"{ra:.3f}",
                    "X-RateLimit-Bucket": secrets.token_hex(16),
                    "X-RateLimit-Scope": "global" if global_ else "user",
                }
            )
            if global_:
                hdrs["X-RateLimit-Global"] = "true"
        elif body is None:
            body = {"message": f"{status}: injected failure", "code": 0}
        if headers:
            hdrs.update(headers)
        fault = Fault(method, re.compile(path_regex), status, body, hdrs, times, delay)
        self.faults.append(fault)
        return fault

    def delay_next(
        self, method: str | None, path_regex: str, seconds: float, times: int | None = 1
    ) -> Fault:
        """Delay the next matching calls by ``seconds``, then handle them normally."""
        fault = Fault(method, re.compile(path_regex), None, None, {}, times, seconds)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    # ------------------------------------------------------------------------------------------
    # Users, guilds, attachments, messages
    # ------------------------------------------------------------------------------------------

    def _add_user(self, user: FakeUser) -> FakeUser:
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Second Guild",
        *,
        guild_id: int | None = None,
        owner: FakeUser | None = None,
    ) -> FakeGuild:
        """Add a guild (call before logging in so READY/GUILD_CREATE include it).

        It gets a text channel, an ``nsfw`` channel, @everyone/Moderator/bot roles and as members
        the bot, the owner, ``admin`` and ``user``.
        """
        gid = guild_id or self.snowflakes.next()
        owner = owner or self.owner
        guild = FakeGuild(id=gid, name=name, owner_id=owner.id)
        guild.everyone_role = guild.add_role(gid, "@everyone", EVERYONE_PERMISSIONS)
        guild.moderator_role = guild.add_role(
            self.snowflakes.next(), "Moderator", MODERATOR_PERMISSIONS
        )
        guild.bot_role = guild.add_role(
            self.snowflakes.next(), self.bot_user.username, BOT_PERMISSIONS, bot_id=self.bot_user.id
        )
        guild.text_channel = guild.add_text_channel(self.snowflakes.next(), "general")
        guild.nsfw_channel = guild.add_text_channel(self.snowflakes.next(), "nsfw-art", nsfw=True)
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, [int(guild.bot_role["id"])])
        for u in (owner, self.admin, self.user):
            guild.members.setdefault(u.id, FakeMember(u))
        self.guilds[gid] = guild
        return guild

    async def dispatch_guild_create(self, guild: FakeGuild) -> None:
        """Tell connected bots about a guild added after login (bot joined a guild)."""
        await self.dispatch_event("GUILD_CREATE", guild.gateway_payload())

    def create_user(
        self,
        username: str,
        *,
        permissions: int | discord.Permissions | None = None,
        roles: Sequence[int] = (),
        guild: FakeGuild | None = None,
        global_name: str | None = None,
        bot: bool = False,
    ) -> FakeUser:
        """Create a user who is a member of ``guild`` (default: the default guild).

        ``permissions`` creates a dedicated role with exactly those permissions (on top of
        @everyone), so the cache and the interaction ``member.permissions`` agree.
        """
        guild = guild or self.guild
        user = self._add_user(FakeUser(self.snowflakes.next(), username, global_name, bot))
        member = FakeMember(user, [int(r) for r in roles])
        if permissions is not None:
            value = (
                permissions.value if isinstance(permissions, discord.Permissions) else permissions
            )
            role = guild.add_role(self.snowflakes.next(), f"{username}-role", int(value))
            member.roles.append(int(role["id"]))
        guild.members[user.id] = member
        return user

    def set_team(
        self,
        owner: FakeUser,
        members: Sequence[tuple[FakeUser, str]] = (),
        *,
        invited: Sequence[FakeUser] = (),
    ) -> dict[str, Any]:
        """Make the application team-owned, as application info then reports it: a ``team``
        object (``owner_user_id``; members with ``role`` "admin", "developer" or "read_only"
        and ``membership_state`` 2 = accepted, 1 = invited) and, as ``owner``, the team's
        pseudo-user (flag TEAM_PSEUDO_USER, 1 << 10). ``owner`` is listed as an admin;
        ``invited`` users are developers who have not accepted yet."""
        team_id = self.snowflakes.next()

        def member(user: FakeUser, role: str, state: int) -> dict[str, Any]:
            return {
                "membership_state": state,
                "team_id": str(team_id),
                "user": {
                    k: user.to_dict()[k] for k in ("id", "username", "discriminator", "avatar")
                },
                "role": role,
                "permissions": ["*"],
            }

        listed = [member(owner, "admin", 2)]
        listed += [member(user, role, 2) for user, role in members]
        listed += [member(user, "developer", 1) for user in invited]
        self.team = {
            "icon": None,
            "id": str(team_id),
            "members": listed,
            "name": "imagegate team",
            "owner_user_id": str(owner.id),
        }
        return self.team

    def dm_channel(self, user: FakeUser) -> dict[str, Any]:
        ch = self._dm_channels.get(user.id)
        if ch is None:
            ch = {
                "id": str(self.snowflakes.next()),
                "type": 1,
                "last_message_id": None,
                "recipients": [user.to_dict()],
                "flags": 0,
            }
            self._dm_channels[user.id] = ch
        return ch

    def _find_channel(self, channel_id: int) -> tuple[dict[str, Any], FakeGuild | None]:
        for g in self.guilds.values():
            if channel_id in g.channels:
                return g.channels[channel_id], g
        for ch in self._dm_channels.values():
            if int(ch["id"]) == channel_id:
                return ch, None
        raise _HTTPError(404, UNKNOWN_CHANNEL)

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        description: str | None = None,
        channel: dict[str, Any] | int | None = None,
        ephemeral: bool = True,
    ) -> dict[str, Any]:
        """Register bytes on the fake CDN and return a Discord attachment object.

        ``url`` is served by the fake, so ``await attachment.read()`` works. ``size`` and
        ``content_type`` default to the truth but may be overridden to lie (validation tests).
        Image width/height are read with Pillow when not given.
        """
        cid = _jsonable_id(channel) if channel is not None else int(self.guild.text_channel["id"])
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        att = self._register_attachment(
            filename, data, ctype, channel_id=cid, description=description, ephemeral=ephemeral
        )
        if size is not None:
            att["size"] = size
        if width is not None:
            att["width"] = width
        if height is not None:
            att["height"] = height
        return att

    def _register_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        channel_id: int,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        aid = self.snowflakes.next()
        path = f"/cdn/attachments/{channel_id}/{aid}/{filename}"
        url = f"{self.url}{path}"
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if description is not None:
            att["description"] = description
        if ephemeral:
            att["ephemeral"] = True
        if content_type.startswith("image/"):
            with contextlib.suppress(Exception):
                from PIL import Image

                with Image.open(io.BytesIO(data)) as img:
                    att["width"], att["height"] = img.size
        self._cdn[path] = (data, content_type)
        self.attachments[aid] = att
        return att

    def attachment_bytes(self, attachment: dict[str, Any] | str) -> bytes:
        """Bytes behind an attachment dict or URL served by this fake."""
        url = attachment["url"] if isinstance(attachment, dict) else attachment
        path = yarl.URL(url).path
        return self._cdn[path][0]

    def get_message(self, message_id: int | str) -> dict[str, Any] | None:
        """Live dict of any message the fake knows (bot or user), deleted ones included."""
        return self._messages_by_id.get(int(message_id))

    def _live_message(self, message: dict[str, Any] | int | str) -> dict[str, Any]:
        mid = int(message["id"]) if isinstance(message, dict) else int(message)
        msg = self._messages_by_id.get(mid)
        if msg is None:
            if isinstance(message, dict):
                return message
            raise InvalidInteraction(f"unknown message {mid}")
        if mid in self.deleted_message_ids:
            raise InvalidInteraction(f"message {mid} was deleted")
        return msg

    async def post_user_message(
        self,
        content: str = "",
        *,
        user: FakeUser | None = None,
        channel: dict[str, Any] | int | None = None,
        attachments: Sequence[dict[str, Any]] = (),
        dispatch: bool = True,
    ) -> dict[str, Any]:
        """A message posted by a human (e.g. a context-menu target); sends MESSAGE_CREATE."""
        user = user or self.user
        cid = _jsonable_id(channel) if channel is not None else int(self.guild.text_channel["id"])
        ch, guild = self._find_channel(cid)
        msg = self._blank_message(cid, guild, user)
        msg["content"] = content
        msg["attachments"] = [{k: v for k, v in a.items() if k != "ephemeral"} for a in attachments]
        self.user_messages.append(msg)
        self._messages_by_id[int(msg["id"])] = msg
        ch["last_message_id"] = msg["id"]
        if dispatch and self._ready_sessions():
            event = copy.deepcopy(msg)
            if guild is not None and user.id in guild.members:
                event["member"] = guild.member_payload(user.id, with_user=False)
            await self.dispatch_event("MESSAGE_CREATE", event)
        return msg

    def _blank_message(
        self, channel_id: int, guild: FakeGuild | None, author: FakeUser, msg_type: int = 0
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": str(self.snowflakes.next()),
            "channel_id": str(channel_id),
            "author": author.to_dict(),
            "content": "",
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": msg_type,
            "flags": 0,
        }
        if guild is not None:
            msg["guild_id"] = str(guild.id)
        return msg

    def _bot_message(
        self,
        payload: dict[str, Any],
        files: list[UploadedFile],
        *,
        channel_id: int,
        guild: FakeGuild | None,
        handle: InteractionHandle | None = None,
        msg_type: int = 0,
        flags: int | None = None,
    ) -> dict[str, Any]:
        msg = self._blank_message(channel_id, guild, self.bot_user, msg_type)
        if handle is not None:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
            meta: dict[str, Any] = {
                "id": str(handle.id),
                "type": handle.type,
                "user": handle.user.to_dict(),
                "authorizing_integration_owners": handle.payload.get(
                    "authorizing_integration_owners", {}
                ),
            }
            if handle.type == APPLICATION_COMMAND:
                meta["name"] = handle.payload["data"]["name"]
                meta["command_type"] = handle.payload["data"].get("type", 1)
            if handle.message_id is not None:
                meta["interacted_message_id"] = str(handle.message_id)
            msg["interaction_metadata"] = meta
        msg["flags"] = (
            flags if flags is not None else int(payload.get("flags") or 0) & _CREATE_FLAGS
        )
        if payload.get("message_reference"):
            msg["message_reference"] = payload["message_reference"]
            ref = self._messages_by_id.get(int(payload["message_reference"].get("message_id", 0)))
            if ref is not None:
                msg["type"] = 19
                msg["referenced_message"] = copy.deepcopy(ref)
        self._apply_content(msg, payload, files, editing=False)
        self.messages.append(msg)
        self._messages_by_id[int(msg["id"])] = msg
        return msg

    def _apply_content(
        self,
        msg: dict[str, Any],
        payload: dict[str, Any],
        files: list[UploadedFile],
        *,
        editing: bool,
    ) -> None:
        if "content" in payload:
            msg["content"] = payload["content"] or ""
        for key in ("embeds", "components"):
            if key in payload:
                msg[key] = copy.deepcopy(payload[key] or [])
        if "poll" in payload and not editing:
            msg["poll"] = copy.deepcopy(payload["poll"])
        if "tts" in payload and not editing:
            msg["tts"] = bool(payload["tts"])
        if editing and "flags" in payload and payload["flags"] is not None:
            keep = msg["flags"] & ~_EDIT_FLAGS
            msg["flags"] = keep | (int(payload["flags"]) & _EDIT_FLAGS)
        ephemeral = bool(msg["flags"] & EPHEMERAL)
        by_index: dict[int, UploadedFile] = {}
        for pos, f in enumerate(files):
            m = re.fullmatch(r"files\[(\d+)\]", f.field)
            by_index[int(m.group(1)) if m else pos] = f
        used: set[int] = set()
        if payload.get("attachments") is not None:
            existing = {a["id"]: a for a in msg["attachments"]}
            result = []
            for a in payload["attachments"]:
                aid = str(a.get("id"))
                if aid in existing:
                    kept = dict(existing[aid])
                    if "description" in a:
                        kept["description"] = a["description"]
                    result.append(kept)
                    continue
                with contextlib.suppress(ValueError):
                    idx = int(aid)
                    if idx in by_index:
                        used.add(idx)
                        result.append(
                            self._file_attachment(
                                by_index[idx],
                                msg,
                                a.get("filename"),
                                a.get("description"),
                                ephemeral,
                            )
                        )
            msg["attachments"] = result
        for idx in sorted(by_index):
            if idx not in used:
                msg["attachments"].append(
                    self._file_attachment(by_index[idx], msg, None, None, ephemeral)
                )

    def _file_attachment(
        self,
        f: UploadedFile,
        msg: dict[str, Any],
        filename: str | None,
        description: str | None,
        ephemeral: bool,
    ) -> dict[str, Any]:
        name = filename or f.filename
        ctype = mimetypes.guess_type(name)[0]
        if ctype is None:
            ctype = f.content_type if f.content_type != "application/octet-stream" else ctype
        return self._register_attachment(
            name,
            f.data,
            ctype or "application/octet-stream",
            channel_id=int(msg["channel_id"]),
            description=description,
            ephemeral=ephemeral,
        )

    # ------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ------------------------------------------------------------------------------------------

    def _build_routes(self) -> None:
        app = r"/applications/(?P<app_id>\d+)(?:/guilds/(?P<guild_id>\d+))?/commands"
        wh = r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)"
        whm = wh + r"/messages/(?P<message_id>@original|\d+)"
        ch = r"/channels/(?P<channel_id>\d+)"
        chm = ch + r"/messages/(?P<message_id>\d+)"
        g = r"/guilds/(?P<guild_id>\d+)"
        table: list[tuple[str, str, Handler, bool]] = [
            # (method, path regex, handler, needs bot auth)
            ("GET", r"/gateway", self._r_gateway, False),
            ("GET", r"/gateway/bot", self._r_gateway_bot, True),
            ("GET", r"/users/@me", self._r_me, True),
            ("GET", r"/users/(?P<user_id>\d+)", self._r_user, True),
            ("POST", r"/users/@me/channels", self._r_create_dm, True),
            ("GET", r"/(?:oauth2/)?applications/@me", self._r_app, True),
            ("PATCH", r"/applications/@me", self._r_app, True),
            ("GET", app + r"/permissions", self._r_empty_list, True),
            ("GET", app, self._r_commands_list, True),
            ("PUT", app, self._r_commands_bulk, True),
            ("POST", app, self._r_command_upsert, True),
            ("GET", app + r"/(?P<command_id>\d+)", self._r_command_get, True),
            ("PATCH", app + r"/(?P<command_id>\d+)", self._r_command_edit, True),
            ("DELETE", app + r"/(?P<command_id>\d+)", self._r_command_delete, True),
            ("GET", r"/applications/\d+/entitlements", self._r_empty_list, True),
            ("GET", r"/applications/\d+/emojis", self._r_app_emojis, True),
            (
                "POST",
                r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback",
                self._r_callback,
                False,
            ),
            ("POST", wh, self._r_webhook_execute, False),
            ("GET", whm, self._r_webhook_message_get, False),
            ("PATCH", whm, self._r_webhook_message_edit, False),
            ("DELETE", whm, self._r_webhook_message_delete, False),
            ("GET", ch, self._r_channel, True),
            ("GET", ch + r"/messages", self._r_history, True),
            ("POST", ch + r"/messages", self._r_channel_message_create, True),
            ("GET", chm, self._r_channel_message_get, True),
            ("PATCH", chm, self._r_channel_message_edit, True),
            ("DELETE", chm, self._r_channel_message_delete, True),
            ("POST", ch + r"/typing", self._r_no_content, True),
            ("PUT", chm + r"/reactions/[^/]+/@me", self._r_no_content, True),
            ("DELETE", chm + r"/reactions/[^/]+/@me", self._r_no_content, True),
            ("GET", g, self._r_guild, True),
            ("GET", g + r"/channels", self._r_guild_channels, True),
            ("GET", g + r"/roles", self._r_guild_roles, True),
            ("GET", g + r"/members", self._r_guild_members, True),
            ("GET", g + r"/members/(?P<user_id>\d+)", self._r_guild_member, True),
            ("GET", r"/cdn/(?P<rest>.+)", self._r_cdn, False),
        ]
        self._routes = [(m, re.compile(p), h, auth) for m, p, h, auth in table]

    def _interaction_id_for(self, path: str) -> int | None:
        m = re.fullmatch(r"/interactions/(\d+)/[^/]+/callback", path)
        if m:
            return int(m.group(1))
        m = re.match(r"/webhooks/\d+/([^/]+)", path)
        if m and m.group(1) in self._by_token:
            return self._by_token[m.group(1)].id
        return None

    async def _read_body(
        self, request: web.Request
    ) -> tuple[Any, list[UploadedFile], dict[str, str]]:
        files: list[UploadedFile] = []
        form: dict[str, str] = {}
        body: Any = None
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if part.filename:
                    data = bytes(await part.read(decode=False))
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    files.append(UploadedFile(part.filename, data, ctype, name))
                else:
                    text = await part.text()
                    if name == "payload_json":
                        body = json.loads(text)
                    else:
                        form[name] = text
        elif request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
        return body, files, form

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw_path = request.path
        m = _API_PREFIX.match(raw_path)
        is_api = m is not None
        path = m.group(1) if m else raw_path
        body, files, form = await self._read_body(request)
        call = Call(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body,
            files=files,
            headers=dict(request.headers),
            timestamp=arrived,
            form=form,
        )
        call.interaction_id = self._interaction_id_for(path)
        status: int
        out: Any
        headers: dict[str, str] = {}
        fault = next((f for f in self.faults if f.matches(call.method, path)), None)
        if fault is not None:
            if fault.times is not None:
                fault.times -= 1
            fault.hits.append(call)
            call.fault = fault
            if fault.delay:
                await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            status, out, headers = fault.status, fault.body, dict(fault.headers)
        else:
            status, out, headers = await self._route(call, request, is_api)
        return self._respond(call, status, out, headers)

    async def _route(
        self, call: Call, request: web.Request, is_api: bool
    ) -> tuple[int, Any, dict[str, str]]:
        for method, pattern, handler, needs_auth in self._routes:
            if method != call.method:
                continue
            m = pattern.fullmatch(call.path)
            if m is None:
                continue
            if is_api == (handler == self._r_cdn):
                continue
            if needs_auth and not request.headers.get("Authorization", "").startswith("Bot "):
                return 401, {"message": "401: Unauthorized", "code": 0}, {}
            params = {k: v for k, v in m.groupdict().items() if v is not None}
            try:
                result = await handler(call, **params)
            except _HTTPError as e:
                return e.status, e.body, e.headers
            if len(result) == 2:
                return result[0], result[1], {}
            return result
        call.unhandled = True
        return 404, {"message": "404: Not Found", "code": 0}, {}

    def _respond(
        self, call: Call, status: int, out: Any, headers: dict[str, str]
    ) -> web.StreamResponse:
        call.status = status
        call.response = out
        self.calls.append(call)
        self._changed()
        headers = {"Via": "1.1 google", **headers}
        if isinstance(out, tuple):  # (bytes, content_type) from the CDN
            data, ctype = out
            call.response = None
            return web.Response(
                status=status, body=data, headers={**headers, "Content-Type": ctype}
            )
        if out is None or status == 204:
            return web.Response(status=status, headers=headers)
        body = json.dumps(out).encode()
        return web.Response(
            status=status, body=body, headers={**headers, "Content-Type": "application/json"}
        )

    # ------------------------------------------------------------------------------------------
    # REST routes: login, gateway, users, app
    # ------------------------------------------------------------------------------------------

    async def _r_gateway(self, call: Call) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _r_gateway_bot(self, call: Call) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": self.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14400000,
                "max_concurrency": 1,
            },
        }

    def _bot_user_payload(self) -> dict[str, Any]:
        data = self.bot_user.to_dict()
        data.update({"verified": True, "mfa_enabled": False, "locale": "en-US", "email": None})
        return data

    async def _r_me(self, call: Call) -> tuple[int, Any]:
        return 200, self._bot_user_payload()

    async def _r_user(self, call: Call, user_id: str) -> tuple[int, Any]:
        user = self.users.get(int(user_id))
        if user is None:
            return 404, {"code": 10013, "message": "Unknown User"}
        return 200, user.to_dict()

    async def _r_create_dm(self, call: Call) -> tuple[int, Any]:
        rid = int((call.json or {}).get("recipient_id", 0))
        user = self.users.get(rid)
        if user is None:
            return 400, form_error({"recipient_id": {"_errors": [{"code": "X", "message": "?"}]}})
        return 200, self.dm_channel(user)

    def app_info(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "owner": self._app_owner(),
            "team": self.team,
            "bot": self._bot_user_payload(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
        }

    def _app_owner(self) -> dict[str, Any]:
        if self.team is None:
            return self.owner.to_dict()
        pseudo = FakeUser(int(self.team["id"]), f"team{self.team['id']}").to_dict()
        return {**pseudo, "flags": 1 << 10, "public_flags": 1 << 10}

    async def _r_app(self, call: Call) -> tuple[int, Any]:
        return 200, self.app_info()

    async def _r_empty_list(self, call: Call, **_: str) -> tuple[int, Any]:
        return 200, []

    async def _r_app_emojis(self, call: Call) -> tuple[int, Any]:
        return 200, {"items": []}

    async def _r_no_content(self, call: Call, **_: str) -> tuple[int, Any]:
        return 204, None

    # ------------------------------------------------------------------------------------------
    # REST routes: application commands
    # ------------------------------------------------------------------------------------------

    def _command_scope(self, app_id: str, guild_id: str | None) -> list[dict[str, Any]]:
        if int(app_id) != self.application_id:
            raise _HTTPError(404, {"code": 10002, "message": "Unknown Application"})
        if guild_id is None:
            return self.commands
        gid = int(guild_id)
        if gid not in self.guilds:
            raise _HTTPError(403, {"code": 50001, "message": "Missing Access"})
        return self.guild_commands.setdefault(gid, [])

    def _stored_command(self, body: dict[str, Any], guild_id: str | None) -> dict[str, Any]:
        gid = int(guild_id) if guild_id else None
        ctype = int(body.get("type", 1))
        key = (gid, body["name"], ctype)
        cid = self._command_ids.setdefault(key, self.snowflakes.next())
        cmd: dict[str, Any] = {
            "id": str(cid),
            "application_id": str(self.application_id),
            "version": str(self.snowflakes.next()),
            "type": ctype,
            "name": body["name"],
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            "name_localizations": None,
            "description_localizations": None,
        }
        cmd.update(copy.deepcopy(body))
        cmd["type"] = ctype
        if cmd.get("default_member_permissions") is not None:
            cmd["default_member_permissions"] = str(int(cmd["default_member_permissions"]))
        if gid is not None:
            cmd["guild_id"] = str(gid)
        return cmd

    async def _r_commands_list(self, call: Call, app_id: str, guild_id: str | None = None):
        return 200, self._command_scope(app_id, guild_id)

    async def _r_commands_bulk(self, call: Call, app_id: str, guild_id: str | None = None):
        scope = self._command_scope(app_id, guild_id)
        body = call.json
        if not isinstance(body, list):
            return 400, form_error({"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "list"}]})
        error = validate_commands(body)
        if error:
            return 400, error
        stored = [self._stored_command(c, guild_id) for c in body]
        scope[:] = stored
        return 200, stored

    async def _r_command_upsert(self, call: Call, app_id: str, guild_id: str | None = None):
        scope = self._command_scope(app_id, guild_id)
        body = call.json or {}
        error = validate_commands([body])
        if error:
            return 400, error
        cmd = self._stored_command(body, guild_id)
        for i, c in enumerate(scope):
            if c["id"] == cmd["id"]:
                scope[i] = cmd
                return 200, cmd
        scope.append(cmd)
        return 201, cmd

    def _command_by_id(self, scope: list[dict[str, Any]], command_id: str) -> dict[str, Any]:
        for c in scope:
            if c["id"] == command_id:
                return c
        raise _HTTPError(404, {"code": 10063, "message": "Unknown application command"})

    async def _r_command_get(self, call: Call, app_id: str, command_id: str, guild_id=None):
        return 200, self._command_by_id(self._command_scope(app_id, guild_id), command_id)

    async def _r_command_edit(self, call: Call, app_id: str, command_id: str, guild_id=None):
        cmd = self._command_by_id(self._command_scope(app_id, guild_id), command_id)
        cmd.update(copy.deepcopy(call.json or {}))
        return 200, cmd

    async def _r_command_delete(self, call: Call, app_id: str, command_id: str, guild_id=None):
        scope = self._command_scope(app_id, guild_id)
        scope.remove(self._command_by_id(scope, command_id))
        return 204, None

    # ------------------------------------------------------------------------------------------
    # REST routes: interaction callback and webhooks
    # ------------------------------------------------------------------------------------------

    async def _r_callback(self, call: Call, interaction_id: str, token: str) -> tuple[int, Any]:
        h = self.interactions.get(int(interaction_id))
        if h is None or h.token != token:
            return 404, UNKNOWN_INTERACTION
        deadline = self.callback_deadline
        if h.expired or (deadline is not None and call.timestamp - h.dispatched_at > deadline):
            return 404, UNKNOWN_INTERACTION
        if h.acknowledged_type is not None:
            return 400, ALREADY_ACKNOWLEDGED
        body = call.json if isinstance(call.json, dict) else {}
        ctype = body.get("type")
        data = body.get("data") or {}
        allowed = {
            APPLICATION_COMMAND: {4, 5, 9, 12},
            MESSAGE_COMPONENT: {4, 5, 6, 7, 9, 12},
            AUTOCOMPLETE: {8},
            MODAL_SUBMIT: {4, 5, 6, 7} if h.message_id is not None else {4, 5},
        }[h.type]
        if ctype not in allowed:
            return 400, form_error(
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_CALLBACK_TYPE_INVALID",
                                "message": f"Callback type {ctype} is not valid for "
                                f"interaction type {h.type}",
                            }
                        ]
                    }
                }
            )
        error = None
        if ctype == 4:
            error = validate_message(
                data, call.files, creating=True, upload_limit=self.upload_limit, base=["data"]
            )
        elif ctype == 7:
            error = validate_message(
                data, call.files, creating=False, upload_limit=self.upload_limit, base=["data"]
            )
        elif ctype == 9:
            error = validate_modal(data)
        elif ctype == 8 and len(data.get("choices") or []) > 25:
            error = (
                400,
                form_error(
                    {
                        "data": {
                            "choices": {
                                "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "25"}]
                            }
                        }
                    }
                ),
            )
        if error:
            return error
        h.acknowledged_type = ctype
        info: dict[str, Any] = {
            "id": str(h.id),
            "type": h.type,
            "response_message_loading": False,
            "response_message_ephemeral": False,
        }
        resource: dict[str, Any] | None = {"type": ctype}
        msg: dict[str, Any] | None = None
        if ctype in (4, 5):
            msg_type = 0
            if h.type == APPLICATION_COMMAND:
                msg_type = 20 if h.payload["data"].get("type", 1) == 1 else 23
            flags = None
            payload = data
            if ctype == 5:
                flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
                payload = {}
            msg = self._bot_message(
                payload,
                call.files,
                channel_id=h.channel_id,
                guild=h.guild,
                handle=h,
                msg_type=msg_type,
                flags=flags,
            )
            h.original_message = msg
            info["response_message_loading"] = ctype == 5
        elif ctype in (6, 7):
            target = self.get_message(h.message_id) if h.message_id is not None else None
            h.original_message = target
            if ctype == 7 and target is not None:
                self._apply_content(target, data, call.files, editing=True)
                target["edited_timestamp"] = now_iso()
                msg = target
        elif ctype == 8:
            h.choices = list(data.get("choices") or [])
            resource = None
        elif ctype == 9:
            h.modal = copy.deepcopy(data)
            self.modals.append((h, h.modal))
            resource = None
        if msg is not None:
            info["response_message_id"] = msg["id"]
            info["response_message_ephemeral"] = bool(msg["flags"] & EPHEMERAL)
            resource = {"type": ctype, "message": msg}
        return 200, {"interaction": info, "resource": resource}

    def _webhook_handle(self, call: Call, app_id: str, token: str) -> InteractionHandle:
        h = self._by_token.get(token)
        if h is None or int(app_id) != self.application_id:
            raise _HTTPError(404, UNKNOWN_WEBHOOK)
        if h.expired:
            raise _HTTPError(401, INVALID_WEBHOOK_TOKEN)
        if h.acknowledged_type is None:
            # Discord creates the interaction webhook only once the interaction is acknowledged.
            raise _HTTPError(404, UNKNOWN_WEBHOOK)
        return h

    def _check_message(self, call: Call, *, creating: bool) -> dict[str, Any]:
        payload = call.json if isinstance(call.json, dict) else {}
        error = validate_message(
            payload, call.files, creating=creating, upload_limit=self.upload_limit
        )
        if error:
            raise _HTTPError(*error)
        return payload

    async def _r_webhook_execute(self, call: Call, app_id: str, token: str) -> tuple[int, Any]:
        h = self._webhook_handle(call, app_id, token)
        payload = self._check_message(call, creating=True)
        original = h.original_message
        if h.acknowledged_type == 5 and original is not None and original["flags"] & LOADING:
            # The first follow-up after a "thinking" defer replaces the loading message; its
            # ephemerality is the defer's, not the follow-up's (real Discord behaviour).
            original["flags"] &= ~LOADING
            self._apply_content(original, payload, call.files, editing=False)
            msg = original
        else:
            msg = self._bot_message(
                payload, call.files, channel_id=h.channel_id, guild=h.guild, handle=h
            )
        h.followup_messages.append(msg)
        if call.query.get("wait") in _TRUE:
            return 200, msg
        return 204, None

    def _webhook_message(self, h: InteractionHandle, message_id: str) -> dict[str, Any]:
        if message_id == "@original":
            msg = h.original_message
        else:
            msg = next((m for m in h.messages if m["id"] == message_id), None)
        if msg is None or int(msg["id"]) in self.deleted_message_ids:
            raise _HTTPError(404, UNKNOWN_MESSAGE)
        return msg

    async def _r_webhook_message_get(self, call: Call, app_id: str, token: str, message_id: str):
        h = self._webhook_handle(call, app_id, token)
        return 200, self._webhook_message(h, message_id)

    async def _r_webhook_message_edit(self, call: Call, app_id: str, token: str, message_id: str):
        h = self._webhook_handle(call, app_id, token)
        msg = self._webhook_message(h, message_id)
        payload = self._check_message(call, creating=False)
        if msg["flags"] & LOADING:
            msg["flags"] &= ~LOADING
        else:
            msg["edited_timestamp"] = now_iso()
        self._apply_content(msg, payload, call.files, editing=True)
        return 200, msg

    async def _r_webhook_message_delete(self, call: Call, app_id: str, token: str, message_id: str):
        h = self._webhook_handle(call, app_id, token)
        msg = self._webhook_message(h, message_id)
        self.deleted_message_ids.add(int(msg["id"]))
        return 204, None

    # ------------------------------------------------------------------------------------------
    # REST routes: channels, messages, guilds, CDN
    # ------------------------------------------------------------------------------------------

    async def _r_channel(self, call: Call, channel_id: str) -> tuple[int, Any]:
        ch, _ = self._find_channel(int(channel_id))
        return 200, ch

    def _channel_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._find_channel(int(channel_id))
        msg = self._messages_by_id.get(int(message_id))
        if (
            msg is None
            or msg["channel_id"] != channel_id
            or int(message_id) in self.deleted_message_ids
            or msg["flags"] & EPHEMERAL
        ):
            raise _HTTPError(404, UNKNOWN_MESSAGE)
        return msg

    async def _r_history(self, call: Call, channel_id: str) -> tuple[int, Any]:
        self._find_channel(int(channel_id))
        limit = int(call.query.get("limit", 50))
        found = [
            m
            for m in self._messages_by_id.values()
            if m["channel_id"] == channel_id
            and int(m["id"]) not in self.deleted_message_ids
            and not m["flags"] & EPHEMERAL
        ]
        found.sort(key=lambda m: int(m["id"]), reverse=True)
        return 200, found[:limit]

    async def _r_channel_message_create(self, call: Call, channel_id: str) -> tuple[int, Any]:
        ch, guild = self._find_channel(int(channel_id))
        payload = self._check_message(call, creating=True)
        payload = {**payload, "flags": int(payload.get("flags") or 0) & ~EPHEMERAL}
        msg = self._bot_message(payload, call.files, channel_id=int(channel_id), guild=guild)
        ch["last_message_id"] = msg["id"]
        return 200, msg

    async def _r_channel_message_get(self, call: Call, channel_id: str, message_id: str):
        return 200, self._channel_message(channel_id, message_id)

    async def _r_channel_message_edit(self, call: Call, channel_id: str, message_id: str):
        msg = self._channel_message(channel_id, message_id)
        if msg["author"]["id"] != str(self.bot_user.id):
            return 403, {"code": 50005, "message": "Cannot edit a message authored by another user"}
        payload = self._check_message(call, creating=False)
        self._apply_content(msg, payload, call.files, editing=True)
        msg["edited_timestamp"] = now_iso()
        return 200, msg

    async def _r_channel_message_delete(self, call: Call, channel_id: str, message_id: str):
        msg = self._channel_message(channel_id, message_id)
        self.deleted_message_ids.add(int(msg["id"]))
        return 204, None

    def _guild(self, guild_id: str) -> FakeGuild:
        guild = self.guilds.get(int(guild_id))
        if guild is None:
            raise _HTTPError(404, {"code": 10004, "message": "Unknown Guild"})
        return guild

    async def _r_guild(self, call: Call, guild_id: str) -> tuple[int, Any]:
        return 200, self._guild(guild_id).rest_payload()

    async def _r_guild_channels(self, call: Call, guild_id: str) -> tuple[int, Any]:
        return 200, list(self._guild(guild_id).channels.values())

    async def _r_guild_roles(self, call: Call, guild_id: str) -> tuple[int, Any]:
        return 200, list(self._guild(guild_id).roles.values())

    async def _r_guild_members(self, call: Call, guild_id: str) -> tuple[int, Any]:
        guild = self._guild(guild_id)
        return 200, [guild.member_payload(uid) for uid in guild.members]

    async def _r_guild_member(self, call: Call, guild_id: str, user_id: str) -> tuple[int, Any]:
        guild = self._guild(guild_id)
        if int(user_id) not in guild.members:
            return 404, {"code": 10007, "message": "Unknown Member"}
        return 200, guild.member_payload(int(user_id))

    async def _r_cdn(self, call: Call, rest: str) -> tuple[int, Any]:
        entry = self._cdn.get(call.path)
        if entry is None:
            return 404, {"message": "404: Not Found", "code": 0}
        return 200, entry

    # ------------------------------------------------------------------------------------------
    # Gateway
    # ------------------------------------------------------------------------------------------

    def _ready_sessions(self) -> list[_GatewaySession]:
        return [s for s in self._sessions if s.ready and not s.ws.closed]

    @property
    def connected(self) -> bool:
        """True if at least one bot has IDENTIFYed (or RESUMEd) on the fake gateway."""
        return bool(self._ready_sessions())

    async def dispatch_event(self, event: str, data: Any) -> None:
        """Send a DISPATCH (op 0) event to every identified gateway session that serves its
        guild (all of them, unless bots are sharded: see ``_GatewaySession.serves``)."""
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        if event.startswith("GUILD_") and isinstance(data, dict) and guild_id is None:
            guild_id = data.get("id")
        for sess in self._ready_sessions():
            if sess.serves(None if guild_id is None else int(guild_id)):
                await sess.send(0, copy.deepcopy(data), event)

    def sessions(self) -> list[_GatewaySession]:
        """The identified gateway sessions (one per connected shard), in connection order."""
        return self._ready_sessions()

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; discord.py reconnects and RESUMEs (answered with RESUMED)."""
        for sess in self._ready_sessions():
            await sess.send(7, None)

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        sess = _GatewaySession(ws)
        self._sessions.append(sess)
        try:
            await sess.send(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                frame = json.loads(msg.data)
                self.gateway_received.append(frame)
                await self._on_gateway_frame(sess, frame)
                self._changed()
        finally:
            with contextlib.suppress(ValueError):
                self._sessions.remove(sess)
            self._changed()
        return ws

    async def _on_gateway_frame(self, sess: _GatewaySession, frame: dict[str, Any]) -> None:
        op, d = frame.get("op"), frame.get("d")
        if op == 1:
            await sess.send(11, None)
        elif op == 2:
            await self._identify(sess, d or {})
        elif op == 6:
            old = self._sessions_by_id.get((d or {}).get("session_id", ""))
            if old is None:
                await sess.send(9, False)
                return
            sess.session_id, sess.seq, sess.identify = old.session_id, old.seq, old.identify
            self._sessions_by_id[old.session_id] = sess  # type: ignore[index]
            sess.ready = True
            await sess.send(0, {}, "RESUMED")
        elif op == 8:
            gid = int((d or {}).get("guild_id", 0))
            guild = self.guilds.get(gid)
            members = [guild.member_payload(uid) for uid in guild.members] if guild else []
            await sess.send(
                0,
                {
                    "guild_id": str(gid),
                    "members": members,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                    "nonce": (d or {}).get("nonce"),
                },
                "GUILD_MEMBERS_CHUNK",
            )

    async def _identify(self, sess: _GatewaySession, d: dict[str, Any]) -> None:
        self.identify_payloads.append(d)
        sess.identify = d
        sess.session_id = secrets.token_hex(16)
        self._sessions_by_id[sess.session_id] = sess
        guilds = [g for gid, g in self.guilds.items() if sess.serves(gid)]
        ready = {
            "v": 10,
            "user": self._bot_user_payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": sess.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": d.get("shard") or [0, 1],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "session_type": "normal",
        }
        await sess.send(0, ready, "READY")
        for guild in guilds:
            await sess.send(0, guild.gateway_payload(), "GUILD_CREATE")
        sess.ready = True

    # ------------------------------------------------------------------------------------------
    # Interaction builders
    # ------------------------------------------------------------------------------------------

    def _context(
        self,
        itype: int,
        *,
        user: FakeUser | None,
        guild: FakeGuild | None,
        channel: dict[str, Any] | int | None,
        dm: bool,
        permissions: int | discord.Permissions | None,
        locale: str,
    ) -> tuple[dict[str, Any], FakeUser, FakeGuild | None, dict[str, Any], int]:
        user = user or self.user
        iid = self.snowflakes.next()
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": f"fake-token-{iid}-{secrets.token_urlsafe(48)}",
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit,
        }
        if isinstance(permissions, discord.Permissions):
            permissions = permissions.value
        if dm:
            ch = self.dm_channel(user)
            perms = permissions if permissions is not None else EVERYONE_PERMISSIONS
            payload.update(
                {
                    "channel_id": ch["id"],
                    "channel": dict(ch),
                    "user": user.to_dict(),
                    "app_permissions": str(BOT_PERMISSIONS),
                    "authorizing_integration_owners": {"0": "0"},
                    "context": 1,
                }
            )
            return payload, user, None, ch, perms
        guild = guild or self.guild
        ch = guild.find_channel(channel if channel is not None else guild.text_channel)
        if user.id not in guild.members:
            guild.members[user.id] = FakeMember(user)
        perms = permissions if permissions is not None else guild.permissions_for(user.id)
        member = guild.member_payload(user.id)
        member["permissions"] = str(perms)
        payload.update(
            {
                "guild_id": str(guild.id),
                "guild": guild.interaction_guild(),
                "guild_locale": "en-US",
                "channel_id": ch["id"],
                "channel": {**ch, "permissions": str(perms)},
                "member": member,
                "app_permissions": str(guild.permissions_for(self.bot_user.id)),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        )
        return payload, user, guild, ch, perms

    async def _dispatch_interaction(self, handle: InteractionHandle) -> InteractionHandle:
        if not self._ready_sessions():
            raise RuntimeError(
                "no bot is connected to the fake gateway; log in first (see logged_in())"
            )
        self.interactions[handle.id] = handle
        self._by_token[handle.token] = handle
        handle.dispatched_at = time.monotonic()
        await self.dispatch_event("INTERACTION_CREATE", handle.payload)
        return handle

    def find_command(
        self, name: str, ctype: int = 1, guild: FakeGuild | None = None
    ) -> dict[str, Any] | None:
        """The synced command (guild-specific first, then global) with this name and type."""
        scopes = []
        if guild is not None:
            scopes.append(self.guild_commands.get(guild.id, []))
        scopes.append(self.commands)
        for scope in scopes:
            for cmd in scope:
                if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
                    return cmd
        return None

    def _require_command(
        self, name: str, ctype: int, guild: FakeGuild | None
    ) -> dict[str, Any] | None:
        cmd = self.find_command(name, ctype, guild)
        if cmd is None and self.require_synced:
            synced = [c["name"] for c in self.commands] + [
                c["name"] for cs in self.guild_commands.values() for c in cs
            ]
            raise InvalidInteraction(
                f"command {name!r} (type {ctype}) was never synced; synced: {synced}. Call "
                "bot.tree.sync() in the test/setup_hook or set fake.require_synced = False."
            )
        return cmd

    def _check_visible(
        self,
        cmd: dict[str, Any],
        *,
        dm: bool,
        perms: int,
        channel: dict[str, Any],
    ) -> None:
        contexts = cmd.get("contexts")
        if dm and (
            (contexts is not None and 1 not in contexts)
            or (contexts is None and cmd.get("dm_permission") is False)
            or cmd.get("guild_id")
        ):
            raise InvalidInteraction(f"command {cmd['name']!r} is not available in DMs")
        if not dm and contexts is not None and 0 not in contexts:
            raise InvalidInteraction(f"command {cmd['name']!r} is not available in guilds")
        required = cmd.get("default_member_permissions")
        if not dm and required is not None:
            need = int(required)
            all_perms = discord.Permissions.all().value
            if perms != all_perms and (perms & need) != need:
                raise InvalidInteraction(
                    f"command {cmd['name']!r} needs permissions {need} "
                    f"(default_member_permissions); the user has {perms}"
                )
        if cmd.get("nsfw") and not channel.get("nsfw") and not dm:
            raise InvalidInteraction(f"command {cmd['name']!r} is age-restricted (nsfw)")

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, FakeUser):
            return 6
        if isinstance(value, dict):
            if "filename" in value:
                return 11
            if "type" in value and "name" in value:
                return 7
            if "permissions" in value:
                return 8
        return 3

    def _resolve_value(
        self,
        otype: int,
        value: Any,
        resolved: dict[str, Any],
        guild: FakeGuild | None,
        perms: int,
    ) -> Any:
        if otype == 6 or (
            otype == 9 and (isinstance(value, FakeUser) or _jsonable_id(value) in self.users)
        ):
            uid = _jsonable_id(value)
            user = value if isinstance(value, FakeUser) else self.users.get(uid)
            if user is None:
                raise InvalidInteraction(f"unknown user {uid}")
            resolved.setdefault("users", {})[str(uid)] = user.to_dict()
            if guild is not None and uid in guild.members:
                member = guild.member_payload(uid, with_user=False)
                member["permissions"] = str(guild.permissions_for(uid))
                resolved.setdefault("members", {})[str(uid)] = member
            return str(uid)
        if otype in (8, 9):
            rid = _jsonable_id(value)
            role = guild.roles.get(rid) if guild is not None else None
            if role is None:
                raise InvalidInteraction(f"unknown role {rid}")
            resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(role)
            return str(rid)
        if otype == 7:
            cid = _jsonable_id(value)
            ch, _ = self._find_channel(cid)
            resolved.setdefault("channels", {})[str(cid)] = {
                "id": ch["id"],
                "name": ch.get("name", ""),
                "type": ch["type"],
                "permissions": str(perms),
                "nsfw": ch.get("nsfw", False),
                "parent_id": ch.get("parent_id"),
                "position": ch.get("position", 0),
                "flags": 0,
                "rate_limit_per_user": 0,
                "last_message_id": ch.get("last_message_id"),
                "topic": ch.get("topic"),
            }
            return str(cid)
        if otype == 11:
            if isinstance(value, dict):
                att = value
            else:
                att = self.attachments.get(int(value))
                if att is None:
                    raise InvalidInteraction(f"unknown attachment {value}")
            resolved.setdefault("attachments", {})[str(att["id"])] = copy.deepcopy(att)
            return str(att["id"])
        return value

    @staticmethod
    def _check_option(opt: dict[str, Any], value: Any) -> None:
        name, otype = opt["name"], opt["type"]
        expected = {3: str, 4: int, 5: bool, 10: (int, float)}.get(otype)
        if expected is not None and (
            not isinstance(value, expected) or (otype in (4, 10) and isinstance(value, bool))
        ):
            raise InvalidInteraction(f"option {name!r} expects type {otype}, got {value!r}")
        choices = opt.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise InvalidInteraction(f"option {name!r}: {value!r} is not one of the choices")
        if otype in (4, 10):
            if opt.get("min_value") is not None and value < opt["min_value"]:
                raise InvalidInteraction(f"option {name!r}: {value} < min_value {opt['min_value']}")
            if opt.get("max_value") is not None and value > opt["max_value"]:
                raise InvalidInteraction(f"option {name!r}: {value} > max_value {opt['max_value']}")
        if otype == 3:
            if len(value) < (opt.get("min_length") or 0):
                raise InvalidInteraction(f"option {name!r}: shorter than {opt['min_length']}")
            if opt.get("max_length") is not None and len(value) > opt["max_length"]:
                raise InvalidInteraction(f"option {name!r}: longer than {opt['max_length']}")
            if not value.strip():
                raise InvalidInteraction(f"option {name!r}: Discord does not send blank strings")

    def _build_options(
        self,
        schema: list[dict[str, Any]] | None,
        values: Mapping[str, Any] | Sequence[dict[str, Any]] | None,
        resolved: dict[str, Any],
        guild: FakeGuild | None,
        perms: int,
        *,
        validate: bool,
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            return copy.deepcopy(list(values))
        by_name = {o["name"]: o for o in schema} if schema is not None else None
        out = []
        for key, value in values.items():
            opt = by_name.get(key) if by_name is not None else None
            if by_name is not None and opt is None:
                raise InvalidInteraction(
                    f"unknown option {key!r}; command options: {list(by_name)}"
                )
            otype = opt["type"] if opt is not None else self._infer_type(value)
            if key == focused:
                out.append({"name": key, "type": otype, "value": value, "focused": True})
                continue
            if validate and opt is not None and focused is None:
                if otype not in (6, 7, 8, 9, 11):
                    self._check_option(opt, value)
                elif otype == 7 and opt.get("channel_types"):
                    ch, _ = self._find_channel(_jsonable_id(value))
                    if ch["type"] not in opt["channel_types"]:
                        raise InvalidInteraction(f"option {key!r}: wrong channel type")
            out.append(
                {
                    "name": key,
                    "type": otype,
                    "value": self._resolve_value(otype, value, resolved, guild, perms),
                }
            )
        if by_name is not None:
            if validate and focused is None:
                missing = [
                    o["name"] for o in schema or [] if o.get("required") and o["name"] not in values
                ]
                if missing:
                    raise InvalidInteraction(f"missing required options: {missing}")
            order = list(by_name)
            out.sort(key=lambda o: order.index(o["name"]))
        if focused is not None and focused not in values:
            raise InvalidInteraction(f"focused option {focused!r} must be given in options")
        return out

    def _command_data(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[dict[str, Any]] | None,
        *,
        guild: FakeGuild | None,
        dm: bool,
        perms: int,
        channel: dict[str, Any],
        validate: bool,
        focused: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        parts = name.split()
        cmd = self._require_command(parts[0], 1, guild)
        if cmd is not None and validate:
            self._check_visible(cmd, dm=dm, perms=perms, channel=channel)
        schema: list[dict[str, Any]] | None = cmd.get("options") or [] if cmd else None
        wrappers: list[tuple[int, str]] = []
        for i, part in enumerate(parts[1:]):
            if schema is not None:
                sub = next(
                    (o for o in schema if o["name"] == part and o.get("type") in (1, 2)), None
                )
                if sub is None:
                    raise InvalidInteraction(f"{parts[0]!r} has no subcommand/group {part!r}")
                wrappers.append((sub["type"], part))
                schema = sub.get("options") or []
            else:
                wrappers.append((1 if i == len(parts) - 2 else 2, part))
        if schema is not None and any(o.get("type") in (1, 2) for o in schema):
            raise InvalidInteraction(f"{name!r} is a group: name a subcommand, e.g. '{name} <sub>'")
        resolved: dict[str, Any] = {}
        opts = self._build_options(
            schema, options, resolved, guild, perms, validate=validate, focused=focused
        )
        for wtype, wname in reversed(wrappers):
            opts = [{"type": wtype, "name": wname, "options": opts}]
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self.snowflakes.next()),
            "name": parts[0],
            "type": 1,
        }
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return data, cmd

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[dict[str, Any]] | None = None,
        *,
        user: FakeUser | None = None,
        guild: FakeGuild | None = None,
        channel: dict[str, Any] | int | None = None,
        dm: bool = False,
        permissions: int | discord.Permissions | None = None,
        locale: str = "en-US",
        resolved: Mapping[str, Any] | None = None,
        validate: bool | None = None,
    ) -> InteractionHandle:
        """Invoke a chat-input command; ``name`` may be ``"cmd"``, ``"cmd sub"`` or
        ``"cmd group sub"``. ``options`` maps option name -> value (str/int/float/bool,
        FakeUser for users, channel/role dicts, attachment dicts from ``add_attachment``) or is a
        raw list of option dicts placed under the subcommand.
        """
        validate = self.validate if validate is None else validate
        payload, user, guild, ch, perms = self._context(
            APPLICATION_COMMAND,
            user=user,
            guild=guild,
            channel=channel,
            dm=dm,
            permissions=permissions,
            locale=locale,
        )
        data, cmd = self._command_data(
            name, options, guild=guild, dm=dm, perms=perms, channel=ch, validate=validate
        )
        if resolved:
            for key, items in resolved.items():
                data.setdefault("resolved", {}).setdefault(key, {}).update(copy.deepcopy(items))
        payload["data"] = data
        handle = InteractionHandle(
            self, payload, user=user, guild=guild, channel_id=int(ch["id"]), command=cmd
        )
        return await self._dispatch_interaction(handle)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[dict[str, Any]] | None = None,
        *,
        focused: str,
        user: FakeUser | None = None,
        guild: FakeGuild | None = None,
        channel: dict[str, Any] | int | None = None,
        dm: bool = False,
        permissions: int | discord.Permissions | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Autocomplete request (interaction type 4) with ``focused`` the option being typed.
        Await ``handle.wait_choices()`` for the bot's type-8 choices."""
        payload, user, guild, ch, perms = self._context(
            AUTOCOMPLETE,
            user=user,
            guild=guild,
            channel=channel,
            dm=dm,
            permissions=permissions,
            locale=locale,
        )
        data, cmd = self._command_data(
            name,
            options,
            guild=guild,
            dm=dm,
            perms=perms,
            channel=ch,
            validate=self.validate,
            focused=focused,
        )
        payload["data"] = data
        handle = InteractionHandle(
            self, payload, user=user, guild=guild, channel_id=int(ch["id"]), command=cmd
        )
        return await self._dispatch_interaction(handle)

    async def context_menu(
        self,
        name: str,
        target: dict[str, Any] | FakeUser | int | str,
        *,
        user: FakeUser | None = None,
        guild: FakeGuild | None = None,
        channel: dict[str, Any] | int | None = None,
        permissions: int | discord.Permissions | None = None,
        locale: str = "en-US",
        validate: bool | None = None,
    ) -> InteractionHandle:
        """Invoke a message command (target = message dict/ID, e.g. from ``fake.messages`` or
        ``post_user_message``) or a user command (target = FakeUser)."""
        validate = self.validate if validate is None else validate
        is_user = isinstance(target, FakeUser)
        msg: dict[str, Any] | None = None
        if not is_user:
            msg = self._live_message(target)  # type: ignore[arg-type]
            if channel is None:
                channel = int(msg["channel_id"])
        dm = False
        if msg is not None and "guild_id" not in msg:
            dm = True
        payload, user, guild, ch, perms = self._context(
            APPLICATION_COMMAND,
            user=user,
            guild=guild,
            channel=channel,
            dm=dm,
            permissions=permissions,
            locale=locale,
        )
        ctype = 2 if is_user else 3
        cmd = self._require_command(name, ctype, guild)
        if cmd is not None and validate:
            self._check_visible(cmd, dm=dm, perms=perms, channel=ch)
        resolved: dict[str, Any] = {}
        if is_user:
            target_id = self._resolve_value(6, target, resolved, guild, perms)
        else:
            assert msg is not None
            target_id = msg["id"]
            resolved["messages"] = {msg["id"]: copy.deepcopy(msg)}
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self.snowflakes.next()),
            "name": name,
            "type": ctype,
            "target_id": target_id,
            "resolved": resolved,
        }
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload["data"] = data
        handle = InteractionHandle(
            self, payload, user=user, guild=guild, channel_id=int(ch["id"]), command=cmd
        )
        return await self._dispatch_interaction(handle)

    async def click(
        self,
        message: dict[str, Any] | int | str,
        custom_id: str,
        *,
        user: FakeUser | None = None,
        values: Sequence[Any] | None = None,
        permissions: int | discord.Permissions | None = None,
        locale: str = "en-US",
        validate: bool | None = None,
    ) -> InteractionHandle:
        """Press a button (or choose ``values`` in a select) on a message the bot posted.
        The payload carries the message with its current components, as Discord's does."""
        validate = self.validate if validate is None else validate
        msg = self._live_message(message)
        comp = find_component(msg.get("components") or [], custom_id)
        if comp is None:
            if validate:
                ids = [
                    c["custom_id"]
                    for c in walk_components(msg.get("components"))
                    if "custom_id" in c
                ]
                raise InvalidInteraction(
                    f"message {msg['id']} has no component {custom_id!r}; it has {ids}"
                )
            comp = {"type": 2 if values is None else 3, "custom_id": custom_id}
        ctype = int(comp["type"])
        if validate:
            if comp.get("disabled"):
                raise InvalidInteraction(f"component {custom_id!r} is disabled")
            if ctype == 2 and comp.get("style") in (5, 6):
                raise InvalidInteraction("link/premium buttons do not create interactions")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        if ctype != 2:
            vals = list(values or [])
            if validate:
                lo, hi = comp.get("min_values", 1), comp.get("max_values", 1)
                if not lo <= len(vals) <= hi:
                    raise InvalidInteraction(f"select {custom_id!r} needs {lo}..{hi} values")
                if ctype == 3:
                    allowed = [o["value"] for o in comp.get("options") or []]
                    bad = [v for v in vals if v not in allowed]
                    if bad:
                        raise InvalidInteraction(f"values {bad} are not options of {custom_id!r}")
            data["values"] = vals
        dm = "guild_id" not in msg
        guild = None if dm else self.guilds.get(int(msg["guild_id"]))
        payload, user, guild, ch, perms = self._context(
            MESSAGE_COMPONENT,
            user=user,
            guild=guild,
            channel=None if dm else int(msg["channel_id"]),
            dm=dm,
            permissions=permissions,
            locale=locale,
        )
        if ctype in (5, 6, 7, 8):
            # user/role/mentionable/channel selects: values are IDs, objects go in ``resolved``
            # (string selects must not carry ``resolved``: discord.py would read it instead).
            option_type = {5: 6, 6: 8, 7: 9, 8: 7}[ctype]
            resolved: dict[str, Any] = {}
            data["values"] = [
                self._resolve_value(option_type, v, resolved, guild, perms) for v in data["values"]
            ]
            data["resolved"] = resolved
        payload["data"] = data
        payload["message"] = copy.deepcopy(msg)
        handle = InteractionHandle(
            self,
            payload,
            user=user,
            guild=guild,
            channel_id=int(ch["id"]),
            message_id=int(msg["id"]),
        )
        return await self._dispatch_interaction(handle)

    async def select(
        self,
        message: dict[str, Any] | int | str,
        custom_id: str,
        values: Sequence[Any],
        *,
        user: FakeUser | None = None,
    ) -> InteractionHandle:
        """Choose ``values`` in a select menu on a bot message (shorthand for ``click``).
        String selects take option values; user/role/channel selects take FakeUser/dicts/IDs."""
        return await self.click(message, custom_id, user=user, values=values)

    def _submitted(
        self, component: dict[str, Any], values: Mapping[str, Any], validate: bool
    ) -> dict[str, Any] | None:
        cid = component.get("custom_id")
        if cid is None:
            return None
        ctype = component["type"]
        out: dict[str, Any] = {"type": ctype, "custom_id": cid}
        if component.get("id") is not None:
            out["id"] = component["id"]
        if ctype == 4:
            value = values.get(cid, component.get("value") or "")
            if validate:
                if component.get("required", True) and not value:
                    raise InvalidInteraction(f"modal text input {cid!r} is required")
                if value and len(value) < (component.get("min_length") or 0):
                    raise InvalidInteraction(f"{cid!r} shorter than {component['min_length']}")
                if component.get("max_length") and len(value) > component["max_length"]:
                    raise InvalidInteraction(f"{cid!r} longer than {component['max_length']}")
            out["value"] = value
        else:
            out["values"] = list(values.get(cid, []))
        return out

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, Any],
        *,
        user: FakeUser | None = None,
        source: InteractionHandle | None = None,
        validate: bool | None = None,
    ) -> InteractionHandle:
        """Submit the modal the bot opened (type-9 callback) with ``values`` mapping each input's
        custom_id to its text (or list of values for selects). Defaults: the latest modal with
        that custom_id; the user/guild/channel of the interaction that opened it."""
        validate = self.validate if validate is None else validate
        entry = None
        if source is not None and source.modal and source.modal.get("custom_id") == custom_id:
            entry = (source, source.modal)
        if entry is None:
            entry = next(
                (e for e in reversed(self.modals) if e[1].get("custom_id") == custom_id), None
            )
        if entry is None and validate:
            raise InvalidInteraction(f"the bot never opened a modal with custom_id {custom_id!r}")
        src, modal = entry if entry is not None else (source, None)
        components: list[dict[str, Any]] = []
        known: set[str] = set()
        if modal is not None:
            for top in modal.get("components") or []:
                if top.get("type") == 1:
                    row = [
                        self._submitted(c, values, validate) for c in top.get("components") or []
                    ]
                    known.update(c["custom_id"] for c in row if c)
                    components.append({"type": 1, "components": [c for c in row if c]})
                elif top.get("type") == 18 and top.get("component"):
                    sub = self._submitted(top["component"], values, validate)
                    if sub:
                        known.add(sub["custom_id"])
                        item = {"type": 18, "component": sub}
                        if top.get("id") is not None:
                            item["id"] = top["id"]
                        components.append(item)
        else:
            for cid, value in values.items():
                components.append(
                    {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": value}]}
                )
                known.add(cid)
        unknown = set(values) - known
        if unknown and validate:
            raise InvalidInteraction(f"modal {custom_id!r} has no inputs {sorted(unknown)}")
        guild = src.guild if src is not None else None
        dm = src is not None and src.guild is None
        payload, user, guild, ch, _ = self._context(
            MODAL_SUBMIT,
            user=user or (src.user if src is not None else None),
            guild=guild,
            channel=src.channel_id if src is not None and not dm else None,
            dm=dm,
            permissions=None,
            locale="en-US",
        )
        payload["data"] = {"custom_id": custom_id, "components": components}
        message_id = src.message_id if src is not None else None
        if message_id is not None and self.get_message(message_id) is not None:
            payload["message"] = copy.deepcopy(self.get_message(message_id))
        handle = InteractionHandle(
            self,
            payload,
            user=user,
            guild=guild,
            channel_id=int(ch["id"]),
            message_id=message_id,
            source=src,
        )
        return await self._dispatch_interaction(handle)

    # ------------------------------------------------------------------------------------------
    # Convenience queries
    # ------------------------------------------------------------------------------------------

    @property
    def unhandled_calls(self) -> list[Call]:
        """Calls to routes the fake does not implement (answered 404)."""
        return [c for c in self.calls if c.unhandled]

    def calls_to(self, method: str | None, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [
            c
            for c in self.calls
            if (method in (None, "*") or c.method == method.upper()) and pattern.fullmatch(c.path)
        ]
