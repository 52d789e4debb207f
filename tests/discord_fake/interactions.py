"""``InteractionHandle``: what ``fake.slash/click/...`` return, to observe the bot's responses."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .models import Call, FakeGuild, FakeUser

if TYPE_CHECKING:
    from .server import FakeDiscord

_CALLBACK = re.compile(r"/interactions/\d+/[^/]+/callback")
_FOLLOWUP = re.compile(r"/webhooks/\d+/[^/]+")
_WEBHOOK_MESSAGE = re.compile(r"/webhooks/\d+/[^/]+/messages/(@original|\d+)")

# Interaction types (Discord): 2 application command, 3 component, 4 autocomplete, 5 modal submit.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5


class InteractionHandle:
    """One interaction the fake dispatched to the bot over the gateway.

    Attributes: ``id``, ``token``, ``type`` (2 command, 3 component, 4 autocomplete, 5 modal),
    ``payload`` (the INTERACTION_CREATE ``d`` sent), ``user`` (FakeUser), ``guild`` (FakeGuild or
    None for DMs), ``guild_id``, ``channel_id``, ``command`` (synced command dict or None),
    ``message_id`` (component/modal source message), ``dispatched_at`` (``time.monotonic()`` just
    before the frame was sent).

    State the fake maintains from the bot's responses: ``acknowledged_type`` (callback type of the
    accepted callback), ``original_message`` (live message dict of ``@original``),
    ``followup_messages``, ``modal`` (the modal ``data`` the bot opened, type 9), ``choices``
    (autocomplete choices, type 8), ``expired``.
    """

    def __init__(
        self,
        fake: FakeDiscord,
        payload: dict[str, Any],
        *,
        user: FakeUser,
        guild: FakeGuild | None,
        channel_id: int,
        command: dict[str, Any] | None = None,
        message_id: int | None = None,
        source: InteractionHandle | None = None,
    ) -> None:
        self.fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.user = user
        self.guild = guild
        self.guild_id = guild.id if guild is not None else None
        self.channel_id = channel_id
        self.command = command
        self.message_id = message_id
        self.source = source
        self.dispatched_at = 0.0
        self.acknowledged_type: int | None = None
        self.original_message: dict[str, Any] | None = None
        self.followup_messages: list[dict[str, Any]] = []
        self.modal: dict[str, Any] | None = None
        self.choices: list[dict[str, Any]] | None = None
        self.expired = False

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} ack={self.acknowledged_type}>"

    # -- derived views over fake.calls ----------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every REST call (any status) that used this interaction's id or token."""
        return [c for c in self.fake.calls if c.interaction_id == self.id]

    @property
    def callbacks(self) -> list[Call]:
        """All ``POST /interactions/{id}/{token}/callback`` attempts, including failed ones."""
        return [c for c in self.calls if c.method == "POST" and _CALLBACK.fullmatch(c.path)]

    @property
    def callback(self) -> Call | None:
        """The accepted (2xx) callback call, or None."""
        return next((c for c in self.callbacks if c.ok), None)

    @property
    def callback_type(self) -> int | None:
        return self.acknowledged_type

    @property
    def callback_latency(self) -> float | None:
        """Seconds between dispatch and the accepted callback's arrival."""
        cb = self.callback
        return None if cb is None else cb.timestamp - self.dispatched_at

    @property
    def followups(self) -> list[Call]:
        """Successful ``POST /webhooks/{app}/{token}`` (follow-up) calls, in order."""
        return [
            c for c in self.calls if c.method == "POST" and _FOLLOWUP.fullmatch(c.path) and c.ok
        ]

    @property
    def edits(self) -> list[Call]:
        """Successful ``PATCH /webhooks/{app}/{token}/messages/...`` calls, in order."""
        return [
            c
            for c in self.calls
            if c.method == "PATCH" and _WEBHOOK_MESSAGE.fullmatch(c.path) and c.ok
        ]

    @property
    def message(self) -> dict[str, Any] | None:
        """Live dict of the message a component/modal interaction came from."""
        if self.message_id is None:
            return None
        return self.fake.get_message(self.message_id)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Original response (if any) followed by follow-up messages (live dicts)."""
        out = [self.original_message] if self.original_message is not None else []
        return out + [m for m in self.followup_messages if m is not self.original_message]

    # -- control ---------------------------------------------------------------------------------

    def expire(self) -> None:
        """Make the token invalid: callbacks then get 404 10062, webhooks 401 50027."""
        self.expired = True

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_callback(self, timeout: float = 5.0, *, include_failed: bool = False) -> Call:
        """Wait for the bot's callback; by default only an accepted (2xx) one counts."""

        def found() -> Call | None:
            if include_failed:
                cbs = self.callbacks
                return cbs[0] if cbs else None
            return self.callback

        return await self.fake.wait_until(found, timeout, f"callback for {self!r}")

    async def wait_followup(
        self, index: int = 0, timeout: float = 5.0, *, include_failed: bool = False
    ) -> Call:
        """Wait for the ``index``-th follow-up ``POST /webhooks/{app}/{token}`` call."""

        def found() -> Call | None:
            calls = (
                [c for c in self.calls if c.method == "POST" and _FOLLOWUP.fullmatch(c.path)]
                if include_failed
                else self.followups
            )
            return calls[index] if len(calls) > index else None

        return await self.fake.wait_until(found, timeout, f"follow-up #{index} for {self!r}")

    async def wait_edit(self, index: int = 0, timeout: float = 5.0) -> Call:
        """Wait for the ``index``-th successful PATCH of one of this interaction's messages."""

        def found() -> Call | None:
            edits = self.edits
            return edits[index] if len(edits) > index else None

        return await self.fake.wait_until(found, timeout, f"edit #{index} for {self!r}")

    async def wait_response(self, timeout: float = 5.0) -> Call:
        """Wait for the first call that shows the user something beyond a defer.

        That is a 2xx callback of type 4/7/8/9, or (after a defer) a 2xx follow-up or edit.
        """

        def found() -> Call | None:
            for c in self.calls:
                if not c.ok:
                    continue
                if _CALLBACK.fullmatch(c.path) and c.type in (4, 7, 8, 9):
                    return c
                if c.method in ("POST", "PATCH") and _FOLLOWUP.match(c.path):
                    return c
            return None

        return await self.fake.wait_until(found, timeout, f"visible response for {self!r}")

    async def wait_choices(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Autocomplete: wait for the type-8 callback and return its choices."""
        await self.wait_callback(timeout)
        return self.choices or []

    async def wait_modal(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for a type-9 callback and return the modal data the bot sent."""
        return await self.fake.wait_until(lambda: self.modal, timeout, f"modal for {self!r}")
