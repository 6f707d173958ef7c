"""Aggregated usage (rows by tenant/user/model/endpoint/day) and its renderings.

One shape serves the CLI (`faregate report`) and the admin API: JSON with
money as decimal strings, CSV with a header, or an aligned terminal table.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

import orjson

from ._money import format_usd
from ._record import TOKEN_COLUMNS

GROUPS: tuple[str, ...] = ("tenant", "user", "model", "endpoint", "day")
INPUT_CLASSES = (
    "input", "cached_input", "audio_input", "cached_audio_input", "image_input",
    "cached_image_input",
)
OUTPUT_CLASSES = ("output", "audio_output", "image_output")
CACHED_CLASSES = ("cached_input", "cached_audio_input", "cached_image_input")


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

    @classmethod
    def from_sums(cls, key: Any, sums: Sequence[Any]) -> "UsageRow":
        """From (count, *token sums, reasoning, seconds_ms, chars, images, cost, unpriced, est)."""
        n = len(TOKEN_COLUMNS)
        vals = [int(v or 0) for v in sums]
        tokens = dict(zip(TOKEN_COLUMNS, vals[1 : 1 + n]))
        reasoning, seconds_ms, chars, images, cost, unpriced, estimated = vals[1 + n :]
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
        )

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
        out: dict[str, Any] = {
            group_by: self.key,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": format_usd(self.cost_nanos),
            "unpriced": self.unpriced,
            "estimated": self.estimated,
            "seconds": str(self.seconds.normalize()) if self.seconds else "0",
            "characters": self.characters,
            "images": self.images,
        }
        out["tokens"] = dict(self.tokens)
        return out


@dataclass(frozen=True, slots=True)
class UsageReport:
    group_by: str
    rows: list[UsageRow] = field(default_factory=list)

    @classmethod
    def of(cls, rows: list[UsageRow], group_by: str) -> "UsageReport":
        if group_by == "day":
            rows = sorted(rows, key=lambda r: r.key or "")
        else:
            rows = sorted(rows, key=lambda r: (-r.cost_nanos, -r.requests, r.key or ""))
        return cls(group_by, rows)

    @property
    def total_cost_nanos(self) -> int:
        return sum(r.cost_nanos for r in self.rows)

    @property
    def total_requests(self) -> int:
        return sum(r.requests for r in self.rows)


def _top(report: UsageReport, top: int | None) -> list[UsageRow]:
    return report.rows[:top] if top else report.rows


def render_json(report: UsageReport, top: int | None = None) -> str:
    return orjson.dumps(
        {
            "group_by": report.group_by,
            "rows": [r.as_dict(report.group_by) for r in _top(report, top)],
            "total_requests": report.total_requests,
            "total_cost_usd": format_usd(report.total_cost_nanos),
        },
        option=orjson.OPT_INDENT_2,
    ).decode()


CSV_FIELDS = (
    "requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
    "seconds", "characters", "images", "cost_usd", "unpriced", "estimated",
)


def render_csv(report: UsageReport, top: int | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([report.group_by, *CSV_FIELDS])
    for row in _top(report, top):
        d = row.as_dict(report.group_by)
        w.writerow([d[report.group_by] or "", *(d[f] for f in CSV_FIELDS)])
    return buf.getvalue().rstrip("\n")


TABLE_FIELDS = (
    ("requests", "REQUESTS"), ("input_tokens", "INPUT"), ("output_tokens", "OUTPUT"),
    ("cached_tokens", "CACHED"), ("cost_usd", "COST USD"), ("unpriced", "UNPRICED"),
)


def render_table(report: UsageReport, top: int | None = None) -> str:
    rows = _top(report, top)
    header = [report.group_by.upper(), *(title for _, title in TABLE_FIELDS)]
    body = []
    for row in rows:
        d = row.as_dict(report.group_by)
        body.append([d[report.group_by] or "-", *(str(d[f]) for f, _ in TABLE_FIELDS)])
    total = [
        "TOTAL", str(report.total_requests),
        str(sum(r.input_tokens for r in report.rows)),
        str(sum(r.output_tokens for r in report.rows)),
        str(sum(r.cached_tokens for r in report.rows)),
        format_usd(report.total_cost_nanos),
        str(sum(r.unpriced for r in report.rows)),
    ]
    widths = [max(len(r[i]) for r in [header, *body, total]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body] or ["(no usage in this period)"]
    out += ["  ".join("-" * w for w in widths), line(total)]
    if any(r.unpriced for r in report.rows):
        out.append("UNPRICED: calls to models without a price, recorded at $0; "
                   "add [pricing.models.\"NAME\"] to price them.")
    if top and len(report.rows) > top:
        out.append(f"(top {top} of {len(report.rows)}; TOTAL covers all)")
    return "\n".join(out)


def render_report(
    report: UsageReport, group_by: str | None = None, fmt: str = "table", top: int | None = None
) -> str:
    if fmt == "json":
        return render_json(report, top)
    if fmt == "csv":
        return render_csv(report, top)
    if fmt == "table":
        return render_table(report, top)
    raise ValueError(f"unknown format {fmt!r}")
