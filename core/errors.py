"""The one error tree of imagegate.

``str(error)`` is always safe to show an end user: it never contains an API key, a provider's
raw body or a stack trace. Provider detail (status, body excerpt) stays in attributes for logs.
Every error has a stable ``code`` that front ends map to their own vocabulary (MCP tool error
codes, Discord messages, the CLI's ``{"error": {"code", "message"}}``).

Every error also carries the facts a front end needs to word it, so the front ends choose
words and never guess: ``retryable`` (sending the same request again may work),
``retry_after_s`` (how long to wait first, where known), ``advice`` (what the user should do:
one of ``ADVICE``), and, once the service has finished with the job, ``job_id``,
``credits_charged`` (what the failed job still cost) and ``refunded`` (credits were held for
the job and given back)::

    ImageGateError                       code                 retryable  advice
    ├── ConfigError                      config_error         no         tell_operator
    ├── InvalidRequestError              invalid_input        no         fix_request
    │   ├── UnknownModelError
    │   └── IdempotencyConflictError     same key, different request
    ├── SpendLimitError                  over_max_credits     no         fix_request
    │   ├── SpendDeclinedError           spend_declined       no         resend_if_wanted
    │   └── ConfirmationUnavailableError confirmation_required no        fix_request
    ├── NotFoundError                    not_found            no         check_reference
    ├── PermissionDeniedError            forbidden            no         tell_operator
    ├── QuotaError
    │   ├── QuotaExceededError           quota_exceeded       no         wait_for_credits
    │   └── RateLimitedError             rate_limited         yes        retry
    ├── ContentRejectedError             content_rejected     no         change_content
    ├── JobTimeoutError                  timeout              yes        try_other_model
    ├── JobFailedError                   job_failed           yes        try_other_model
    │   ├── JobInterruptedError          interrupted          yes        retry
    │   └── JobCancelledError            cancelled            yes        resend_if_wanted
    └── ProviderError                    provider_unavailable no         try_other_model
        ├── ProviderUnavailableError     5xx, connection      yes        (retried, fallback)
        ├── ProviderRateLimitedError     provider_rate_limited yes       retry (retried, fallback)
        ├── ProviderTimeoutError         timeout              yes        (retried, fallback)
        ├── ProviderConflictError        409                  yes        retry (retried)
        ├── ProviderAuthError            401/403: our key     no         tell_operator (fallback)
        ├── ProviderQuotaError           our account empty    no         tell_operator (fallback)
        ├── ProviderRejectedError        invalid_input        no         fix_request
        └── ProviderResponseError        malformed reply      no         (fallback)

For a ``ProviderError``, ``retryable`` is also what the orchestrator acts on: only such calls
are retried within the job.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import ClassVar, Literal, get_args

Advice = Literal[
    "fix_request",
    "retry",
    "try_other_model",
    "wait_for_credits",
    "change_content",
    "tell_operator",
    "check_reference",
    "resend_if_wanted",
    "report_bug",
]
ADVICE: tuple[Advice, ...] = get_args(Advice)


class ImageGateError(Exception):
    """Base of every error imagegate raises on purpose; the message is user-safe."""

    code = "internal_error"
    advice: ClassVar[Advice] = "report_bug"
    retryable: bool = False
    # What to suggest when a retryable error names no wait of its own.
    default_retry_after_s: ClassVar[float | None] = None

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._retry_after_s = retry_after_s
        self.job_id: str | None = None
        self.credits_charged = 0
        self.refunded = False

    @property
    def retry_after_s(self) -> float | None:
        """Seconds to wait before sending the request again, where known."""
        if self._retry_after_s is not None:
            return self._retry_after_s
        return self.default_retry_after_s if self.retryable else None

    def ended_job(self, job_id: str, *, charged: int, refunded: bool) -> None:
        """Record what the failed job cost (called by the service once its hold is closed)."""
        self.job_id = job_id
        self.credits_charged = charged
        self.refunded = refunded

    def as_dict(self) -> dict[str, object]:
        """The error as the CLI and MCP report it: code, message and the billing facts."""
        wait = self.retry_after_s
        return {
            "code": self.code,
            "message": self.message,
            "advice": self.advice,
            "retryable": self.retryable,
            "retry_after_s": None if wait is None else _whole_seconds(wait),
            "credits_charged": self.credits_charged,
            "refunded": self.refunded,
            "job_id": self.job_id,
        }


MAX_WAIT_S = 86_400.0  # a wait reported as longer than a day (or infinite) counts as a day


def finite_seconds(seconds: float | None) -> float | None:
    """Seconds that came from outside (a Retry-After header, a backend's time estimate; JSON
    and float() both read ``1e999`` as infinity) made safe to compute with: NaN is unknown
    (None), a negative wait is none, anything over ``MAX_WAIT_S`` is ``MAX_WAIT_S``."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_WAIT_S)


def _whole_seconds(seconds: float) -> int:
    """At least 1 s, rounded up; a huge or non-finite wait is reported as one day."""
    safe = finite_seconds(seconds)
    return max(1, math.ceil(MAX_WAIT_S if safe is None else safe))


class ConfigError(ImageGateError):
    """The configuration file or the environment is unusable."""

    code = "config_error"
    advice = "tell_operator"


