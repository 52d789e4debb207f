"""The one error tree of imagegate.

``str(error)`` is always safe to show an end user: it never contains an API key, a provider's
raw body or a stack trace. Provider detail (status, body excerpt) stays in attributes for logs.
Every error has a stable ``code`` that front ends map to their own vocabulary (MCP tool error
codes, Discord messages, the CLI's ``{"error": {"code", "message"}}``)::

    ImageGateError
    ├── ConfigError                      bad config file or environment (code config_error)
    ├── InvalidRequestError              bad input; nothing was spent (invalid_input)
    │   ├── UnknownModelError
    │   └── IdempotencyConflictError     same key, different request
    ├── NotFoundError                    unknown job or image, or not yours (not_found)
    ├── PermissionDeniedError            (forbidden)
    ├── QuotaError
    │   ├── QuotaExceededError           not enough credits (quota_exceeded)
    │   └── RateLimitedError             per-minute rate or in-flight cap (rate_limited)
    ├── ContentRejectedError             moderation refusal; never retried (content_rejected)
    ├── JobTimeoutError                  the job deadline passed (timeout)
    └── ProviderError                    a provider call failed (provider_unavailable)
        ├── ProviderUnavailableError     5xx, connection errors           retryable, fallback
        ├── ProviderRateLimitedError     429                              retryable, fallback
        ├── ProviderTimeoutError         no answer in time                retryable, fallback
        ├── ProviderConflictError        409                              retryable
        ├── ProviderAuthError            401/403: our key is wrong        fallback
        ├── ProviderQuotaError           our provider account is empty    fallback
        ├── ProviderRejectedError        400-class: the provider refused the request
        └── ProviderResponseError        malformed reply or bad image     fallback
"""

from __future__ import annotations

from datetime import datetime


class ImageGateError(Exception):
    """Base of every error imagegate raises on purpose; the message is user-safe."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, object]:
        """The error as the CLI and MCP report it."""
        return {"code": self.code, "message": self.message}


class ConfigError(ImageGateError):
    """The configuration file or the environment is unusable."""

    code = "config_error"


class InvalidRequestError(ImageGateError):
    """The request cannot be served as asked; nothing was spent."""

    code = "invalid_input"


class UnknownModelError(InvalidRequestError):
    """A model reference that is neither ``provider:model`` of a configured model nor an alias."""


class IdempotencyConflictError(InvalidRequestError):
    """An idempotency key was reused for a different request."""


class NotFoundError(ImageGateError):
    """No such job or image, or it belongs to someone else (the two look the same on purpose)."""

    code = "not_found"


class PermissionDeniedError(ImageGateError):
    """The caller may not do this."""

    code = "forbidden"


class QuotaError(ImageGateError):
    """A quota limit refused the job before anything was spent."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_at: datetime | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at

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


class ContentRejectedError(ImageGateError):
    """The prompt or an image was refused by moderation; never retried or failed over."""

    code = "content_rejected"

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class JobTimeoutError(ImageGateError):
    """The job's deadline passed before every image arrived."""

    code = "timeout"


class ProviderError(ImageGateError):
    """A provider call failed. ``retryable``: the same call may work again;
    ``fallback_ok``: another provider may serve the job."""

    code = "provider_unavailable"
    retryable = False
    fallback_ok = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    retryable = True
    fallback_ok = True


class ProviderRateLimitedError(ProviderError):
    retryable = True
    fallback_ok = True


class ProviderTimeoutError(ProviderError):
    code = "timeout"
    retryable = True
    fallback_ok = True


class ProviderConflictError(ProviderError):
    retryable = True


class ProviderAuthError(ProviderError):
    fallback_ok = True


class ProviderQuotaError(ProviderError):
    fallback_ok = True


class ProviderRejectedError(ProviderError):
    code = "invalid_input"


class ProviderResponseError(ProviderError):
    fallback_ok = True
