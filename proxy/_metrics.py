"""Prometheus metrics (DESIGN §6), one registry per running app.

Labels are bounded: tenants come from config (or operator-enabled
headers), models are price-table families or "unpriced", endpoints are the
metered paths or "other". No per-user labels. The one label a caller names
freely, the model of an unpriced call, is kept to names that look like a
model and to `MAX_UNPRICED_MODELS` distinct values (`unpriced_model`); the
rest count as "other".
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

#: What a model name looks like (OpenAI names, fine-tunes, deployment names).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,95}")
#: Distinct unpriced model names given their own label value; later ones are "other".
MAX_UNPRICED_MODELS = 100

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)
_OVERHEAD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
_SESSION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _cache_children(metric):
    """Make `metric.labels(...)` a dict lookup after the first call per label values.

    prometheus_client validates and converts the values on every `labels()`
    call (a few µs, several times per request); the children never change,
    because faregate never removes a labelled child. The cache holds only
    what the metric itself already holds.
    """
    children: dict[tuple, object] = {}
    make = metric.labels

    def labels(*values):
        child = children.get(values)
        if child is None:
            child = children[values] = make(*values)
        return child

    metric.labels = labels
    return metric


#: (attribute, type, name, help, labels, histogram buckets) of every metric, DESIGN §6.
_DEFINITIONS: tuple[tuple[str, type, str, str, tuple[str, ...], tuple | None], ...] = (
    ("requests", Counter, "faregate_requests", "Requests as the report counts them (each "
     "metered call, each Realtime/Live session once, status 101), plus faregate's own "
     "refusals (model \"none\"); free calls are not counted.",
     ("tenant", "model", "endpoint", "status"), None),
    ("tokens", Counter, "faregate_tokens", "Tokens metered, by disjoint class: kind=\"input\" "
     "is uncached text input; the report's INPUT sums every *input kind (cached included).",
     ("tenant", "model", "kind"), None),
    ("cost", Counter, "faregate_cost_usd", "Cost in USD as priced by faregate.",
     ("tenant", "model"), None),
    ("billed_seconds", Counter, "faregate_billed_seconds",
     "Seconds billed (duration-priced audio, Live sessions).", ("tenant", "model"), None),
    ("unpriced", Counter, "faregate_unpriced_requests",
     "Calls recorded at zero because the model has no price.", ("tenant", "model"), None),
    ("price_table_age", Gauge, "faregate_price_table_age_days",
     "Days since the shipped price table's version date.", (), None),
    ("batch_lines", Counter, "faregate_batch_lines", "Batch output lines read through "
     "faregate, by result (charged, failed, malformed, too_long).", ("result",), None),
    ("background_responses", Counter, "faregate_background_responses",
     "Background responses followed up by faregate, by result (polled, charged).",
     ("result",), None),
    ("usage_problems", Counter, "faregate_usage_problems",
     "Calls whose usage report was missing or malformed.", ("endpoint", "problem"), None),
    ("sessions_active", Gauge, "faregate_realtime_sessions_active",
     "Open Realtime/Live sessions.", ("tenant",), None),
    ("session_duration", Histogram, "faregate_realtime_session_duration_seconds",
     "Realtime/Live session length.", ("model",), _SESSION_BUCKETS),
    ("tool_calls", Counter, "faregate_tool_calls",
     "Function calls models made in Realtime/Live sessions.", ("tenant",), None),
    ("quota_rejections", Counter, "faregate_quota_rejections",
     "Requests refused by a faregate limit.", ("tenant", "reason"), None),
    ("budget_used_ratio", Gauge, "faregate_budget_used_ratio", "Spent / limit per budget scope.",
     ("tenant", "period"), None),
    ("upstream_latency", Histogram, "faregate_upstream_latency_seconds",
     "Request sent upstream -> response headers.", ("endpoint",), _LATENCY_BUCKETS),
    ("proxy_overhead", Histogram, "faregate_proxy_overhead_seconds",
     "Time faregate adds before the response headers reach the client.", ("endpoint",),
     _OVERHEAD_BUCKETS),
    ("ledger_queue_depth", Gauge, "faregate_ledger_queue_depth",
     "Charges waiting to be written.", (), None),
    ("ledger_journal_bytes", Gauge, "faregate_ledger_journal_bytes",
     "Bytes in local journal segments not yet deleted (unconfirmed or current).", (), None),
    ("ledger_oldest_unwritten", Gauge, "faregate_ledger_oldest_unwritten_seconds",
     "Age of the oldest charge not yet in the database (0 when caught up).", (), None),
    ("ledger_records", Counter, "faregate_ledger_records", "Ledger records by outcome "
     "(dropped: kept by neither the journal nor memory).", ("result",), None),
    ("ledger_journal_failing", Gauge, "faregate_ledger_journal_failing",
     "1 while the journal takes no writes, by why (ENOSPC, EIO, EROFS, ...).", ("reason",),
     None),
    ("ledger_accepting", Gauge, "faregate_ledger_accepting",
     "1 while a charge can be kept (journal, or memory with the database up).", (), None),
    ("alerts_sent", Counter, "faregate_alerts_sent", "Budget alerts sent.",
     ("level", "channel"), None),
    ("capture_records", Counter, "faregate_capture_records",
     "Captured conversation records by outcome.", ("result",), None),
    ("config_reloads", Counter, "faregate_config_reloads", "Config reload attempts.",
     ("result",), None),
    ("reconcile_drift", Gauge, "faregate_reconcile_drift_usd",
     "The provider's cost minus faregate's ledger on the latest final UTC day, per group "
     "(OpenAI project, or 'unmapped').", ("group",), None),
)


class Metrics:
    """One registry per running app, with an attribute per metric of `_DEFINITIONS`."""

    requests: Counter
    tokens: Counter
    cost: Counter
    billed_seconds: Counter
    unpriced: Counter
    price_table_age: Gauge
    batch_lines: Counter
    background_responses: Counter
    usage_problems: Counter
    sessions_active: Gauge
    session_duration: Histogram
    tool_calls: Counter
    quota_rejections: Counter
    budget_used_ratio: Gauge
    upstream_latency: Histogram
    proxy_overhead: Histogram
    ledger_queue_depth: Gauge
    ledger_journal_bytes: Gauge
    ledger_oldest_unwritten: Gauge
    ledger_records: Counter
    ledger_journal_failing: Gauge
    ledger_accepting: Gauge
    alerts_sent: Counter
    capture_records: Counter
    config_reloads: Counter
    reconcile_drift: Gauge

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for attr, kind, name, help_text, labels, buckets in _DEFINITIONS:
            extra = {"buckets": buckets} if buckets is not None else {}
            metric = kind(name, help_text, list(labels), registry=self.registry, **extra)
            setattr(self, attr, _cache_children(metric) if labels else metric)
        self._unpriced_models: set[str] = set()

    def unpriced_model(self, model: str) -> str:
        """The `model` label of an unpriced call: the name when it looks like a model
        name and fewer than MAX_UNPRICED_MODELS names were seen, else "other"."""
        if model in self._unpriced_models:
            return model
        if (not isinstance(model, str) or not MODEL_NAME.fullmatch(model)
                or len(self._unpriced_models) >= MAX_UNPRICED_MODELS):
            return "other"
        self._unpriced_models.add(model)
        return model

    def render(self) -> bytes:
        return generate_latest(self.registry)
