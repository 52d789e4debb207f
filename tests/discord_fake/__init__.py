"""A local fake of Discord (REST v10 + gateway + CDN) for testing a real discord.py 2.7 client.

discord.py is pointed at the fake by setting ``discord.http.Route.BASE`` (all REST, including
interaction callbacks and webhooks) and ``DiscordWebSocket.DEFAULT_GATEWAY``; the bot then logs
in with ``client.start(token)`` exactly as in production (see
``/work/shared/reference/discord-testing.md``).

Quick start (pytest, asyncio auto mode)::

    # tests/bot/conftest.py
    from tests.discord_fake.fixtures import fake_discord  # noqa: F401  (fixture)

    # tests/bot/test_imagine.py
    from tests.discord_fake import logged_in

    async def test_imagine(fake_discord):
        bot = make_bot()                                    # your commands.Bot / Client
        async with logged_in(bot, fake_discord):            # start(), wait for on_ready, close
            await bot.tree.sync()                           # (or sync in setup_hook)
            img = fake_discord.add_attachment("in.png", png_bytes, "image/png")
            h = await fake_discord.slash("imagine", {"prompt": "a cat", "image": img},
                                         user=fake_discord.user)
            cb = await h.wait_callback()                    # accepted callback Call
            assert cb.type == 5 and h.callback_latency < 3
            fu = await h.wait_followup()                    # POST /webhooks/{app}/{token}
            assert fu.files[0].data.startswith(b"\\x89PNG")
            msg = h.original_message                        # live message dict
            click = await fake_discord.click(msg, "reroll:42", user=fake_discord.user)
            await click.wait_callback()

Fixtures / helpers (``tests.discord_fake.fixtures``, also re-exported here)
---------------------------------------------------------------------------
``fake_discord``
    pytest-asyncio fixture: a started ``FakeDiscord`` on 127.0.0.1:<random>, with
    ``Route.BASE``/``DEFAULT_GATEWAY`` monkeypatched to it (restored afterwards).
``async with logged_in(client, fake, token="fake-token", *, timeout=10.0,
guild_ready_timeout=0.1) as client``
    Runs ``client.start(token)`` in a task, waits until ready (on_ready fired: READY + all
    GUILD_CREATEs processed, ``setup_hook`` done), yields the client, then ``client.close()``
    and awaits the task. Login/setup_hook errors propagate. Outside pytest use
    ``async with FakeDiscord() as fake: with fake.patch_discord(): ...``.
``python -m tests.discord_fake.pointed MODULE ARGS`` (``tests.discord_fake.pointed``)
    Runs ``python -m MODULE ARGS`` (e.g. ``bot --config PATH``) as its own OS process
    against a fake in the test's process: start it with ``child_env(fake)`` in its
    environment.

FakeDiscord(*, host="127.0.0.1", port=0, application_id=1100000000000000001,
bot_name="imagegate", callback_deadline=3.0, require_synced=True, validate=True,
upload_limit=10 MiB, heartbeat_interval_ms=41250)
---------------------------------------------------------------------------------------------
Entities (fixed IDs, all snowflake ints):
    ``fake.application_id`` (== ``fake.bot_user.id``), ``fake.bot_user``;
    ``fake.owner`` (guild owner, app owner => ``bot.is_owner``), ``fake.admin`` (has the
    Moderator role: Manage Server + Manage Messages), ``fake.user`` ("alice", plain member) —
    all ``FakeUser(id, username, global_name, bot)`` with ``.mention`` and ``.to_dict()``.
    ``fake.guild`` (FakeGuild): ``.text_channel`` (#general, nsfw False), ``.nsfw_channel``
    (#nsfw-art, ``nsfw: True``), ``.everyone_role``/``.moderator_role``/``.bot_role`` (role
    dicts), ``.channels``/``.roles``/``.members`` dicts, ``.permissions_for(user_id) -> int``.
    ``fake.guilds`` maps id -> FakeGuild. ``fake.users`` maps id -> FakeUser.
    ``fake.add_guild(name, *, guild_id=None, owner=None) -> FakeGuild`` (before login; after
    login also ``await fake.dispatch_guild_create(guild)``).
    ``fake.create_user(username, *, permissions=None, roles=(), guild=None, global_name=None,
    bot=False) -> FakeUser`` — ``permissions`` (int or discord.Permissions) becomes a role.
    ``fake.dm_channel(user) -> dict``.
    ``fake.set_team(owner, members=((user, "developer"), ...), *, invited=()) -> dict`` makes
    the application team-owned: ``GET /oauth2/applications/@me`` then returns Discord's team
    object (``owner_user_id``, members with ``role`` and ``membership_state``) and the team's
    pseudo-user as ``owner``; ``fake.team`` holds it (None: owned by ``fake.owner``).

Attachments / CDN:
    ``fake.add_attachment(filename, data, content_type=None, *, size=None, width=None,
    height=None, description=None, channel=None, ephemeral=True) -> dict`` — Discord
    attachment object whose ``url`` the fake serves (``await attachment.read()`` works). ``size``
    and ``content_type`` default to the truth; pass them to lie. ``fake.attachment_bytes(att or
    url) -> bytes``. Files the bot uploads are served the same way (their attachment dicts in
    ``fake.messages`` have working URLs). ``fake.attachments`` maps id -> attachment dict.

Dispatching interactions (all ``async``, all return an ``InteractionHandle``; a bot must be
connected, else RuntimeError):
    ``slash(name, options=None, *, user=None, guild=None, channel=None, dm=False,
    permissions=None, locale="en-US", resolved=None, validate=None)``
        ``name`` is ``"cmd"``, ``"cmd sub"`` or ``"cmd group sub"``. ``options``: dict of option
        name -> value (str/int/float/bool; ``FakeUser`` for user options; channel/role dicts;
        attachment dicts from ``add_attachment`` — put into ``data.resolved`` automatically) or
        a raw list of option dicts. ``user`` defaults to ``fake.user``; ``channel`` to the
        guild's text channel (pass ``fake.guild.nsfw_channel`` for the age-restricted one);
        ``permissions`` overrides ``member.permissions`` (default: computed from roles).
    ``autocomplete(name, options=None, *, focused, user=None, ...)`` -> use
        ``await handle.wait_choices()``.
    ``context_menu(name, target, *, user=None, ...)`` — message command when ``target`` is a
        message dict/ID (bot message from ``fake.messages`` or ``await
        fake.post_user_message(...)``), user command when it is a ``FakeUser``.
    ``click(message, custom_id, *, user=None, values=None, permissions=None, validate=None)``
        — component interaction on a bot message (dict or ID); the payload embeds the message's
        current components, so DynamicItems, stored views and persistent views all dispatch.
        ``select(message, custom_id, values, *, user=None)`` for select menus.
    ``submit_modal(custom_id, values, *, user=None, source=None, validate=None)`` — submits
        the modal the bot opened (type-9 callback; latest with that custom_id, or
        ``source.modal``); ``values`` maps input custom_id -> text. User/guild/channel default
        to the interaction that opened it.
    Payloads match Discord's: id/token unique, application_id, type, version,
    ``data`` (synced command ``id``, ``name``, ``type``, ``options``, ``resolved``,
    ``guild_id`` for guild-registered commands, ``target_id``), guild_id, ``guild``,
    channel_id, full ``channel`` (with ``nsfw`` and ``permissions``), ``member`` (user, roles,
    ``permissions`` string) or ``user`` in DMs, app_permissions, locale, guild_locale,
    ``entitlements: []``, ``authorizing_integration_owners``, ``context``,
    ``attachment_size_limit``; component/modal interactions carry ``message``.

Discord-side emulation (``validate=True`` default; per call ``validate=False`` to send what a
real client never would, e.g. to test the bot's own range checks):
    * Commands must have been synced (``fake.require_synced``), and the invocation must respect
      the synced schema: required options, types, choices, min/max_value, min/max_length,
      channel_types, ``default_member_permissions`` vs the user's permissions, ``contexts``
      / dm_permission, ``nsfw`` commands only in nsfw channels. Violations raise
      ``InvalidInteraction`` (a ValueError) in the test.
    * Callback rules: only the first callback is accepted (then 400 40060); callbacks later
      than ``fake.callback_deadline`` (3.0 s) after dispatch, or after ``handle.expire()``,
      get 404 10062; callback types must suit the interaction type (e.g. 8 only for
      autocomplete, 6/7 only for components). Follow-ups/edits before any callback get 404
      10015; after ``handle.expire()`` 401 50027.
    * The first follow-up after a type-5 ("thinking") defer replaces the loading message
      (same ID; ephemerality from the defer), as on Discord.
    * Messages: content > 2000, > 10 embeds, bad component layout (> 5 rows, > 5 buttons,
      duplicate/too-long custom_id, label > 80...), v2 flag with content/embeds -> 400 50035;
      empty message -> 400 50006; any file > ``fake.upload_limit`` -> 413 40005.
    * Command sync: invalid names/descriptions, > 25 options/choices, required-after-optional,
      duplicates -> 400 50035 (discord.py raises ``CommandSyncFailure``).

Recorded state:
    ``fake.calls: list[Call]`` — every HTTP request, in arrival order. ``Call`` fields:
        ``method``, ``path`` (API prefix stripped, e.g. ``/webhooks/1/tok``; CDN downloads are
        ``/cdn/attachments/...``), ``query``, ``json`` (JSON body, or parsed ``payload_json``
        of multipart, else None), ``files: list[UploadedFile]`` (NamedTuple ``filename, data,
        content_type, field``), ``form`` (other multipart fields), ``headers``, ``timestamp``
        (``time.monotonic()`` at arrival), ``status``/``response`` (what the fake answered),
        ``fault``, ``interaction_id``, ``unhandled``; properties ``ok``, ``type``/``data``
        (callback type / ``json["data"]``).
    ``fake.messages: list[dict]`` — every message the bot created (callback type 4, the
        loading message of a type-5 defer (flags & 128 until filled), follow-ups, channel
        posts), as live Discord message dicts updated in place by edits (PATCH @original /
        webhook message / channel message, type-7 updates) with ``components``,
        ``attachments`` (working CDN URLs), ``embeds``, ``flags`` (64 = ephemeral),
        ``interaction_metadata``. Deleted IDs go to ``fake.deleted_message_ids``.
        ``fake.get_message(id)``; ``fake.user_messages`` (from ``post_user_message``).
    ``fake.commands: list[dict]`` (global) and ``fake.guild_commands[guild_id]`` — what the bot
        synced, as Discord stores it (with ``id``, ``application_id``, ``version``...).
        ``fake.find_command(name, ctype=1, guild=None)``.
    ``fake.interactions: dict[int, InteractionHandle]``, ``fake.modals`` (handle, modal data),
        ``fake.gateway_received`` (frames the bot sent), ``fake.identify_payloads``,
        ``fake.unhandled_calls``, ``fake.calls_to(method, path_regex)``.

Waiting (no sleeps; each raises TimeoutError listing the last calls):
    ``await fake.wait_for_call(method, path_regex, timeout=5.0, *, since=0, predicate=None,
    include_failed=False) -> Call`` — ``path_regex`` must *fullmatch* the path; method None/"*"
    = any; only 2xx unless ``include_failed``; ``since`` is an index into ``fake.calls``.
    ``await fake.wait_for_message(predicate=None, timeout=5.0, *, since=0) -> dict``.
    ``await fake.wait_until(predicate, timeout, what)`` — generic, re-evaluated on every call.
    ``await fake.wait_for_gateway_op(op, timeout=5.0, *, since=0)``.

InteractionHandle:
    ``id, token, type, payload, user, guild, guild_id, channel_id, command, message_id,
    dispatched_at`` (monotonic, just before sending), ``acknowledged_type``,
    ``original_message`` (live dict), ``followup_messages``, ``messages``, ``modal``,
    ``choices``, ``message`` (live source message); ``calls`` (all calls with this id/token),
    ``callbacks`` (all attempts), ``callback`` (accepted one), ``callback_latency``,
    ``followups``, ``edits``; ``expire()``.
    ``await wait_callback(timeout=5.0, *, include_failed=False) -> Call``;
    ``await wait_followup(index=0, timeout=5.0, *, include_failed=False) -> Call``;
    ``await wait_edit(index=0, timeout=5.0) -> Call``; ``await wait_response(timeout=5.0)`` (first
    visible output: callback 4/7/8/9 or a follow-up/edit); ``await wait_choices()``;
    ``await wait_modal()``.

Fault injection:
    ``fake.fail_next(method, path_regex, status, body=None, retry_after=None, times=1, *,
    global_=False, headers=None, delay=0.0) -> Fault`` answers the next ``times`` matching calls
    (None = forever) with ``status``. For 429 the body (``retry_after``, default 0.05 s,
    ``global``) and ``Retry-After``/``X-RateLimit-*`` (Limit, Remaining=0, Reset, Reset-After,
    Bucket, Scope, Global) headers are filled in, and like every response it carries ``Via``
    (discord.py treats a 429 without ``Via`` as a Cloudflare ban), so discord.py sleeps and
    retries. ``fault.hits`` lists answered calls. Constants: ``UNKNOWN_INTERACTION`` (10062),
    ``UNKNOWN_WEBHOOK``, ``UNKNOWN_MESSAGE``, ``INVALID_WEBHOOK_TOKEN``,
    ``ALREADY_ACKNOWLEDGED``, ``MISSING_PERMISSIONS`` (50013), ``MISSING_ACCESS``,
    ``REQUEST_TOO_LARGE`` (40005)... e.g.
    ``fake.fail_next("POST", r"/interactions/\\d+/[^/]+/callback", 404, UNKNOWN_INTERACTION)``.
    ``fake.delay_next(method, path_regex, seconds, times=1)`` delays then handles normally;
    ``fake.clear_faults()``.

Gateway:
    HELLO, IDENTIFY -> READY (bot user, application id/flags, guilds unavailable, session_id,
    ``resume_gateway_url`` = fake) then GUILD_CREATE per guild (channels, roles, members),
    heartbeat ACKs, RESUME -> RESUMED, REQUEST_GUILD_MEMBERS -> GUILD_MEMBERS_CHUNK.
    ``await fake.dispatch_event(name, data)`` sends any DISPATCH; ``await
    fake.request_reconnect()`` sends op 7; ``fake.connected``.
"""

from .fixtures import fake_discord, logged_in
from .interactions import InteractionHandle
from .models import (
    ALREADY_ACKNOWLEDGED,
    EMPTY_MESSAGE,
    INVALID_WEBHOOK_TOKEN,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    REQUEST_TOO_LARGE,
    UNKNOWN_CHANNEL,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    Call,
    FakeGuild,
    FakeMember,
    FakeUser,
    Fault,
    UploadedFile,
)
from .server import FakeDiscord
from .validation import InvalidInteraction

__all__ = [
    "ALREADY_ACKNOWLEDGED",
    "EMPTY_MESSAGE",
    "INVALID_WEBHOOK_TOKEN",
    "MISSING_ACCESS",
    "MISSING_PERMISSIONS",
    "REQUEST_TOO_LARGE",
    "UNKNOWN_CHANNEL",
    "UNKNOWN_INTERACTION",
    "UNKNOWN_MESSAGE",
    "UNKNOWN_WEBHOOK",
    "Call",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeUser",
    "Fault",
    "InteractionHandle",
    "InvalidInteraction",
    "UploadedFile",
    "fake_discord",
    "logged_in",
]
