"""Consent for larger spends.

A call that can cost more than ``[mcp] confirm_over`` credits asks the user first, through
elicitation as the SDK does it for the protocol the client negotiated: ``Resolve``/``Elicit``
become a ``elicitation/create`` request during the call up to 2025-11-25, and an
``input_required`` round trip from 2026-07-28. The question names the job and its price; the
answer may also allow a budget ("up to N more credits for the next T minutes") for later calls
on the same token, so agent loops are not interrupted on every call. Declined or unanswered:
nothing is spent. A client that cannot ask is refused with what would allow the call.

The agent cannot approve a spend itself: there is no argument for it; only the user's answer
to the client's form, or a budget the user gave that way, lets such a call run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from core import (
    Caller,
    ConfirmationUnavailableError,
    ImageGateError,
    ImageRequest,
    ImageService,
    SpendDeclinedError,
)

_INPUT_REQUIRED_VERSION = "2026-07-28"  # elicitation rides the call's result from here on


class SpendApproval(BaseModel):
    """The form the user fills in to approve a spend (form elicitation: flat fields only)."""

    also_allow: int = Field(
        0,
        ge=0,
        le=1_000_000,
        title="Also allow",
        description="Credits later calls on this connection may spend without asking (0: ask"
        " every time).",
    )
    minutes: int = Field(
        60, ge=1, le=1440, title="For minutes", description="How long that allowance lasts."
    )


@dataclass(frozen=True)
class Verdict:
    """The outcome when no question is asked: ``free`` (under the threshold, a dry run, or a
    call that will be refused anyway), ``budget`` (the user's allowance covers ``price``), or
    ``cannot_ask`` (the client has no elicitation)."""

    kind: Literal["free", "budget", "cannot_ask"]
    price: int = 0


FREE = Verdict("free")
Consent = ElicitationResult[SpendApproval]


class Budgets:
    """Credits each user allowed, per token, to be spent without asking until a deadline; kept
    in this process (a restart, or another server process, asks again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._left: dict[str, tuple[int, float]] = {}

    def left(self, key: str) -> int:
        """Credits still allowed for ``key`` (0 once expired)."""
        credits, until = self._left.get(key, (0, 0.0))
        return credits if self.clock() < until else 0

    def take(self, key: str, credits: int) -> bool:
        """Use ``credits`` of the allowance if it covers them all; False (nothing taken) if not."""
        with self._lock:
            if self.left(key) < credits:
                return False
            left, until = self._left[key]
            self._left[key] = (left - credits, until)
            return True

    def grant(self, key: str, credits: int, minutes: int) -> None:
        """Replace ``key``'s allowance: ``credits`` for the next ``minutes``."""
        with self._lock:
            self._left[key] = (credits, self.clock() + minutes * 60)


async def decide(
    ctx: Context,
    service: ImageService,
    budgets: Budgets,
    key: str,
    request: ImageRequest | None,
    *,
    max_credits: int | None,
    dry_run: bool,
) -> Verdict | Elicit[SpendApproval]:
    """Whether the call needs the user's OK, and the question if it does (a resolver's body:
    it may run again on a later round, and asks the same question every time)."""
    limit = service.settings.mcp.confirm_over
    if request is None or dry_run or not limit:
        return FREE
    try:
        price = service.max_cost(request)
    except ImageGateError:
        return FREE  # the job itself reports the problem; it spends nothing
    if price <= limit or (max_credits is not None and price > max_credits):
        return FREE
    if budgets.left(key) >= price:
        return Verdict("budget", price)
    if not can_elicit(ctx):
        return Verdict("cannot_ask", price)
    return Elicit(_question(service, request, price, limit), SpendApproval)


def allowed_cost(
    consent: Consent, service: ImageService, budgets: Budgets, key: str, request: ImageRequest
) -> int | None:
    """The most the job may now cost (None: no limit beyond the caller's own), once the user
    approved, a budget paid for it, or no approval was needed.

    Raises:
        SpendDeclinedError: declined, unanswered, or the allowance ran out meanwhile.
        ConfirmationUnavailableError: the client cannot ask; says what would allow the call.
    """
    limit = service.settings.mcp.confirm_over
    if not isinstance(consent, AcceptedElicitation):
        price = service.max_cost(request)
        raise SpendDeclinedError(
            f"the user did not approve spending up to {price} credits on this job"
            f" ({consent.action}); nothing was spent",
            price=price,
            limit=limit,
        )
    answer = consent.data
    if isinstance(answer, SpendApproval):
        if answer.also_allow:
            budgets.grant(key, answer.also_allow, answer.minutes)
        return service.max_cost(request)
    assert isinstance(answer, Verdict)
    if answer.kind == "free":
        return None
    if answer.kind == "budget":
        if budgets.take(key, answer.price):
            return answer.price
        raise SpendDeclinedError(
            "the credits the user allowed without asking were used up by another call;"
            " call again to be asked",
            price=answer.price,
            limit=limit,
        )
    raise ConfirmationUnavailableError(
        f"this call can cost up to {answer.price} credits; calls over {limit} credits need the"
        " user's OK, and this client cannot ask for it (no form elicitation). To go ahead,"
        f" keep the call at {limit} credits or less (fewer images, or a cheaper model from"
        " list_models), use a client that supports elicitation, or ask the operator to raise"
        " [mcp] confirm_over",
        price=answer.price,
        limit=limit,
    )


def can_elicit(ctx: Context) -> bool:
    """Whether the client declared form elicitation and this request can carry a question
    (mid-call requests need a channel back, the 2026-07-28 round trip does not)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, _INPUT_REQUIRED_VERSION):
        return True
    return ctx.session.can_send_request


def budget_key(caller: Caller, token_id: str) -> str:
    """Allowances belong to a user on one token (stdio: the local user)."""
    return f"{caller.key}|{token_id}"


def _question(service: ImageService, request: ImageRequest, price: int, limit: int) -> str:
    count = f"{request.n} image{'' if request.n == 1 else 's'}"
    prompt = request.prompt if len(request.prompt) <= 80 else request.prompt[:79] + "…"
    about = f' of "{prompt}"' if prompt else ""
    model = request.model or service.default_model
    return (
        f"imagegate: {request.operation} {count}{about} with {model} can cost up to {price}"
        f" credits (calls over {limit} need your OK). Accept to spend them. To stop being asked"
        " for a while, also allow more credits for later calls."
    )
