"""Prometheus metrics (DESIGN §6), one registry per running app.

Labels are bounded: tenants come from config (or operator-enabled
headers), models are price-table families or "unpriced", endpoints are the
metered paths or "other". No per-user labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

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


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "faregate_requests", "Requests forwarded or refused.",
            ["tenant", "model", "endpoint", "status"], registry=r,
        )
        self.tokens = Counter(
            "faregate_tokens", "Tokens metered, by class.",
            ["tenant", "model", "kind"], registry=r,
        )
        self.cost = Counter(
            "faregate_cost_usd", "Cost in USD as priced by faregate.",
            ["tenant", "model"], registry=r,
        )
        self.billed_seconds = Counter(
            "faregate_billed_seconds", "Seconds billed (duration-priced audio, Live sessions).",
            ["tenant", "model"], registry=r,
        )
        self.unpriced = Counter(
            "faregate_unpriced_requests", "Calls recorded at zero because the model has no price.",
            ["tenant", "endpoint"], registry=r,
        )
        self.batch_lines = Counter(
            "faregate_batch_lines", "Batch output lines read through faregate, by result "
            "(charged, failed, malformed, too_long).", ["result"], registry=r,
        )
        self.usage_problems = Counter(
            "faregate_usage_problems", "Calls whose usage report was missing or malformed.",
            ["endpoint", "problem"], registry=r,
        )
        self.sessions_active = Gauge(
            "faregate_realtime_sessions_active", "Open Realtime/Live sessions.",
            ["tenant"], registry=r,
        )
        self.session_duration = Histogram(
            "faregate_realtime_session_duration_seconds", "Realtime/Live session length.",
            ["model"], buckets=_SESSION_BUCKETS, registry=r,
        )
        self.tool_calls = Counter(
            "faregate_tool_calls", "Function calls models made in Realtime/Live sessions.",
            ["tenant"], registry=r,
        )
        self.quota_rejections = Counter(
            "faregate_quota_rejections", "Requests refused by a faregate limit.",
            ["tenant", "reason"], registry=r,
        )
        self.budget_used_ratio = Gauge(
            "faregate_budget_used_ratio", "Spent / limit per budget scope.",
            ["tenant", "period"], registry=r,
        )
        self.upstream_latency = Histogram(
            "faregate_upstream_latency_seconds", "Request sent upstream -> response headers.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.proxy_overhead = Histogram(
            "faregate_proxy_overhead_seconds",
            "Time faregate adds before the response headers reach the client.",
            ["endpoint"], buckets=_OVERHEAD_BUCKETS, registry=r,
        )
        self.ledger_queue_depth = Gauge(
            "faregate_ledger_queue_depth", "Charges waiting to be written.", registry=r,
        )
        self.ledger_journal_bytes = Gauge(
            "faregate_ledger_journal_bytes",
            "Bytes in local journal segments not yet deleted (unconfirmed or current).",
            registry=r,
        )
        self.ledger_oldest_unwritten = Gauge(
            "faregate_ledger_oldest_unwritten_seconds",
            "Age of the oldest charge not yet in the database (0 when caught up).",
            registry=r,
        )
        self.ledger_records = Counter(
            "faregate_ledger_records", "Ledger records by outcome.", ["result"], registry=r,
        )
        self.alerts_sent = Counter(
            "faregate_alerts_sent", "Budget alerts sent.", ["level", "channel"], registry=r,
        )
        self.capture_records = Counter(
            "faregate_capture_records", "Captured conversation records by outcome.",
            ["result"], registry=r,
        )
        self.config_reloads = Counter(
            "faregate_config_reloads", "Config reload attempts.", ["result"], registry=r,
        )

        for metric in vars(self).values():
            if getattr(metric, "_labelnames", None):
                _cache_children(metric)

    def render(self) -> bytes:
        return generate_latest(self.registry)
