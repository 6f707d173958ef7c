"""The operator's TOML file, validated into typed settings.

Every section of the config file is parsed and checked here, so a typo anywhere is
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

from ._config_hints import unknown_key, unknown_tiers
from ._config_paths import anchored

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
    #: Longest wait between faregate's own polls of a pending background response.
    background_poll_s: float = Field(30.0, gt=0, le=600)
    #: Near a limit, how long a call may wait for its turn (calls admitted one at a time).
    admission_wait_s: float = Field(2.0, ge=0, le=600)
    #: One JSON line per REST call (logger `faregate.access`, at INFO); reloadable.
    access_log: bool = True
    #: Browser origins allowed to open Realtime/Live WebSockets; empty: any origin.
    allowed_origins: list[str] = Field(default_factory=list)
    #: PEM certificate chain and key: faregate itself serves https:// and wss://
    #: (the files are re-read when they change on disk).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: How the upstream credential is sent: `Authorization: Bearer` (OpenAI) or
    #: the `api-key` header (Azure OpenAI).
    upstream_auth: Literal["bearer", "api-key"] = "bearer"
    #: `/metrics` needs `Authorization: Bearer <the variable's value>` when set.
    metrics_token_env: str | None = None
    #: `/metrics` is served on this address only (not on `listen`) when set.
    metrics_listen: str | None = None

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
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

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerSettings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self


class StorageSettings(_Strict):
    url: str = "sqlite:///faregate.db"
    lease_max_fraction: Decimal = Field(Decimal("0.05"), gt=0, le=1)  # shared budgets
    journal_dir: str = "faregate-journal"
    flush_interval_ms: int = Field(250, gt=0)
    batch_size: int = Field(1000, gt=0)
    queue_limit: int = Field(10_000, gt=0)  # charges held in memory; beyond, only in the journal
    #: While neither the journal nor the database can take a charge: refuse metered calls
    #: (503 ledger_unavailable) or serve them. Unset: refuse callers with a USD limit.
    on_ledger_failure: Literal["refuse", "serve"] | None = None
    keep_charges_days: int | None = Field(None, gt=0)  # raw charges; rollups are kept forever

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


_PROJECT_ID = re.compile(r"proj_[A-Za-z0-9]{1,64}")


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
    #: Realtime/Live: a `faregate.session.cost` event to the client after each charge
    session_cost_events: bool | None = None
    #: Ephemeral Realtime keys (`POST /v1/realtime/client_secrets`): "allow" or "deny";
    #: unset: allowed unless the caller has a USD limit (their spend can pass unseen).
    client_secrets: Literal["allow", "deny"] | None = None
    client_secret_ttl_s: int | None = Field(None, ge=10, le=7200)  # longest expiry a mint gets
    #: Path prefixes this caller may use (others: 403 endpoint_not_allowed); None: all.
    endpoints: list[str] | None = None
    #: A model faregate cannot price: "reject" (403 model_not_priced) or "record".
    #: Unset: "reject" for callers with a USD limit, else "record".
    unknown_model: Literal["reject", "record"] | None = None
    #: Rewrite a call's output cap to what the remaining budget buys (opt-in).
    clamp_output: bool | None = None

    _money = field_validator(
        "daily_usd", "monthly_usd", "per_user_daily_usd", "per_user_monthly_usd"
    )(_non_negative)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for prefix in v:
            if not prefix.startswith("/v1/") or any(c in prefix for c in "?#%\\;") or (
                    "/." in prefix or "//" in prefix):
                raise ValueError(f"{prefix!r}: an endpoint is a plain path prefix under /v1/, "
                                 "e.g. \"/v1/chat/completions\"")
            out.append(prefix.rstrip("/"))
        return out


class TenantSettings(Limits):
    tier: str | None = None
    on_exceed: Literal["block", "alert_only"] = "block"
    markup: Decimal | None = None
    capture: bool = False  # opt-in conversation capture ([capture] needs its key)
    openai_project: str | None = None  # the tenant's OpenAI project (reconcile, backstops)
    #: Keys mode: this tenant's own upstream key (one OpenAI project per tenant).
    upstream_api_key_env: str | None = None
    #: May reach upstream objects faregate never saw created (made before or outside it).
    shared_objects: bool = False

    _markup = field_validator("markup")(_non_negative)

    @field_validator("openai_project")
    @classmethod
    def _project(cls, v: str | None) -> str | None:
        if v is not None and not _PROJECT_ID.fullmatch(v):
            raise ValueError("must be an OpenAI project id like proj_abc123")
        return v


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
    cache_write: Money | None = None  # prompt-cache writes, 30-minute retention
    cache_write_12h: Money | None = None  # prompt-cache writes, 12-hour retention
    per_second: Money | None = None
    per_minute: Money | None = None
    per_1k_chars: Money | None = None
    per_image: Money | None = None
    standby_per_minute: Money | None = None  # a Live session's paused time
    #: What one call can possibly use: usage reported beyond it is not believed.
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _rates(self) -> "ModelPrice":
        for name, value in self.rates().items():
            if value < 0:
                raise ValueError(f"{name} must not be negative")
        return self

    def rates(self) -> dict[str, Decimal]:
        return {k: v for k, v in self.model_dump().items()
                if v is not None and k not in _LIMITS}

    def entry(self) -> dict[str, Any]:
        """Rates and limits, as the price table takes an override."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


