"""Reconciliation results as users read them: a table, JSON rows, CSV.

JSON rows are `{"date", "group", "ledger_usd", "provider_usd", "drift_usd",
"drift_ratio", "notes"}` (plus `final` and `within`), money as exact decimal
strings, the ratio as a decimal string rounded to six places (None when the
provider billed nothing).
"""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Mapping

import orjson

from faregate.storage import Reconciliation, format_usd

RATIO_PLACES = Decimal("0.000001")


def ratio_text(ratio: Decimal | None) -> str | None:
    if ratio is None:
        return None
    return format(ratio.quantize(RATIO_PLACES, rounding=ROUND_HALF_EVEN), "f")


def reconciliation_dict(r: Reconciliation) -> dict[str, Any]:
    return {
        "date": r.day.isoformat(), "group": r.group,
        "ledger_usd": format_usd(r.ledger_nanos), "provider_usd": format_usd(r.provider_nanos),
        "drift_usd": format_usd(r.drift_nanos), "drift_ratio": ratio_text(r.drift_ratio),
        "notes": list(r.notes), "final": r.final, "within": r.within,
    }


def summary_dict(rows: list[Reconciliation], grouping: str, tolerance: Decimal,
                 labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    out = [reconciliation_dict(r) for r in rows]
    for row in out:
        if labels and row["group"] in labels:
            row["tenants"] = labels[row["group"]]
    return {
        "grouping": grouping, "tolerance": format(tolerance, "f"),
        "within_tolerance": all(r.within for r in rows if r.final),
        "ledger_usd": format_usd(sum(r.ledger_nanos for r in rows)),
        "provider_usd": format_usd(sum(r.provider_nanos for r in rows)),
        "rows": out,
    }


def _percent(ratio: Decimal | None) -> str:
    if ratio is None:
        return "n/a"
    return format((ratio * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), "f") + "%"


def _status(r: Reconciliation) -> str:
    if not r.final:
        return "open"
    return "ok" if r.within else "DRIFT"


def render_table(rows: Iterable[Reconciliation], labels: Mapping[str, str] | None = None
                 ) -> str:
    head = ("date", "group", "ledger_usd", "provider_usd", "drift_usd", "drift", "status",
            "notes")
    lines = [head]
    for r in rows:
        group = r.group + (f" ({labels[r.group]})" if labels and labels.get(r.group) else "")
        lines.append((r.day.isoformat(), group, format_usd(r.ledger_nanos),
                      format_usd(r.provider_nanos), format_usd(r.drift_nanos),
                      _percent(r.drift_ratio), _status(r), "; ".join(r.notes)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    right = {2, 3, 4, 5}
    return "\n".join(
        "  ".join(c.rjust(w) if i in right else c.ljust(w)
                  for i, (c, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines)


def render_csv(rows: Iterable[Reconciliation]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "group", "ledger_usd", "provider_usd", "drift_usd", "drift_ratio",
                     "final", "within", "notes"])
    for r in rows:
        d = reconciliation_dict(r)
        writer.writerow([d["date"], d["group"], d["ledger_usd"], d["provider_usd"],
                         d["drift_usd"], d["drift_ratio"] or "", str(r.final).lower(),
                         str(r.within).lower(), "; ".join(r.notes)])
    return out.getvalue().rstrip("\n")


def render(rows: list[Reconciliation], fmt: str, grouping: str, tolerance: Decimal,
           labels: Mapping[str, str] | None = None) -> str:
    if fmt == "json":
        return orjson.dumps(summary_dict(rows, grouping, tolerance, labels),
                            option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        return render_csv(rows)
    if not rows:
        return "(no costs on either side in this range)"
    return render_table(rows, labels)
