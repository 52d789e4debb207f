"""Settings: one TOML file for behaviour, environment variables (named in the file) for secrets.

Where the file comes from: ``--config PATH``, else ``$IMAGEGATE_CONFIG``, else ``./config.toml``,
else the built-in defaults (SQLite under ``./data/`` and the offline ``placeholder`` provider).
A bad file raises one ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, InvalidRequestError
from .personal import make_style


def _known_kind(value: str) -> str:
    from .providers import KINDS  # the adapters import this module

    if value not in KINDS:
        raise ValueError(f"must be one of {', '.join(map(repr, KINDS))}, not {value!r}")
    return value


def _env_name(value: str) -> str:
    # A key pasted here would be refused much later, as "set the variable <the key>"; and the
    # message must not repeat the value, which may well be a secret.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(
            "must be the NAME of an environment variable (letters, digits and _), not the"
            " secret itself: put the secret in the environment (export MY_API_KEY=...) and"
            ' write its name here (e.g. api_key_env = "MY_API_KEY")'
        )
    return value


# The name of an environment variable that holds a secret.
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Section(BaseModel):
    # TOML has inf and nan: no setting means either (an infinite deadline breaks every job).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatabaseSettings(_Section):
    path: Path = Path("data/imagegate.db")
    busy_timeout_ms: int = Field(5000, ge=0)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # Each process renews its lease every lease_s / 3; another process releases its holds and
    # interrupts its jobs only once the lease has lapsed (core.leases).
    lease_s: float = Field(15.0, ge=0.1, le=3600, allow_inf_nan=False)
    # The NAME of the environment variable holding a postgresql:// URL (it may carry a
    # password, so never the URL itself in the file). Set and non-empty: PostgreSQL.
    url_env: EnvName | None = None
    pool_size: int = Field(10, ge=1, le=500)  # PostgreSQL connections per process
    auto_migrate: bool = True

    def url(self) -> str | None:
        """The PostgreSQL URL from ``$url_env``, or None (SQLite at ``path``).

        Raises:
            ConfigError: the variable holds something other than a postgresql:// URL (the
                message names the variable, never its value).
        """
        value = os.environ.get(self.url_env, "").strip() if self.url_env else ""
        if not value:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"${self.url_env} ([database] url_env) must hold a postgresql:// URL")
        return value


class ImagesSettings(_Section):
    dir: Path = Path("data/images")
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_download_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=4096)
    # Unused, and accepted only so that older config files still load: MCP previews are sized
    # by [mcp] preview_max_edge / preview_max_bytes (config.example.toml says so).
    preview_max_edge: int = Field(512, ge=64)
    preview_max_bytes: int = Field(512 * 1024, ge=16 * 1024)


class ProviderSettings(_Section):
    kind: Annotated[str, AfterValidator(_known_kind)]  # the adapters declare the kinds
    base_url: str | None = None
    api_key_env: EnvName | None = None
    models: list[str] = Field(default_factory=list)
    timeout_s: float = Field(120.0, gt=0)
    max_concurrency: int = Field(4, ge=1)
    poll_interval_s: float = Field(1.5, gt=0)
    # comfyui: the API-format workflow file per operation it serves, e.g. {generate = "t2i.json"}
    workflows: dict[str, Path] = Field(default_factory=dict)

    def resolved_base_url(self) -> str:
        """``base_url`` or the API root the provider documents."""
        from .providers import DEFAULT_BASE_URLS

        return (self.base_url or DEFAULT_BASE_URLS[self.kind]).rstrip("/")

    def api_key(self) -> str | None:
        """The key from the environment variable named by ``api_key_env``, if set."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class DefaultsSettings(_Section):
    model: str | None = None
    n: int = Field(1, ge=1, le=10)
    job_deadline_s: float = Field(600.0, gt=0)
    max_retries: int = Field(2, ge=0, le=5)


