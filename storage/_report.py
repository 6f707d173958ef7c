"""Aggregated usage (rows by tenant/user/key/model/endpoint/day/tag) and its renderings.

One shape serves the CLI (`faregate report`) and the admin API: JSON with
money as decimal strings, CSV with a header, or an aligned terminal table.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Sequence

import orjson

from faregate.pricing import CACHED_CLASSES, INPUT_CLASSES, OUTPUT_CLASSES, override_snippet

from ._money import format_usd, human_usd, plain_decimal
from ._record import TOKEN_COLUMNS

GROUPS: tuple[str, ...] = ("tenant", "user", "key", "model", "endpoint", "day")


@dataclass(frozen=True, slots=True)
class UsageRow:
    key: str | None
    requests: int
    tokens: dict[str, int]
    reasoning_tokens: int
    seconds: Decimal
    characters: int
    images: int
    cost_nanos: int
    unpriced: int
    estimated: int
    estimated_cost_nanos: int = 0
    savings_nanos: int = 0
    billed_nanos: int = 0
    fallback: int = 0  # charges priced by a fallback rule (see _queries.FALLBACK_FLAGS)
    fallback_cost_nanos: int = 0
    unconfirmed: int = 0  # charges priced from an unconfirmed period (`price_unconfirmed`)
    unconfirmed_cost_nanos: int = 0
    implausible: int = 0  # usage reports that could not be true: charged at the reservation
    implausible_cost_nanos: int = 0
    interrupted: int = 0  # calls a crash cut off before they settled: charged at the reservation
    interrupted_cost_nanos: int = 0
    tenant: str | None = None  # set when grouped by user (a user is unique per tenant)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "UsageRow":
        """From a `USAGE_SUMS` row: (key, key2, count, *token sums, reasoning,
        seconds_ms, chars, images, cost, unpriced, estimated, estimated cost,
        savings, billed, fallback, fallback cost, unconfirmed, its cost, implausible, its
        cost, interrupted, its cost)."""
        key, key2, *sums = row
        return cls.of_sums(key, key2, [int(v or 0) for v in sums])

    @classmethod
    def of_sums(cls, key: Any, key2: Any, vals: Sequence[int]) -> "UsageRow":
        """From the keys and the integer sums in `from_row` order."""
        n = len(TOKEN_COLUMNS)
        tokens = dict(zip(TOKEN_COLUMNS, vals[1 : 1 + n]))
        (reasoning, seconds_ms, chars, images, cost, unpriced, estimated, est_cost, savings,
         billed, fallback, fallback_cost, unconfirmed, unconfirmed_cost, implausible,
         implausible_cost, interrupted, interrupted_cost) = vals[1 + n :]
        return cls(
            key=None if key is None else str(key),
            requests=vals[0],
            tokens=tokens,
            reasoning_tokens=reasoning,
            seconds=Decimal(seconds_ms).scaleb(-3),
            characters=chars,
            images=images,
            cost_nanos=cost,
            unpriced=unpriced,
            estimated=estimated,
            estimated_cost_nanos=est_cost,
            savings_nanos=savings,
            billed_nanos=billed,
            fallback=fallback,
            fallback_cost_nanos=fallback_cost,
            unconfirmed=unconfirmed,
            unconfirmed_cost_nanos=unconfirmed_cost,
            implausible=implausible,
            implausible_cost_nanos=implausible_cost,
            interrupted=interrupted,
            interrupted_cost_nanos=interrupted_cost,
            tenant=None if key2 is None else str(key2),
        )

    @property
    def margin_nanos(self) -> int:
        return self.billed_nanos - self.cost_nanos

    @property
    def input_tokens(self) -> int:
        return sum(self.tokens[c] for c in INPUT_CLASSES)

    @property
    def output_tokens(self) -> int:
        return sum(self.tokens[c] for c in OUTPUT_CLASSES)

    @property
    def cached_tokens(self) -> int:
        return sum(self.tokens[c] for c in CACHED_CLASSES)

    def as_dict(self, group_by: str) -> dict[str, Any]:
        out: dict[str, Any] = {group_by: self.key}
        if self.tenant is not None:
            out["tenant"] = self.tenant
        out.update({
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": format_usd(self.cost_nanos),
            "savings_usd": format_usd(self.savings_nanos),
            "billed_usd": format_usd(self.billed_nanos),
            "margin_usd": format_usd(self.margin_nanos),
            "unpriced": self.unpriced,
            "estimated": self.estimated,
            "estimated_cost_usd": format_usd(self.estimated_cost_nanos),
            "fallback_priced": self.fallback,
            "fallback_cost_usd": format_usd(self.fallback_cost_nanos),
            "unconfirmed_priced": self.unconfirmed,
            "unconfirmed_cost_usd": format_usd(self.unconfirmed_cost_nanos),
            "implausible": self.implausible,
            "implausible_cost_usd": format_usd(self.implausible_cost_nanos),
            "interrupted": self.interrupted,
            "interrupted_cost_usd": format_usd(self.interrupted_cost_nanos),
            "seconds": plain_decimal(self.seconds),
            "characters": self.characters,
            "images": self.images,
            "tokens": dict(self.tokens),
        })
        return out


@dataclass(frozen=True, slots=True)
class UsageReport:
    group_by: str
    rows: list[UsageRow] = field(default_factory=list)
    #: (model, calls) of the unpriced calls in the range, most first (see the note)
    unpriced_models: tuple[tuple[str, int], ...] = ()
    #: Set when the range reaches before the retention horizon (ISO time): the sums
    #: are complete (rollups are kept forever), single charges before it are gone.
    detail_expired_before: str | None = None

    @classmethod
    def of(cls, rows: list[UsageRow], group_by: str) -> "UsageReport":
        if group_by == "day":
            rows = sorted(rows, key=lambda r: r.key or "")
        else:
            rows = sorted(rows, key=lambda r: (-r.cost_nanos, -r.requests, r.tenant or "",
                                               r.key or ""))
        return cls(group_by, rows)

    @property
    def total_cost_nanos(self) -> int:
        return sum(r.cost_nanos for r in self.rows)

    @property
    def total_requests(self) -> int:
        return sum(r.requests for r in self.rows)

    def total(self, attr: str) -> int:
        return sum(getattr(r, attr) for r in self.rows)

    @property
    def has_margin(self) -> bool:
        """True when some tenant is billed with a markup (show billed and margin)."""
        return any(r.margin_nanos for r in self.rows)

    def totals(self) -> dict[str, Any]:
        return {
            "total_requests": self.total_requests,
            "total_cost_usd": format_usd(self.total_cost_nanos),
            "total_savings_usd": format_usd(self.total("savings_nanos")),
            "total_billed_usd": format_usd(self.total("billed_nanos")),
            "total_margin_usd": format_usd(self.total("margin_nanos")),
            "total_estimated_cost_usd": format_usd(self.total("estimated_cost_nanos")),
            "total_fallback_cost_usd": format_usd(self.total("fallback_cost_nanos")),
            "total_unconfirmed_cost_usd": format_usd(self.total("unconfirmed_cost_nanos")),
            "total_implausible": self.total("implausible"),
            "total_implausible_cost_usd": format_usd(self.total("implausible_cost_nanos")),
            "total_interrupted": self.total("interrupted"),
            "total_interrupted_cost_usd": format_usd(self.total("interrupted_cost_nanos")),
        }


def _top(report: UsageReport, top: int | None) -> list[UsageRow]:
    return report.rows[:top] if top else report.rows


def report_dict(report: UsageReport, top: int | None = None) -> dict[str, Any]:
    """The JSON shape of a report (admin API and `faregate report --format json`)."""
    out = {
        "group_by": report.group_by,
        "rows": [r.as_dict(report.group_by) for r in _top(report, top)],
        **report.totals(),
        "unpriced_models": [{"model": m, "calls": n, "config": override_snippet(m)}
                            for m, n in report.unpriced_models],
    }
    if report.detail_expired_before is not None:
        out["row_detail_expired_before"] = report.detail_expired_before
    return out


def render_json(report: UsageReport, top: int | None = None) -> str:
    return orjson.dumps(report_dict(report, top), option=orjson.OPT_INDENT_2).decode()


CSV_FIELDS = (
    "requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
    "seconds", "characters", "images", "cost_usd", "savings_usd", "billed_usd", "margin_usd",
    "unpriced", "estimated", "estimated_cost_usd", "fallback_priced", "fallback_cost_usd",
    "unconfirmed_priced", "unconfirmed_cost_usd",
    "implausible", "implausible_cost_usd", "interrupted", "interrupted_cost_usd",
)


def render_csv(report: UsageReport, top: int | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [report.group_by] + (["tenant"] if report.group_by == "user" else [])
    w.writerow([*keys, *CSV_FIELDS])
    for row in _top(report, top):
        d = row.as_dict(report.group_by)
        w.writerow([*(_csv_safe(d.get(k) or "") for k in keys), *(d[f] for f in CSV_FIELDS)])
    return buf.getvalue().rstrip("\n")


def _csv_safe(value: str) -> str:
    """Keys are caller-chosen text: keep spreadsheets from running them as formulas."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


