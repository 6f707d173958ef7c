"""The operator's TOML file, validated into typed settings.

Every section of DESIGN §3 is parsed and checked here, so a typo anywhere is
an error with its TOML key path (``tenants.acme.monthly_usd``) instead of a
silently disabled budget. Money is read as ``Decimal`` (TOML floats are
parsed as decimals, never through ``float``).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_LISTEN = "127.0.0.1:8787"
DEFAULT_CONFIG_NAME = "faregate.toml"

Money = Decimal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_negative(value: Decimal | None) -> Decimal | None:
    if value is not None and value < 0:
        raise ValueError("must not be negative")
    return value


class ServerSettings(_Strict):
    listen: str = DEFAULT_LISTEN
    upstream: str = "https://api.openai.com"
    upstream_api_key_env: str = "OPENAI_API_KEY"
    admin_token_env: str = "FAREGATE_ADMIN_TOKEN"
    max_body_bytes: int = Field(26_214_400, gt=0)
    max_ws_frame_bytes: int = Field(16_777_216, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    response_timeout_s: float = Field(600.0, gt=0)  # request sent -> response headers
    idle_timeout_s: float = Field(300.0, gt=0)  # silence between body chunks
    shutdown_grace_s: float = Field(30.0, ge=0)  # in-flight calls and sessions on SIGTERM
    cancel_grace_s: float = Field(5.0, ge=0)  # client left mid-response: wait for its usage
    #: Near a limit, how long a call may wait for its turn (calls admitted one at a time).
    admission_wait_s: float = Field(2.0, ge=0, le=600)
    #: Browser origins allowed to open Realtime/Live WebSockets; empty: any origin.
    allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not (origin.startswith("http://") or origin.startswith("https://")):
                raise ValueError(f"{origin!r}: an origin is scheme://host[:port] (or \"*\")")
        return [o.rstrip("/").lower() for o in v]

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class StorageSettings(_Strict):
    url: str = "sqlite:///faregate.db"
    lease_max_fraction: Decimal = Field(Decimal("0.05"), gt=0, le=1)  # shared budgets
    journal_dir: str = "faregate-journal"
    flush_interval_ms: int = Field(250, gt=0)
    batch_size: int = Field(1000, gt=0)
    queue_limit: int = Field(10_000, gt=0)  # charges held in memory; beyond, only in the journal

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite:///") or v.startswith(("postgresql://", "postgres://"))):
            raise ValueError("must be sqlite:///PATH or postgresql://…")
        return v


class IdentitySettings(_Strict):
    mode: Literal["passthrough", "keys"] = "passthrough"
    tenant_header: str = "x-faregate-tenant"
    user_header: str = "x-faregate-user"
    allow_header_identity: bool = False


class KeyEntry(_Strict):
    sha256: str | None = None
    key_env: str | None = None
    tenant: str
    user: str | None = None
    tier: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 hex characters (sha256 of the key)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "KeyEntry":
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of sha256 or key_env")
        return self


class Limits(_Strict):
    """Limits shared by tiers and tenants (a tenant overrides its tier's)."""

    daily_usd: Money | None = None
    monthly_usd: Money | None = None
    rpm: int | None = Field(None, ge=0)
    tpm: int | None = Field(None, ge=0)
    max_requests_per_day: int | None = Field(None, ge=0)
    max_requests_per_month: int | None = Field(None, ge=0)
    max_images_per_day: int | None = Field(None, ge=0)
    max_images_per_month: int | None = Field(None, ge=0)
    max_concurrent_sessions: int | None = Field(None, ge=0)
    max_session_seconds: int | None = Field(None, ge=0)
    max_tool_calls_per_session: int | None = Field(None, ge=0)
    models: list[str] | None = None
    per_user_daily_usd: Money | None = None
    per_user_monthly_usd: Money | None = None
    degrade_to_text_at: Decimal | None = Field(None, gt=0, le=1)  # voice -> text at this share
    default_max_output_tokens: int | None = Field(None, gt=0)  # reservation when none is given
    #: Rewrite a call's output cap to what the remaining budget buys (opt-in).
    clamp_output: bool | None = None

    _money = field_validator(
        "daily_usd", "monthly_usd", "per_user_daily_usd", "per_user_monthly_usd"
    )(_non_negative)


class TenantSettings(Limits):
    tier: str | None = None
    on_exceed: Literal["block", "alert_only"] = "block"
    markup: Decimal | None = None
    capture: bool = False  # opt-in conversation capture ([capture] needs its key)

    _markup = field_validator("markup")(_non_negative)


class AlertSettings(_Strict):
    thresholds: list[Decimal] = Field(
        default_factory=lambda: [Decimal("0.8"), Decimal("0.95"), Decimal("1.0")]
    )
    webhook_url: str | None = None
    email_to: list[str] = Field(default_factory=list)
    smtp_url: str | None = None

    @field_validator("thresholds")
    @classmethod
    def _ratios(cls, v: list[Decimal]) -> list[Decimal]:
        for t in v:
            if not (0 < t <= Decimal("10")):
                raise ValueError("thresholds are ratios of the limit, e.g. 0.8")
        return sorted(set(v))


class ModelPrice(_Strict):
    """USD per 1M tokens unless the name says otherwise."""

    input: Money | None = None
    cached_input: Money | None = None
    output: Money | None = None
    audio_input: Money | None = None
    cached_audio_input: Money | None = None
    audio_output: Money | None = None
    image_input: Money | None = None
    cached_image_input: Money | None = None
    image_output: Money | None = None
    per_second: Money | None = None
    per_minute: Money | None = None
    per_1k_chars: Money | None = None
    per_image: Money | None = None

    @model_validator(mode="after")
    def _rates(self) -> "ModelPrice":
        for name, value in self.rates().items():
            if value < 0:
                raise ValueError(f"{name} must not be negative")
        return self

    def rates(self) -> dict[str, Decimal]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PricingSettings(_Strict):
    unknown_model: Literal["record", "reject"] = "record"
    models: dict[str, ModelPrice] = Field(default_factory=dict)


class CaptureSettings(_Strict):
    """Opt-in conversation capture (per tenant: `capture = true`)."""

    directory: str = "faregate-capture"
    key_env: str = "FAREGATE_CAPTURE_KEY"  # 32-byte AES key, base64 or hex
    retention_days: int = Field(30, ge=1)
    redact_builtin: bool = True  # e-mail addresses, phone and card numbers
    redact: list[str] = Field(default_factory=list)  # operator regexes
    queue_limit: int = Field(10_000, ge=1)

    @field_validator("redact")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex: {exc}") from None
        return v


class UpstreamLimitSettings(_Strict):
    """The operator's own upstream account limits, shared by all tenants."""

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    max_concurrent_sessions: int | None = Field(None, gt=0)


class Settings(_Strict):
    """The whole file. Built-in defaults make a working metering proxy."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    keys: list[KeyEntry] = Field(default_factory=list)
    tiers: dict[str, Limits] = Field(default_factory=dict)
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    upstream_limits: UpstreamLimitSettings = Field(default_factory=UpstreamLimitSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        problems = []
        for i, key in enumerate(self.keys):
            if key.tier is not None and key.tier not in self.tiers:
                problems.append(f"keys[{i}].tier: unknown tier {key.tier!r}")
        for name, tenant in self.tenants.items():
            if tenant.tier is not None and tenant.tier not in self.tiers:
                problems.append(f"tenants.{name}.tier: unknown tier {tenant.tier!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # TOML key path, e.g. "tenants.acme.monthly_usd"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The file is unreadable or invalid; `problems` lists every error."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_settings(data: dict[str, Any], source: str = "<config>") -> Settings:
    """Validate an already-parsed TOML document."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(ConfigProblem(_key_path(err["loc"]), msg))
        raise ConfigError(source, problems) from None


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a TOML file; raise `ConfigError` listing every problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), [ConfigProblem("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [ConfigProblem("", f"not valid TOML: {exc}")]) from None
    return parse_settings(data, str(p))


def find_config(explicit: str | None) -> Path | None:
    """`--config`, else $FAREGATE_CONFIG, else ./faregate.toml if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("FAREGATE_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[::1]:PORT') -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError("must be HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def summary(settings: Settings) -> str:
    """One screen describing what a valid config will do."""
    s = settings
    lines = [
        f"listen        {s.server.listen}",
        f"upstream      {s.server.upstream}",
        f"storage       {redact_url(s.storage.url)}",
        f"identity      {s.identity.mode}"
        + (" (header identity allowed)" if s.identity.allow_header_identity else ""),
        f"keys          {len(s.keys)}",
        f"tiers         {', '.join(s.tiers) or '-'}",
        f"tenants       {', '.join(s.tenants) or '-'}",
        f"alerts        thresholds {', '.join(str(t) for t in s.alerts.thresholds)}"
        + (", webhook" if s.alerts.webhook_url else "")
        + (f", email {len(s.alerts.email_to)}" if s.alerts.email_to else ""),
        f"pricing       {len(s.pricing.models)} override(s), unknown models: "
        f"{s.pricing.unknown_model}",
    ]
    return "\n".join(lines)


def redact_url(url: str) -> str:
    """Hide a password in a database URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