class PricingSettings(_Section):
    default: int | None = Field(1, ge=0)
    operations: dict[str, int] = Field(default_factory=dict)
    models: dict[str, int | dict[str, int]] = Field(default_factory=dict)

    @field_validator("operations", "models")
    @classmethod
    def _not_negative(cls, prices: dict[str, Any]) -> dict[str, Any]:
        for name, price in prices.items():
            per_operation = price if isinstance(price, dict) else {"": price}
            for operation, value in per_operation.items():
                if value < 0:
                    where = f"{name}.{operation}" if operation else name
                    raise ValueError(f"{where} = {value}: a price cannot be negative")
        return prices


class GuildQuota(_Section):
    guild_id: int
    allowance: int = Field(ge=0)


class RoleQuota(_Section):
    role_id: int
    allowance: int = Field(ge=0)


class QuotaSettings(_Section):
    allowance: int = Field(50, ge=0)
    period: Literal["day", "week", "month"] = "day"
    rate_per_minute: int = Field(0, ge=0)
    max_in_flight: int = Field(0, ge=0)
    # Expiry of a hold that no process owns (none that ImageService makes): holds of a process
    # live as long as its lease ([database] lease_s).
    hold_ttl_s: float = Field(900.0, gt=0)
    sweep_interval_s: float = Field(60.0, gt=0)
    guilds: list[GuildQuota] = Field(default_factory=list)
    roles: list[RoleQuota] = Field(default_factory=list)


class MCPClient(_Section):
    user: str = Field(min_length=1, pattern=r"^[^\s:]+$")
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    allowance: int | None = Field(None, ge=0)


class MCPSettings(_Section):
    stdio_user: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    path: str = "/mcp"
    clients: list[MCPClient] = Field(default_factory=list)
    return_image: Literal["none", "preview", "full"] = "preview"
    preview_max_edge: int = Field(512, ge=64)
    wait_bound_s: float = Field(45.0, gt=0)
    max_input_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    # Inline image content: per image, and for all images of one tool result (base64 size).
    preview_max_bytes: int = Field(256 * 1024, ge=8 * 1024)
    result_max_bytes: int = Field(640 * 1024, ge=32 * 1024)
    progress_interval_s: float = Field(5.0, gt=0)
    # Extra Host header values accepted over HTTP (DNS-rebinding guard), e.g. "mcp.example.org".
    allowed_hosts: list[str] = Field(default_factory=list)
    # A call that can cost more credits than this asks the user first (elicitation); 0: never.
    confirm_over: int = Field(0, ge=0)
    # Full-size results are also written here, and their paths returned (stdio clients that
    # do not read resources); None: not written.
    save_dir: Path | None = None


class DiscordSettings(_Section):
    token_env: EnvName = "DISCORD_TOKEN"
    dev_guild_id: int | None = None
    audit_channel_id: int | None = None
    max_attachment_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    progress_interval_s: float = Field(2.0, ge=0.5)
    # /show of a job still running (here or in another bot process) waits this long for it.
    show_wait_s: float = Field(60.0, ge=0, le=600)
    provider_concurrency: int = Field(4, ge=1)  # no longer used: core queues per provider
    # Who may create, take or re-set credits through Discord (see docs/discord.md); with
    # neither set, only the Discord application's owner or its team.
    admin_user_ids: list[int] = Field(default_factory=list)
    admin_guild_ids: list[int] = Field(default_factory=list)
    # Sharding (several bot processes split the servers; all share one PostgreSQL database):
    # shard_count shards in all, and the ones this process runs (default: all of them).
    shard_count: int | None = Field(None, ge=1, le=10_000)
    shard_ids: list[int] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count (how many shards in all)")
            bad = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
            if bad or len(set(self.shard_ids)) != len(self.shard_ids):
                raise ValueError(
                    f"shard_ids must be distinct numbers from 0 to {self.shard_count - 1}"
                )
        return self