#: (attribute or as_dict field, title, total) of the table's columns after the key.
TABLE_FIELDS = (
    ("requests", "REQUESTS"), ("input_tokens", "INPUT"), ("output_tokens", "OUTPUT"),
    ("cached_tokens", "CACHED"), ("cost_usd", "COST USD"), ("savings_usd", "SAVED USD"),
)
MARGIN_FIELDS = (("billed_usd", "BILLED USD"), ("margin_usd", "MARGIN USD"))
#: The nano-USD attribute behind each money column.
_NANOS_OF = {"cost_usd": "cost_nanos", "savings_usd": "savings_nanos",
             "billed_usd": "billed_nanos", "margin_usd": "margin_nanos"}


def _key_cell(row: UsageRow, group_by: str) -> str:
    key = row.key if row.key is not None else "-"
    return f"{row.tenant}/{key}" if group_by == "user" and row.tenant is not None else key


def _cell(row: UsageRow, name: str, money: Callable[[int], str]) -> str:
    nanos = _NANOS_OF.get(name)
    return money(getattr(row, nanos)) if nanos else str(getattr(row, name))


def _total_cell(report: UsageReport, name: str, money: Callable[[int], str]) -> str:
    nanos = _NANOS_OF.get(name)
    if nanos is not None:
        return money(report.total_cost_nanos if name == "cost_usd" else report.total(nanos))
    if name == "requests":
        return str(report.total_requests)
    return str(report.total(name))