class InvalidRequestError(ImageGateError):
    """The request cannot be served as asked; nothing was spent."""

    code = "invalid_input"
    advice = "fix_request"


class UnknownModelError(InvalidRequestError):
    """A model reference that is neither ``provider:model`` of a configured model nor an alias."""


class IdempotencyConflictError(InvalidRequestError):
    """An idempotency key was reused for a different request."""


class NotFoundError(ImageGateError):
    """No such job or image, or it belongs to someone else (the two look the same on purpose)."""

    code = "not_found"
    advice = "check_reference"


class PermissionDeniedError(ImageGateError):
    """The caller may not do this."""

    code = "forbidden"
    advice = "tell_operator"


class QuotaError(ImageGateError):
    """A quota limit refused the job before anything was spent; ``retry_at`` is when it lifts."""

    code = "quota_exceeded"
    advice: ClassVar[Advice] = "wait_for_credits"

    def __init__(self, message: str, *, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at

    @property
    def retry_after_s(self) -> float | None:
        """Seconds until ``retry_at`` (at least 1), or None."""
        if self.retry_at is None:
            return None
        return max(1.0, (self.retry_at - datetime.now(UTC)).total_seconds())

    def as_dict(self) -> dict[str, object]:
        out = super().as_dict()
        if self.retry_at is not None:
            out["retry_at"] = self.retry_at.isoformat()
        return out


class QuotaExceededError(QuotaError):
    """Not enough credits left for the job."""

    def __init__(
        self, message: str, *, remaining: int, needed: int, retry_at: datetime | None = None
    ) -> None:
        super().__init__(message, retry_at=retry_at)
        self.remaining = remaining
        self.needed = needed


class RateLimitedError(QuotaError):
    """The per-minute rate or the in-flight cap was hit."""

    code = "rate_limited"
    advice = "retry"
    retryable = True


class SpendLimitError(ImageGateError):
    """The job could cost more than the caller allowed for it (``max_credits``); refused
    before anything was reserved. ``price``: the most the job could cost; ``limit``: what
    was allowed."""

    code = "over_max_credits"
    advice: ClassVar[Advice] = "fix_request"

    def __init__(self, message: str, *, price: int, limit: int) -> None:
        super().__init__(message)
        self.price = price
        self.limit = limit


class SpendDeclinedError(SpendLimitError):
    """A spend above the confirmation threshold (``limit``) that the user declined or left
    unanswered; nothing was spent."""

    code = "spend_declined"
    advice = "resend_if_wanted"


class ConfirmationUnavailableError(SpendLimitError):
    """A spend above the confirmation threshold (``limit``) from a client that cannot ask the
    user; the message says how to allow it. Nothing was spent."""

    code = "confirmation_required"


class ContentRejectedError(ImageGateError):
    """The prompt or an image was refused by moderation; never retried or failed over."""

    code = "content_rejected"
    advice = "change_content"

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class JobTimeoutError(ImageGateError):
    """The job's deadline passed before every image arrived."""

    code = "timeout"
    advice = "try_other_model"
    retryable = True
    default_retry_after_s = 60.0


class JobFailedError(ImageGateError):
    """A stored job that failed, known by its record (the error that ended it is gone)."""

    code = "job_failed"
    advice: ClassVar[Advice] = "try_other_model"
    retryable = True


class JobInterruptedError(JobFailedError):
    """The server stopped while the job ran; its hold was released at the next start."""

    code = "interrupted"
    advice = "retry"


class JobCancelledError(JobFailedError):
    """The job was cancelled before it finished (a queued job costs nothing)."""

    code = "cancelled"
    advice = "resend_if_wanted"


class ProviderError(ImageGateError):
    """A provider call failed. ``retryable``: the same call may work again (the orchestrator
    retries it); ``fallback_ok``: another provider may serve the job; ``retry_after``: the
    provider's own Retry-After, in seconds."""

    code = "provider_unavailable"
    advice: ClassVar[Advice] = "try_other_model"
    retryable = False
    fallback_ok = False
    default_retry_after_s = 30.0

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
        url: str = "",
    ) -> None:
        super().__init__(message, retry_after_s=retry_after)
        self.provider = provider
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        # The address that could not be reached, for the operator (the CLI prints it); not in
        # ``message``, which end users see: a self-hosted backend's address is internal.
        self.url = url


class ProviderUnavailableError(ProviderError):
    retryable = True
    fallback_ok = True


class ProviderRateLimitedError(ProviderError):
    """The provider refuses more requests for now (HTTP 429, or its own "too many")."""

    code = "provider_rate_limited"
    advice = "retry"
    retryable = True
    fallback_ok = True


class ProviderTimeoutError(ProviderError):
    code = "timeout"
    retryable = True
    fallback_ok = True
    default_retry_after_s = 60.0


class ProviderConflictError(ProviderError):
    advice = "retry"
    retryable = True


class ProviderAuthError(ProviderError):
    advice = "tell_operator"
    fallback_ok = True


class ProviderQuotaError(ProviderError):
    advice = "tell_operator"
    fallback_ok = True


class ProviderRejectedError(ProviderError):
    code = "invalid_input"
    advice = "fix_request"


class ProviderResponseError(ProviderError):
    fallback_ok = True