_LIMITS = ("context_window", "max_output_tokens")


class PricingSettings(_Strict):
    unknown_model: Literal["record", "reject"] = "record"
    #: An operator price file in the shipped table's format, read over it (hot-reloaded).
    table: str | None = None
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    #: other name -> priced model (e.g. an Azure deployment -> "gpt-4o-mini")
    aliases: dict[str, str] = Field(default_factory=dict)

    @field_validator("table")
    @classmethod
    def _table(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be the path of a price file (or left out)")
        return v


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


class ProviderSettings(_Strict):
    """The OpenAI organization Admin API: reconciliation and provider-side backstops."""

    admin_key_env: str = "OPENAI_ADMIN_KEY"
    admin_url: str | None = None  # default: the origin of [server] upstream
    drift_tolerance: Decimal = Field(Decimal("0.02"), ge=0, le=1)
    reconcile_daily: bool = False
    sync_limits: bool = False
    backstop_factor: Decimal = Field(Decimal("1.1"), ge=1, le=100)
    timeout_s: float = Field(30.0, gt=0, le=600)  # one Admin API attempt
    final_after_hours: int = Field(36, ge=0, le=24 * 31)  # the provider's day is final after

    @field_validator("admin_url")
    @classmethod
    def _admin_url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v


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
    provider: ProviderSettings = Field(default_factory=ProviderSettings)

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        problems = unknown_tiers(self.model_dump(include={"keys", "tiers", "tenants"}))
        if problems:
            raise ValueError("; ".join(f"{path}: {message}" for path, message in problems))
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
    """Validate an already-parsed TOML document; every problem is reported at once."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:
                continue  # the whole-file check: repeated below, one line per key
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = unknown_key(Settings, err["loc"])
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(ConfigProblem(_key_path(err["loc"]), msg))
        problems += [ConfigProblem(path, msg) for path, msg in unknown_tiers(data)]
        raise ConfigError(source, problems) from None


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a TOML file; raise `ConfigError` listing every problem.

    Relative paths in it (a SQLite ledger, the journal, capture, TLS files) are
    relative to the file's own directory, so `--config other/faregate.toml`
    finds the same ledger from any working directory.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), [ConfigProblem("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [ConfigProblem("", f"not valid TOML: {exc}")]) from None
    # abspath, not resolve(): a mounted ConfigMap is a symlink into a dated directory.
    return anchored(parse_settings(data, str(p)), Path(os.path.abspath(p)).parent)


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
        f"listen        {'https' if s.server.tls_cert_file else 'http'}://{s.server.listen}",
        f"upstream      {s.server.upstream}"
        + (" (api-key header)" if s.server.upstream_auth == "api-key" else ""),
        f"storage       {redact_url(s.storage.url)}",
        f"identity      {s.identity.mode}"
        + (" (header identity allowed)" if s.identity.allow_header_identity else ""),
        f"keys          {len(s.keys)}",
        f"tiers         {', '.join(s.tiers) or '-'}",
        f"tenants       {', '.join(s.tenants) or '-'}",
        f"alerts        thresholds {', '.join(str(t) for t in s.alerts.thresholds)}"
        + (", webhook" if s.alerts.webhook_url else "")
        + (f", email {len(s.alerts.email_to)}" if s.alerts.email_to else ""),
        f"pricing       {len(s.pricing.models)} override(s), {len(s.pricing.aliases)} alias(es), "
        f"unknown models: {s.pricing.unknown_model}"
        + (f", table {s.pricing.table}" if s.pricing.table else ""),
        f"provider      {sum(1 for t in s.tenants.values() if t.openai_project)} mapped "
        f"project(s), drift tolerance {s.provider.drift_tolerance}"
        + (", daily reconcile" if s.provider.reconcile_daily else "")
        + (", daily limit sync" if s.provider.sync_limits else ""),
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
