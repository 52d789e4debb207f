"""imagegate's core: the only surface the front ends (bot, MCP server, CLI) import."""

from typing import Any

from .alerts import Alert
from .errors import (
    ADVICE,
    Advice,
    ConfigError,
    ConfirmationUnavailableError,
    ContentRejectedError,
    IdempotencyConflictError,
    ImageGateError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobInterruptedError,
    JobTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuotaError,
    QuotaExceededError,
    RateLimitedError,
    SpendDeclinedError,
    SpendLimitError,
    UnknownModelError,
)
from .images import EXTENSIONS, FORMAT_NAMES, check_upload, is_accepted_upload, preview, sniff_mime
from .moderation import NSFW_TERMS, filter_form, find_in_texts, find_term, normalise_prompt
from .personal import DELIVERY_MODES, MAX_STYLE_TEXT, Preferences, Style, make_style
from .progress import Progress
from .reports import Digest, ProviderRunway, Usage, digest_text
from .service import ImageService, ProviderInfo, default_cli_user
from .settings import Settings, load_settings, parse_settings
from .tokens import TokenInfo
from .types import (
    EDIT_MODES,
    IMAGE_URI_PREFIX,
    MAX_IMAGES_PER_JOB,
    MAX_PROMPT_CHARS,
    OPERATIONS,
    Caller,
    EditMode,
    Estimate,
    ImagePage,
    ImageRequest,
    ImageResult,
    InputImage,
    JobPage,
    JobRecord,
    LedgerEntry,
    ModelInfo,
    Operation,
    QuotaStatus,
    StoredImage,
    image_reference,
    parse_size,
)

__all__ = [
    "ADVICE",
    "Advice",
    "Alert",
    "Caller",
    "ConfigError",
    "ConfirmationUnavailableError",
    "ContentRejectedError",
    "DELIVERY_MODES",
    "Digest",
    "EDIT_MODES",
    "EXTENSIONS",
    "EditMode",
    "Estimate",
    "FORMAT_NAMES",
    "IMAGE_URI_PREFIX",
    "IdempotencyConflictError",
    "ImageGateError",
    "ImagePage",
    "ImageRequest",
    "ImageResult",
    "ImageService",
    "InputImage",
    "InvalidRequestError",
    "JobCancelledError",
    "JobFailedError",
    "JobInterruptedError",
    "JobPage",
    "JobRecord",
    "JobTimeoutError",
    "LedgerEntry",
    "MAX_IMAGES_PER_JOB",
    "MAX_PROMPT_CHARS",
    "MAX_STYLE_TEXT",
    "ModelInfo",
    "NSFW_TERMS",
    "NotFoundError",
    "OPERATIONS",
    "Operation",
    "PermissionDeniedError",
    "Preferences",
    "Progress",
    "ProviderError",
    "ProviderInfo",
    "ProviderRunway",
    "QuotaError",
    "QuotaExceededError",
    "QuotaStatus",
    "RateLimitedError",
    "Settings",
    "SpendDeclinedError",
    "SpendLimitError",
    "StoredImage",
    "Style",
    "TokenInfo",
    "UnknownModelError",
    "Usage",
    "check_upload",
    "dashboard_app",
    "default_cli_user",
    "digest_text",
    "filter_form",
    "find_in_texts",
    "find_term",
    "image_reference",
    "is_accepted_upload",
    "load_settings",
    "make_style",
    "normalise_prompt",
    "parse_settings",
    "parse_size",
    "preview",
    "sniff_mime",
]


def dashboard_app(service: ImageService) -> Any:
    """The operators' dashboard as an ASGI app, to mount at ``/admin`` (``core.dashboard``;
    imported on first use, so the CLI does not load Jinja2 and Starlette to start)."""
    from .dashboard import dashboard_app as make

    return make(service)
