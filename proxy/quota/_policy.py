"""The limits in force for one caller: tier, tenant overrides, per-user caps.

A key's `tier` overrides its tenant's tier; any limit written in
`[tenants.X]` overrides that tier's value. Money limits become integer
nano-USD here so the hot path compares integers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from faregate.pricing import PriceTable, to_nanos

from .._config import Limits, Settings, TenantSettings
from ..caller import Caller

#: Output reserved for a call with no cap to a model whose longest answer the
#: price table does not state (`max_output_tokens`).
DEFAULT_MAX_OUTPUT_TOKENS = 4096
DEFAULT_CLIENT_SECRET_TTL_S = 600  # OpenAI's own default expiry of a client secret

_LIMIT_FIELDS = tuple(Limits.model_fields)


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    scope: str  # "tenant:acme" or "user:acme/alice"
    period: str  # "day" | "month"
    limit_nanos: int

    @property
    def limit_usd(self) -> Decimal:
        return Decimal(self.limit_nanos).scaleb(-9)


@dataclass(frozen=True, slots=True)
class Policy:
    tenant: str
    user: str | None
    block: bool  # on_exceed = "block" (else alert only)
    budgets: tuple[BudgetLimit, ...] = ()
    max_requests_per_day: int | None = None
    max_requests_per_month: int | None = None
    max_images_per_day: int | None = None
    max_images_per_month: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent_sessions: int | None = None
    max_session_seconds: int | None = None
    max_tool_calls_per_session: int | None = None
    models: frozenset[str] | None = None
    degrade_to_text_at: Decimal | None = None
    session_cost_events: bool = False  # Realtime/Live `faregate.session.cost` events
    client_secrets: str | None = None  # "allow" | "deny" | None (see `mints_secrets`)
    client_secret_ttl_s: int = DEFAULT_CLIENT_SECRET_TTL_S
    endpoints: tuple[str, ...] | None = None  # path prefixes allowed (None: all)
    unknown_model: str = "record"  # a model with no price: "reject" or "record"
    tier: str | None = None  # the tier in force (a key's, else its tenant's)
    #: reserved for a call with no cap (None: the model's max_output_tokens)
    default_max_output_tokens: int | None = None
    clamp_output: bool = False  # rewrite output caps to what the budget buys
    #: model name -> price-table family, in the table in force (for the allowlist)
    family_of: Callable[[str], str | None] | None = field(default=None, compare=False)

    @property
    def tenant_scope(self) -> str:
        return f"tenant:{self.tenant}"

    def allows(self, model: str | None) -> bool:
        """Model allowlist: a family name admits its dated snapshots."""
        if self.models is None or model is None:
            return True
        if model in self.models:
            return True
        family = self.family_of(model) if self.family_of is not None else None
        return family is not None and family in self.models

    @property
    def mints_secrets(self) -> bool:
        """May mint ephemeral Realtime keys: as configured, else only without a USD
        limit (a session opened with such a key can spend where faregate cannot see)."""
        if self.client_secrets is not None:
            return self.client_secrets == "allow"
        return not self.budgets

    def allows_path(self, path: str) -> bool:
        """`endpoints` allowlist: a prefix admits itself and the paths below it."""
        if self.endpoints is None:
            return True
        return any(path == p or path.startswith(p + "/") for p in self.endpoints)


def effective_limits(settings: Settings, caller: Caller) -> dict:
    """Tier values, overridden by the tenant's own (non-empty) values."""
    tenant = settings.tenants.get(caller.tenant)
    tier_name = caller.tier or (tenant.tier if tenant else None)
    merged: dict = {}
    tier = settings.tiers.get(tier_name) if tier_name else None
    for source in (tier, tenant):
        if source is None:
            continue
        for name in _LIMIT_FIELDS:
            value = getattr(source, name)
            if value is not None:
                merged[name] = value
    return merged


def policy_for(settings: Settings, caller: Caller, table: PriceTable) -> Policy:
    """The caller's limits; model names are resolved against `table` (the one in force)."""
    limits = effective_limits(settings, caller)
    tenant_cfg: TenantSettings | None = settings.tenants.get(caller.tenant)
    tscope = f"tenant:{caller.tenant}"
    budgets = []
    for key, period in (("daily_usd", "day"), ("monthly_usd", "month")):
        if limits.get(key) is not None:
            budgets.append(BudgetLimit(tscope, period, to_nanos(limits[key])))
    if caller.user:
        uscope = f"user:{caller.tenant}/{caller.user}"
        for key, period in (("per_user_daily_usd", "day"), ("per_user_monthly_usd", "month")):
            if limits.get(key) is not None:
                budgets.append(BudgetLimit(uscope, period, to_nanos(limits[key])))
    models = limits.get("models")
    return Policy(
        tenant=caller.tenant,
        user=caller.user,
        block=(tenant_cfg.on_exceed if tenant_cfg else "block") == "block",
        tier=caller.tier or (tenant_cfg.tier if tenant_cfg else None),
        budgets=tuple(budgets),
        max_requests_per_day=limits.get("max_requests_per_day"),
        max_requests_per_month=limits.get("max_requests_per_month"),
        max_images_per_day=limits.get("max_images_per_day"),
        max_images_per_month=limits.get("max_images_per_month"),
        rpm=limits.get("rpm"),
        tpm=limits.get("tpm"),
        max_concurrent_sessions=limits.get("max_concurrent_sessions"),
        max_session_seconds=limits.get("max_session_seconds"),
        max_tool_calls_per_session=limits.get("max_tool_calls_per_session"),
        models=frozenset(models) if models is not None else None,
        degrade_to_text_at=limits.get("degrade_to_text_at"),
        session_cost_events=bool(limits.get("session_cost_events")),
        client_secrets=limits.get("client_secrets"),
        client_secret_ttl_s=limits.get("client_secret_ttl_s") or DEFAULT_CLIENT_SECRET_TTL_S,
        endpoints=tuple(limits["endpoints"]) if limits.get("endpoints") is not None else None,
        unknown_model="reject" if settings.pricing.unknown_model == "reject" else (
            limits.get("unknown_model") or ("reject" if budgets else "record")),
        default_max_output_tokens=limits.get("default_max_output_tokens"),
        clamp_output=bool(limits.get("clamp_output")),
        family_of=table.resolve,
    )