def render_table(report: UsageReport, top: int | None = None, exact: bool = False) -> str:
    """The report for people: money as `human_usd` ("$12.35", "$0.5390"), or with
    `exact` the exact decimal strings the JSON and CSV carry."""
    money = format_usd if exact else human_usd
    said = human_usd if not exact else (lambda nanos: "$" + format_usd(nanos))  # in notes
    rows = _top(report, top)
    fields = TABLE_FIELDS + (MARGIN_FIELDS if report.has_margin else ())
    title = "TENANT/USER" if report.group_by == "user" else report.group_by.upper()
    header = [title, *(t for _, t in fields)]
    body = [[_key_cell(row, report.group_by), *(_cell(row, f, money) for f, _ in fields)]
            for row in rows]
    total = ["TOTAL", *(_total_cell(report, f, money) for f, _ in fields)]
    widths = [max(len(r[i]) for r in [header, *body, total]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule]
    out += [line(r) for r in body] or ["(no usage in this period)"]
    out += [rule, line(total)]
    if top and len(report.rows) > top:
        out.append(f"(top {top} of {len(report.rows)}; TOTAL covers all)")
    out += _unpriced_note(report)
    out += _flag_notes(report, said)
    if report.has_margin:
        out.append("BILLED = cost × (1 + the tenant's markup) at the time of each call.")
    if report.detail_expired_before is not None:
        out.append(f"EXPIRED: single charges before {report.detail_expired_before} were deleted "
                   "([storage] keep_charges_days); these totals come from the rollups, "
                   "which are kept.")
    return "\n".join(out)


def _flag_notes(report: UsageReport, said: Callable[[int], str]) -> list[str]:
    """One line per kind of charge that was priced or charged other than usual."""
    out: list[str] = []
    if any(r.estimated for r in report.rows):
        out.append(f"ESTIMATED: {report.total('estimated')} calls "
                   f"({said(report.total('estimated_cost_nanos'))}) were priced from "
                   "an estimate because the upstream reported no usage.")
    if any(r.fallback for r in report.rows):
        out.append(f"FALLBACK: {report.total('fallback')} calls "
                   f"({said(report.total('fallback_cost_nanos'))}) were priced by a "
                   "fallback rule (an unlisted snapshot at its family's price, or a service "
                   "tier without its own rates); see `faregate prices --check`.")
    if any(r.unconfirmed for r in report.rows):
        out.append(f"UNCONFIRMED: {report.total('unconfirmed')} calls "
                   f"({said(report.total('unconfirmed_cost_nanos'))}) were priced from "
                   "prices no source confirms (or that sources dispute); see "
                   "`faregate prices --check`.")
    if any(r.implausible for r in report.rows):
        out.append(f"IMPLAUSIBLE: {report.total('implausible')} calls "
                   f"({said(report.total('implausible_cost_nanos'))}) reported usage "
                   "that could not be true (beyond the model's limits, negative or mistyped) "
                   "and were charged at their reservation.")
    if any(r.interrupted for r in report.rows):
        out.append(f"INTERRUPTED: {report.total('interrupted')} calls "
                   f"({said(report.total('interrupted_cost_nanos'))}) were cut off by "
                   "a crash before they settled and were charged at their reservation.")
    return out


def _unpriced_note(report: UsageReport) -> list[str]:
    """UNPRICED: how many calls rest at $0, and the config lines that price each model."""
    if not any(r.unpriced for r in report.rows):
        return []
    out = [f"UNPRICED: {report.total('unpriced')} calls to models without a price, "
           "recorded at $0; add to the config (and fill in the rates):"]
    if not report.unpriced_models:
        out.append('[pricing.models."NAME"]  # see `faregate report --by model` for the names')
    for model, calls in report.unpriced_models:
        out.append(f"# {model}: {calls} call{'s' if calls != 1 else ''}")
        out.append(override_snippet(model))
    return out


def render_report(
    report: UsageReport, group_by: str | None = None, fmt: str = "table", top: int | None = None,
    exact: bool = False,
) -> str:
    """JSON and CSV carry exact decimal strings; the table reads for people unless `exact`."""
    if fmt == "json":
        return render_json(report, top)
    if fmt == "csv":
        return render_csv(report, top)
    if fmt == "table":
        return render_table(report, top, exact)
    raise ValueError(f"unknown format {fmt!r}")