class ModerationSettings(_Section):
    # Refused in every prompt and negative prompt, from every front end (Discord DMs included);
    # same syntax as a Discord server's list (core.moderation).
    banned_words: list[str] = Field(default_factory=list, max_length=1000)


class StyleSettings(_Section):
    # A prompt template with {prompt}; see core.personal and docs/discord.md.
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    model: str | None = None
    aspect: str | None = None
    description: str = ""


class CallbackSettings(_Section):
    public_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8766, ge=0, le=65535)
    path: str = "/callbacks"


class AlertSettings(_Section):
    # Post to the Discord audit channel (and log) when a provider's runway falls below this
    # many days; 0 = off.
    runway_days: float = Field(0.0, ge=0)
    # ... or when a model's share of failed jobs over the last hour goes above this; 0 = off.
    failure_rate: float = Field(0.0, ge=0, le=1)
    # Fewer finished jobs than this in the hour say nothing about a failure rate.
    min_jobs: int = Field(5, ge=1)
    weekly_digest: bool = False
    check_interval_s: float = Field(300.0, ge=10)


class AdminSettings(_Section):
    # The dashboard at /admin on the HTTP server; sign in with `imagegate admin token`.
    enabled: bool = True
    session_ttl_s: float = Field(12 * 3600.0, ge=60, le=30 * 86400)
    # Provider balances are asked for at most this often (each ask is a snapshot for runways).
    balance_refresh_s: float = Field(600.0, ge=10)


class Settings(_Section):
    """Everything imagegate reads from its config file. ``source`` is the file it came from."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    aliases: dict[str, str | list[str]] = Field(default_factory=dict)
    defaults: DefaultsSettings = Field(default_factory=DefaultsSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    mcp: MCPSettings = Field(default_factory=MCPSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    styles: dict[str, StyleSettings] = Field(default_factory=dict)
    source: str = Field("built-in defaults", exclude=True)

    @model_validator(mode="after")
    def _styles_usable(self) -> Settings:
        for name, style in self.styles.items():
            try:
                make_style(name, style.prompt, aspect=style.aspect)
            except InvalidRequestError as exc:
                raise ValueError(f"[styles.{name}]: {exc.message}") from None
        return self

    @model_validator(mode="after")
    def _placeholder_when_empty(self) -> Settings:
        # A fresh install runs offline; once real providers are configured the placeholder
        # exists only if asked for, so a production bot never offers it by accident.
        if not self.providers:
            self.providers = {
                "placeholder": ProviderSettings(kind="placeholder", models=["default"])
            }
        return self


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read, by the documented precedence; None means built-in defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get("IMAGEGATE_CONFIG"):
        return Path(os.environ["IMAGEGATE_CONFIG"])
    default = Path("config.toml")
    return default if default.is_file() else None


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings by the documented precedence.

    Raises:
        ConfigError: the file is missing, is not TOML, or a key is wrong; the message names both.
    """
    path = find_config(explicit)
    if path is None:
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_settings(data, source=str(path))


def parse_settings(data: dict[str, Any], *, source: str = "config") -> Settings:
    """Validate a parsed TOML document.

    Raises:
        ConfigError: naming the first bad key, e.g. ``config.toml: [quota] allowance: ...``.
    """
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_problem(exc)}") from None
    return settings.model_copy(update={"source": source})


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    section = ".".join(loc[:-1]) if len(loc) > 1 else ""
    key = loc[-1] if loc else "?"
    where = f"[{section}] {key}" if section else key
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        close = difflib.get_close_matches(key, _known_keys(loc), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{where}: {message}"


def _known_keys(loc: list[str]) -> list[str]:
    """The keys allowed next to the last part of ``loc``; table names (providers, indexes of
    arrays of tables) are stepped over."""
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(part)
        if field is not None:
            model = _model_in(field.annotation)
    return [] if model is None else [k for k in model.model_fields if k != "source"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation such as ``dict[str, ProviderSettings]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
